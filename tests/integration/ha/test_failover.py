"""Faults on real master processes: kill -9 and SIGSTOP of the leader, all
masters stopped and restarted, a watch on a follower across a leader change.
No acknowledged write may be lost, replicas must end equal."""

from __future__ import annotations

import threading
import time

import grpc

from control_plane.local_cluster import LocalCluster
from ha.client import StoreClient
from ha.storepb import kv_pb2
from tests.support.workload import Writers, stored_keys


def converged_hashes(cluster: LocalCluster, timeout: float = 30.0) -> set[str]:
    """Wait until every running master applied the same Raft log index, and
    return their state hashes there. The revision alone is not enough: lease
    clock ticks and member records change the state without a new revision."""
    deadline = time.monotonic() + timeout
    with cluster.client(timeout=2.0) as client:
        while True:
            running = [m for m in cluster.masters if cluster.is_running(m)]
            try:
                hashes = [client.hash_kv(m.grpc_address) for m in running]
            except grpc.RpcError:
                hashes = []
            if hashes and len({(h.header.revision, h.applied_index) for h in hashes}) == 1:
                return {h.hash for h in hashes}
            assert time.monotonic() < deadline, "replicas did not converge"
            time.sleep(0.1)


def test_kill_the_leader_while_writing(cluster: LocalCluster) -> None:
    writers = Writers(cluster.endpoints).start()
    try:
        writers.wait_for_acks(50, since=0, timeout=30)
        leader = cluster.leader()
        killed_at = time.monotonic()
        cluster.kill(leader)
        writers.wait_for_acks(50, since=killed_at + 0.1, timeout=30)  # writes resume
        new_leader = cluster.wait_ready(30)
        assert new_leader != leader
    finally:
        writers.stop()
    with cluster.client() as client:
        stored = stored_keys(client, b"/w/")
    lost = [k for k in writers.acked if k not in stored]
    print(f"{len(writers.acked)} writes acknowledged, {writers.failed} failed, {len(lost)} lost")
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    cluster.start(leader)  # the old leader comes back and catches up
    cluster.wait_ready(30)
    assert len(converged_hashes(cluster)) == 1


def test_pause_the_leader(cluster: LocalCluster) -> None:
    writers = Writers(cluster.endpoints).start()
    try:
        writers.wait_for_acks(50, since=0, timeout=30)
        leader = cluster.leader()
        cluster.pause(leader)
        paused_at = time.monotonic()
        writers.wait_for_acks(30, since=paused_at + 0.1, timeout=30)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - paused_at)))  # keep it stopped for a few seconds
        cluster.resume(leader)
        resumed_at = time.monotonic()
        writers.wait_for_acks(30, since=resumed_at, timeout=30)
    finally:
        writers.stop()
    cluster.wait_ready(30)
    with cluster.client() as client:
        roles = [client.status(m.grpc_address).role for m in cluster.masters]
        assert roles.count("leader") == 1, roles
        stored = stored_keys(client, b"/w/")
    assert not [k for k in writers.acked if k not in stored]
    assert len(converged_hashes(cluster)) == 1


def test_stop_every_master_and_restart(cluster: LocalCluster) -> None:
    writers = Writers(cluster.endpoints).start()
    try:
        writers.wait_for_acks(200, since=0, timeout=30)
    finally:
        writers.stop()
    for m in cluster.masters:
        cluster.kill(m.id)
    cluster.start()
    cluster.wait_ready(60)
    with cluster.client() as client:
        stored = stored_keys(client, b"/w/")
    lost = [k for k in writers.acked if k not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost after a full restart"
    assert len(converged_hashes(cluster)) == 1


def test_a_watch_on_a_follower_sees_every_revision_once_across_a_leader_change(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    follower = next(m for m in cluster.masters if m.id != leader)
    with StoreClient([follower.grpc_address]) as client:
        start = client.status(follower.grpc_address).header.revision + 1
        stream = client.watch(kv_pb2.WatchRequest(key=b"/w/", range_end=b"/w0", start_revision=start))
        seen: list[tuple[int, bytes]] = []
        done = threading.Event()

        def collect() -> None:
            try:
                for resp in stream:
                    seen.extend((ev.kv.mod_revision, ev.kv.key) for ev in resp.events)
                    if done.is_set() and seen and seen[-1][0] >= final_revision[0]:
                        return
            except grpc.RpcError:
                pass

        final_revision = [1 << 62]
        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        others = [m.grpc_address for m in cluster.masters if m.id != leader]
        writers = Writers([*others, cluster.spec(leader).grpc_address]).start()
        try:
            writers.wait_for_acks(50, since=0, timeout=30)
            cluster.kill(leader)
            killed = time.monotonic()
            writers.wait_for_acks(50, since=killed + 0.1, timeout=30)
        finally:
            writers.stop()
        cluster.wait_ready(30)
        final_revision[0] = client.range(
            kv_pb2.RangeRequest(key=b"/w/", range_end=b"/w0", count_only=True)
        ).header.revision
        done.set()
        deadline = time.monotonic() + 20
        while (not seen or seen[-1][0] < final_revision[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        stream.cancel()
        reader.join(5)
    revisions = [rev for rev, _ in seen]
    # Every write here is one put, so one revision per event, with no gap.
    assert revisions == list(range(start, final_revision[0] + 1))
    assert {key for _, key in seen} >= set(writers.acked)


def test_repeated_leader_kills_keep_the_cluster_live(cluster: LocalCluster) -> None:
    """Every restarted master must reconnect to the others: a Raft handshake
    once stalled for good after a few restarts (a watcher of a closed socket
    swallowed the next socket's events, and nothing timed the stall out)."""
    with cluster.client(timeout=1.0, retry_for=0) as client:
        for trial in range(6):
            leader = cluster.wait_ready(30)
            cluster.kill(leader)
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.put(b"/live/%d" % trial, b"x")
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, f"no write committed after killing {leader} (trial {trial})"
                    client._current = (client._current + 1) % len(client.endpoints)
            cluster.start(leader)
    cluster.wait_ready(30)
    assert len(converged_hashes(cluster)) == 1


def test_masters_restarted_from_snapshots_still_fail_over(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Snapshots every 50 log entries: every master restarts from one, and
    then the cluster must still survive the loss of its leader."""
    cluster = make_cluster(server_args=["--snapshot-entries", "50"])
    writers = Writers(cluster.endpoints).start()
    try:
        writers.wait_for_acks(400, since=0, timeout=60)
        for m in cluster.masters:
            cluster.kill(m.id)
            cluster.start(m.id)
            cluster.wait_ready(30)
        with cluster.client() as client:
            for m in cluster.masters:
                status = client.status(m.grpc_address)
                assert {p.id for p in status.peers} == {o.id for o in cluster.masters if o.id != m.id}
        leader = cluster.leader()
        cluster.kill(leader)
        killed = time.monotonic()
        writers.wait_for_acks(50, since=killed + 0.1, timeout=30)
    finally:
        writers.stop()
    with cluster.client() as client:
        stored = stored_keys(client, b"/w/")
    assert not [k for k in writers.acked if k not in stored]
