"""A blocking gRPC client of the store (KV and Cluster services) over any
number of masters, failing over between them as etcd's clientv3 does.

Retries are only made where they are safe: reads and other idempotent calls
move on to the next master on UNAVAILABLE; a write moves on only when it
surely never reached the store (no connection, or the master answered "not
committed"). Any other failure of a write is raised as it is, because its
outcome may be unknown (DEADLINE_EXCEEDED, or a connection lost in flight).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import grpc

from ha.keys import prefix_end
from ha.limits import MAX_VALUE_BYTES
from ha.storepb import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

T = TypeVar("T")
MAX_MESSAGE_BYTES = MAX_VALUE_BYTES + (2 << 20)
_NEVER_SENT = ("failed to connect", "connection refused", "not committed", "Connection refused")


def must_run_elsewhere(error: grpc.RpcError) -> bool:
    """The master refused because only the leader may do this (it forwards
    such requests itself once it knows the leader's address)."""
    return bool(error.code() == grpc.StatusCode.FAILED_PRECONDITION and "runs on the leader" in (error.details() or ""))


def never_reached_store(error: grpc.RpcError) -> bool:
    """True when a failed call surely changed nothing."""
    code = error.code()
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    details = error.details() or ""
    return any(marker in details for marker in _NEVER_SENT)


class WatchStream(Protocol):
    """A server stream of watch responses; `cancel()` ends it."""

    def __iter__(self) -> Iterator[kv_pb2.WatchResponse]: ...

    def __next__(self) -> kv_pb2.WatchResponse: ...

    def cancel(self) -> bool: ...


class StoreClient:
    def __init__(
        self,
        endpoints: list[str],
        timeout: float = 5.0,
        retry_for: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        # How long to keep trying masters before giving up on a call.
        self.retry_for = retry_for
        # TLS (and a client certificate) for masters that require them.
        self.credentials = credentials
        self._current = 0
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            if endpoint not in self._channels:
                options = [
                    ("grpc.max_receive_message_length", -1),  # ranges are as large as they are
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ]
                if self.credentials is None:
                    self._channels[endpoint] = grpc.insecure_channel(endpoint, options=options)
                else:
                    self._channels[endpoint] = grpc.secure_channel(endpoint, self.credentials, options=options)
            return self._channels[endpoint]

    def kv(self, endpoint: str | None = None) -> kv_pb2_grpc.KVStub:
        return kv_pb2_grpc.KVStub(self._channel(endpoint or self.endpoints[self._current]))

    def cluster(self, endpoint: str | None = None) -> cluster_pb2_grpc.ClusterStub:
        return cluster_pb2_grpc.ClusterStub(self._channel(endpoint or self.endpoints[self._current]))

    def _retrying(self, fn: Callable[[str], T], idempotent: bool) -> T:
        """fn(endpoint), moving on to the next master when that is safe."""
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            endpoint = self.endpoints[self._current]
            try:
                return fn(endpoint)
            except grpc.RpcError as e:
                retryable = must_run_elsewhere(e) or (
                    e.code() == grpc.StatusCode.UNAVAILABLE and (idempotent or never_reached_store(e))
                )
                if not retryable or time.monotonic() > deadline:
                    raise
                attempt += 1
                self._current = (self._current + 1) % len(self.endpoints)
                if attempt % len(self.endpoints) == 0:
                    time.sleep(0.05)

    def _kv(self, method: str, request: Any, idempotent: bool) -> Any:
        return self._retrying(lambda ep: getattr(self.kv(ep), method)(request, timeout=self.timeout), idempotent)

    def _cluster(self, method: str, request: Any, idempotent: bool) -> Any:
        return self._retrying(lambda ep: getattr(self.cluster(ep), method)(request, timeout=self.timeout), idempotent)

    # -- KV --------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False) -> kv_pb2.PutResponse:
        return self._kv("Put", kv_pb2.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv), False)

    def get(self, key: bytes, serializable: bool = False, revision: int = 0) -> kv_pb2.KeyValue | None:
        resp = self.range(kv_pb2.RangeRequest(key=key, serializable=serializable, revision=revision))
        return resp.kvs[0] if resp.kvs else None

    def range(self, request: kv_pb2.RangeRequest) -> kv_pb2.RangeResponse:
        return self._kv("Range", request, True)

    def get_prefix(self, prefix: bytes, limit: int = 0, serializable: bool = False) -> kv_pb2.RangeResponse:
        return self.range(
            kv_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=limit, serializable=serializable)
        )

    def delete(self, key: bytes, range_end: bytes = b"", prev_kv: bool = False) -> kv_pb2.DeleteRangeResponse:
        return self._kv("DeleteRange", kv_pb2.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv), False)

    def txn(self, request: kv_pb2.TxnRequest) -> kv_pb2.TxnResponse:
        return self._kv("Txn", request, False)

    def compact(self, revision: int) -> kv_pb2.CompactionResponse:
        return self._kv("Compact", kv_pb2.CompactionRequest(revision=revision), True)

    def watch(
        self, request: kv_pb2.WatchRequest, endpoint: str | None = None, timeout: float | None = None
    ) -> WatchStream:
        """A watch stream from one master (the current one unless named)."""
        stream: WatchStream = self.kv(endpoint).Watch(request, timeout=timeout)
        return stream

    def lease_grant(self, ttl: int, lease_id: int = 0) -> kv_pb2.LeaseGrantResponse:
        return self._kv("LeaseGrant", kv_pb2.LeaseGrantRequest(ttl=ttl, id=lease_id), False)

    def lease_revoke(self, lease_id: int) -> kv_pb2.LeaseRevokeResponse:
        return self._kv("LeaseRevoke", kv_pb2.LeaseRevokeRequest(id=lease_id), True)

    def lease_keep_alive_once(self, lease_id: int) -> kv_pb2.LeaseKeepAliveResponse:
        request = kv_pb2.LeaseKeepAliveRequest(id=lease_id)
        return self._retrying(
            lambda ep: next(iter(self.kv(ep).LeaseKeepAlive(iter([request]), timeout=self.timeout))), True
        )

    def lease_time_to_live(self, lease_id: int, keys: bool = False) -> kv_pb2.LeaseTimeToLiveResponse:
        return self._kv("LeaseTimeToLive", kv_pb2.LeaseTimeToLiveRequest(id=lease_id, keys=keys), True)

    # -- Cluster -----------------------------------------------------------------

    def status(self, endpoint: str | None = None) -> cluster_pb2.StatusResponse:
        if endpoint is not None:
            return self.cluster(endpoint).Status(cluster_pb2.StatusRequest(), timeout=self.timeout)
        return self._cluster("Status", cluster_pb2.StatusRequest(), True)

    def hash_kv(self, endpoint: str) -> cluster_pb2.HashKVResponse:
        return self.cluster(endpoint).HashKV(cluster_pb2.HashKVRequest(), timeout=self.timeout)

    def member_list(self) -> cluster_pb2.MemberListResponse:
        return self._cluster("MemberList", cluster_pb2.MemberListRequest(), True)

    def member_add(self, member_id: str, raft_address: str, grpc_address: str = "") -> cluster_pb2.MemberAddResponse:
        request = cluster_pb2.MemberAddRequest(id=member_id, raft_address=raft_address, grpc_address=grpc_address)
        return self._cluster("MemberAdd", request, False)

    def member_remove(self, member_id: str) -> cluster_pb2.MemberRemoveResponse:
        return self._cluster("MemberRemove", cluster_pb2.MemberRemoveRequest(id=member_id), False)

    def transfer_leadership(self, target_id: str = "", timeout: float = 5.0) -> cluster_pb2.TransferLeadershipResponse:
        request = cluster_pb2.TransferLeadershipRequest(target_id=target_id, timeout_seconds=timeout)
        return self._cluster("TransferLeadership", request, False)

    def leader_endpoint(self) -> str | None:
        """The endpoint (of those this client knows) that leads, if any."""
        for endpoint in self.endpoints:
            try:
                if self.status(endpoint).role == "leader":
                    return endpoint
            except grpc.RpcError:
                continue
        return None
