"""Snapshots of the Raft log, on hand-ticked nodes: a member that restarts
from its snapshot, or installs one from the leader, keeps the cluster's
membership exactly (it once counted itself among its peers, so three masters
believed they were four and two could never elect a leader)."""

from __future__ import annotations

from pathlib import Path

from ha.raft_node import RaftConfig, RaftNode
from ha.state_machine import StateMachine
from tests.support.raft_kit import first_log_index, hand_cluster, put, value_of


def peers(node: RaftNode) -> set[str]:
    return {n.id for n in node._SyncObj__otherNodes}


def test_snapshot_install_and_restart_keep_the_membership(tmp_path: Path) -> None:
    with hand_cluster(tmp_path, config={"log_compaction_min_entries": 20, "leader_fallback_timeout": 5.0}) as c:
        leader = c.elect()
        c.tick_until(c.caught_up)
        lagging = c.others(leader)[0]
        c.network.isolate(lagging.address, c.addresses)
        rest = c.others(lagging)
        for i in range(60):
            c.settle(c.propose(leader, put(b"k%d" % i, b"v")), rest)
        c.tick_until(lambda: first_log_index(leader) > 20, rest)  # compacted: the lagging one needs a snapshot
        c.network.heal()
        c.tick_until(c.caught_up)
        assert value_of(lagging, b"k59") == b"v"
        for node in c.nodes:
            assert peers(node) == set(c.addresses) - {node.address}, f"{node.address} sees {peers(node)}"

        # Restart one member from its files: it loads its own snapshot.
        index = c.nodes.index(lagging)
        config = lagging.config
        lagging.stop()
        restarted = RaftNode(RaftConfig(**{**config.__dict__, "corrections": config.corrections}), StateMachine())
        c.nodes[index] = restarted
        c.tick_until(lambda: restarted.applied_index >= leader.commit_index)
        assert peers(restarted) == set(c.addresses) - {restarted.address}
        assert value_of(restarted, b"k59") == b"v"

        # And the two others can still elect without the leader.
        c.network.isolate(leader.address, c.addresses)
        survivors = c.others(leader)
        new_leader = c.elect(survivors)
        c.settle(c.propose(new_leader, put(b"after", b"v")), survivors)


def test_members_compact_a_third_of_the_interval_apart(tmp_path: Path) -> None:
    """Staggered compactions: the k-th member by address makes its first
    after 30 * (1 + k/3) entries, and every later one after 30."""
    config = {"log_compaction_min_entries": 30, "log_compaction_stagger": True, "leader_fallback_timeout": 5.0}
    with hand_cluster(tmp_path, config=config) as c:
        by_address = sorted(c.nodes, key=lambda n: n.address)
        assert [n._SyncObj__conf.logCompactionMinEntries for n in by_address] == [30, 40, 50]
        leader = c.elect()
        for i in range(120):
            c.settle(c.propose(leader, put(b"k%d" % i, b"v")), c.nodes)
        c.tick_until(lambda: all(first_log_index(n) > 1 for n in c.nodes))
        assert [n._SyncObj__conf.logCompactionMinEntries for n in c.nodes] == [30, 30, 30]
