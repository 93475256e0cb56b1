"""Membership changes while writes run: add a fourth master, remove
another, hand leadership to a named master. No acknowledged write is lost,
and every master reports the new membership."""

from __future__ import annotations

import time

import grpc

from control_plane.local_cluster import LocalCluster
from tests.support.waiting import wait_until
from tests.support.workload import Writers, stored_keys


def test_add_remove_and_transfer_while_writing(cluster: LocalCluster) -> None:
    writers = Writers(cluster.endpoints).start()
    client = cluster.client(timeout=10.0, retry_for=20.0)
    try:
        writers.wait_for_acks(50, since=0, timeout=30)

        m4 = cluster.add_master("m4")
        added = client.member_add("m4", m4.raft_address, m4.grpc_address)
        assert "m4" in {m.id for m in added.members}
        cluster.start("m4", join=True)
        wait_until(
            lambda: client.status(m4.grpc_address).applied_index >= client.status().commit_index - 5,
            "m4 to catch up",
            timeout=60,
            ignore=(grpc.RpcError,),
            interval=0.1,
        )

        removed = cluster.leader()  # the hardest one to remove: leadership must move first
        client.member_remove(removed)
        cluster.stop(removed)
        remaining = [m for m in cluster.masters if m.id != removed]
        client.endpoints = [m.grpc_address for m in remaining]
        since = time.monotonic()
        writers.wait_for_acks(30, since=since, timeout=30)

        target = "m4"
        assert client.transfer_leadership(target, timeout=10).leader_id == target
        wait_until(
            lambda: all(client.status(m.grpc_address).leader_id == target for m in remaining),
            "m4 to lead",
            timeout=20,
            ignore=(grpc.RpcError,),
            interval=0.1,
        )
        writers.wait_for_acks(30, since=time.monotonic(), timeout=30)
    finally:
        writers.stop()

    expected = {m.id for m in remaining}
    for m in remaining:
        status = client.status(m.grpc_address)
        assert status.leader_id == "m4"
        assert {p.id for p in status.peers} | {status.id} == expected, f"{m.id} sees {status.peers}"
    wait_until(
        lambda: {m.id for m in client.member_list().members} == expected,
        "the member list",
        timeout=20,
        ignore=(grpc.RpcError,),
        interval=0.1,
    )
    stored = stored_keys(client, b"/w/")
    lost = [k for k in writers.acked if k not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost"
    client.close()
