"""Background writers for fault tests: each puts unique keys through a
failing-over client and remembers which puts were acknowledged."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc

from ha.client import StoreClient
from ha.keys import prefix_end
from ha.storepb import kv_pb2


@dataclass
class Writers:
    endpoints: list[str]
    prefix: bytes = b"/w/"
    count: int = 4
    acked: list[bytes] = field(default_factory=list)
    failed: int = 0
    ack_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(self.count)]

    def start(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, writer: int) -> None:
        # Each writer starts at a different master, so some write through followers.
        endpoints = self.endpoints[writer % len(self.endpoints) :] + self.endpoints[: writer % len(self.endpoints)]
        with StoreClient(endpoints, timeout=3.0, retry_for=5.0) as client:
            i = 0
            while not self._stop.is_set():
                key = self.prefix + b"%d/%06d" % (writer, i)
                try:
                    client.put(key, key)
                    with self._lock:
                        self.acked.append(key)
                        self.ack_times.append(time.monotonic())
                except grpc.RpcError:
                    with self._lock:
                        self.failed += 1
                    time.sleep(0.05)
                i += 1

    def acked_since(self, when: float) -> int:
        with self._lock:
            return sum(1 for t in self.ack_times if t > when)

    def wait_for_acks(self, n: int, since: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_since(since) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} writes acknowledged after {timeout:g}s")
            time.sleep(0.05)


def stored_keys(client: StoreClient, prefix: bytes, endpoint: str | None = None) -> set[bytes]:
    request = kv_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), keys_only=True)
    resp = client.range(request) if endpoint is None else client.kv(endpoint).Range(request, timeout=10)
    return {kv.key for kv in resp.kvs}
