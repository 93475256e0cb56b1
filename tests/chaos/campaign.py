"""The fault campaign: 3 real masters, clients doing puts, compare-and-swap
txns and linearizable reads on a few keys, a writer of unique keys, and a
nemesis that kills (-9), pauses (SIGSTOP) and restarts the leader, kills
followers and sends write bursts. At the end every history is checked for
linearizability (Wing-Gong-Lowe, per key), every acknowledged unique write
must be stored, all replicas must hold the same state, and every master
must have caught up (none wedged).

    python -m tests.chaos.campaign --seconds 300 [--seed N] [--dir DIR]

`make chaos` runs it for minutes; `make test` runs a 60-second campaign.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from control_plane.local_cluster import LocalCluster, exit_cleanly_on_sigterm
from ha.client import StoreClient, never_reached_store
from ha.keys import prefix_end
from ha.storepb import kv_pb2
from tests.chaos.linearizability import UNKNOWN, Op, Verdict, check

KEYS = [b"/chaos/k%d" % i for i in range(5)]


@dataclass
class Recorder:
    ops: list[Op] = field(default_factory=list)
    unique_acked: list[bytes] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: Op, outcome: str) -> None:
        with self.lock:
            self.ops.append(op)
            self.counts[f"{op.kind}:{outcome}"] += 1

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def _decode(kv: kv_pb2.KeyValue | None) -> str | None:
    return kv.value.decode() if kv is not None else None


def register_client(cid: int, endpoints: list[str], rec: Recorder, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed * 1000 + cid)
    order = endpoints[cid % len(endpoints) :] + endpoints[: cid % len(endpoints)]
    seen: dict[bytes, str | None] = {}
    with StoreClient(order, timeout=2.0, retry_for=2.0) as client:
        i = 0
        while not stop.is_set():
            i += 1
            key = rng.choice(KEYS)
            kind = rng.choices(["write", "read", "cas"], weights=[4, 4, 2])[0]
            value = f"c{cid}-{i}"
            call = time.monotonic()
            try:
                if kind == "write":
                    client.put(key, value.encode())
                    op = Op(cid, "write", key, value, None, call, time.monotonic())
                elif kind == "read":
                    got = _decode(client.get(key))
                    seen[key] = got
                    op = Op(cid, "read", key, None, got, call, time.monotonic())
                else:
                    old = seen.get(key)
                    compare = (
                        kv_pb2.Compare(key=key, target=kv_pb2.Compare.CREATE, create_revision=0)
                        if old is None
                        else kv_pb2.Compare(key=key, target=kv_pb2.Compare.VALUE, value=old.encode())
                    )
                    txn = kv_pb2.TxnRequest(
                        compare=[compare],
                        success=[kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=value.encode()))],
                    )
                    ok = client.txn(txn).succeeded
                    op = Op(cid, "cas", key, (old, value), ok, call, time.monotonic())
                    if ok:
                        seen[key] = value
                rec.add(op, "ok")
            except grpc.RpcError as e:
                if kind == "read" or never_reached_store(e):
                    rec.count(f"{kind}:not-applied")  # observed nothing / changed nothing
                else:
                    arg = value if kind == "write" else (seen.get(key), value)
                    rec.add(Op(cid, kind, key, arg, UNKNOWN, call, math.inf), "unknown")
                time.sleep(0.02)
            time.sleep(rng.random() * 0.004)


def unique_writer(endpoints: list[str], rec: Recorder, stop: threading.Event, prefix: bytes) -> None:
    with StoreClient(endpoints, timeout=2.0, retry_for=2.0) as client:
        i = 0
        while not stop.is_set():
            key = prefix + b"%08d" % i
            i += 1
            try:
                client.put(key, b"x")
                with rec.lock:
                    rec.unique_acked.append(key)
            except grpc.RpcError:
                time.sleep(0.02)


@dataclass
class Nemesis:
    cluster: LocalCluster
    rec: Recorder
    rng: random.Random
    log: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        faults = [self.kill_leader, self.pause_leader, self.restart_leader, self.kill_follower, self.burst]
        while not stop.wait(self.rng.uniform(1.0, 3.0)):
            fault = self.rng.choice(faults)
            try:
                fault()
            except (TimeoutError, RuntimeError) as e:
                self.log.append(f"{fault.__name__}: skipped ({e})")

    def _note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")
        self.rec.count(f"fault:{what.split()[0]}")

    def _leader(self) -> str:
        return self.cluster.wait_ready(10)

    def kill_leader(self) -> None:
        leader = self._leader()
        self.cluster.kill(leader)
        self._note(f"kill-9 {leader}")
        time.sleep(self.rng.uniform(0.5, 2.5))
        self.cluster.start(leader)

    def pause_leader(self) -> None:
        leader = self._leader()
        self.cluster.pause(leader)
        self._note(f"sigstop {leader}")
        time.sleep(self.rng.uniform(1.0, 4.0))
        self.cluster.resume(leader)

    def restart_leader(self) -> None:
        leader = self._leader()
        self.cluster.stop(leader)
        self._note(f"restart {leader}")
        self.cluster.start(leader)

    def kill_follower(self) -> None:
        leader = self._leader()
        follower = self.rng.choice([m.id for m in self.cluster.masters if m.id != leader])
        self.cluster.kill(follower)
        self._note(f"kill-9-follower {follower}")
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.cluster.start(follower)

    def burst(self) -> None:
        self._note("write-burst")
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=unique_writer, args=(self.cluster.endpoints, self.rec, stop, b"/chaos/burst/%d/" % i)
            )
            for i in range(8)
        ]
        for t in threads:
            t.start()
        time.sleep(self.rng.uniform(1.0, 2.0))
        stop.set()
        for t in threads:
            t.join(30)


@dataclass
class Report:
    verdict: Verdict
    missing: list[bytes]
    hashes: set[str]
    caught_up: bool
    counts: Counter[str]
    faults: list[str]
    seconds: float
    snapshot_installs: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.missing and len(self.hashes) == 1 and self.caught_up

    def text(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return "\n".join(
            [
                f"campaign: {self.seconds:.0f}s, {self.verdict.operations} register operations on "
                f"{self.verdict.keys} keys; {kinds}",
                f"faults: {len(self.faults)}: " + "; ".join(self.faults),
                f"snapshots installed from a leader: {self.snapshot_installs}",
                f"linearizable: {'yes' if self.verdict.ok else 'NO, keys ' + str(self.verdict.failed_keys)}",
                f"acknowledged unique writes missing: {len(self.missing)}",
                f"replica state hashes: {len(self.hashes)} distinct",
                f"every master caught up (none wedged): {'yes' if self.caught_up else 'NO'}",
                f"RESULT: {'PASS' if self.ok else 'FAIL'}",
            ]
        )


def _final_state(cluster: LocalCluster, timeout: float = 60.0) -> tuple[set[str], bool]:
    """Wait for every master to apply the same revision; their hashes."""
    deadline = time.monotonic() + timeout
    hashes: set[str] = set()
    with cluster.client(timeout=3.0) as client:
        while time.monotonic() < deadline:
            try:
                statuses = [client.status(m.grpc_address) for m in cluster.masters]
                results = [client.hash_kv(m.grpc_address) for m in cluster.masters]
            except grpc.RpcError:
                time.sleep(0.2)
                continue
            hashes = {r.hash for r in results}
            same_revision = len({r.header.revision for r in results}) == 1
            applied = all(s.applied_index >= max(x.commit_index for x in statuses) - 2 for s in statuses)
            if same_revision and applied and len(hashes) == 1:
                return hashes, True
            time.sleep(0.2)
    return hashes, False


def run_campaign(seconds: float, directory: str, seed: int = 1, clients: int = 6) -> Report:
    rng = random.Random(seed)
    # Frequent snapshots, so restarts and lagging followers go through
    # snapshot installs and compaction, not just the log.
    # Plaintext: the campaign is about Raft, and TLS would only slow the clients.
    cluster = LocalCluster.create(directory, 3, server_args=["--insecure", "--snapshot-entries", "200"])
    rec = Recorder()
    nemesis = Nemesis(cluster, rec, rng)
    started = time.monotonic()
    cluster.start()
    try:
        cluster.wait_ready(60)
        stop = threading.Event()
        threads = [
            threading.Thread(target=register_client, args=(c, cluster.endpoints, rec, stop, seed), daemon=True)
            for c in range(clients)
        ]
        threads.append(
            threading.Thread(target=unique_writer, args=(cluster.endpoints, rec, stop, b"/chaos/u/"), daemon=True)
        )
        for t in threads:
            t.start()
        stop_faults = threading.Event()
        faults = threading.Thread(target=nemesis.run, args=(stop_faults,), daemon=True)
        faults.start()
        time.sleep(seconds)
        stop_faults.set()
        faults.join(60)
        stop.set()
        for t in threads:
            t.join(30)
        for m in cluster.masters:  # whatever the nemesis left behind
            if cluster.is_running(m):
                cluster.resume(m.id)
        cluster.start()
        cluster.wait_ready(60)
        hashes, caught_up = _final_state(cluster)
        with cluster.client(timeout=10.0) as client:
            stored = {
                kv.key
                for kv in client.range(
                    kv_pb2.RangeRequest(key=b"/chaos/", range_end=prefix_end(b"/chaos/"), keys_only=True)
                ).kvs
            }
        missing = [k for k in rec.unique_acked if k not in stored]
        verdict = check(rec.ops)
        installs = sum(
            Path(m.log_path).read_text(errors="replace").count("installing a snapshot") for m in cluster.masters
        )
        return Report(
            verdict, missing, hashes, caught_up, rec.counts, nemesis.log, time.monotonic() - started, installs
        )
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--dir", default=None)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    directory = args.dir or tempfile.mkdtemp(prefix="raftkube-chaos-")
    print(f"fault campaign: {args.seconds:g}s, seed {args.seed}, cluster in {directory}", flush=True)
    report = run_campaign(args.seconds, directory, args.seed, args.clients)
    print(report.text())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
