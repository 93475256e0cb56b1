"""A hand-ticked Raft cluster for deterministic tests (hashicorp/raft's
test kit in spirit): real RaftNodes on loopback with `manual_tick`, a network
that can cut links and deliver a node's messages one per tick, and helpers to
tick chosen nodes until a condition holds.

Only the tests import this, and it may import pysyncobj: it subclasses its
TCP transport to filter messages.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pysyncobj.transport import TCPTransport

from control_plane.local_cluster import free_port
from ha.raft_node import ALL_CORRECTIONS, Correction, ProposalError, RaftConfig, RaftNode
from ha.state_machine import StateMachine
from ha.storepb import internal_pb2, kv_pb2

# Election timeouts for scenarios in which no member may call an election
# on its own while the test holds messages back or stops ticking.
ASKED_ELECTIONS_ONLY = {"election_timeout_min": 2.0, "election_timeout_max": 3.0}


class Network:
    """Which links are cut, and which nodes get their messages one by one."""

    def __init__(self) -> None:
        self.cut: set[tuple[str, str]] = set()
        self.slow: set[str] = set()
        # Links (sender, receiver) whose messages wait in the receiver's
        # inbox until delivered one by one or released.
        self.held: set[tuple[str, str]] = set()
        self.inbox: dict[str, collections.deque[tuple[Any, Any]]] = collections.defaultdict(collections.deque)
        self.transports: dict[str, Any] = {}
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.record = False

    def isolate(self, address: str, others: Iterable[str]) -> None:
        for other in others:
            if other != address:
                self.cut.add((address, other))
                self.cut.add((other, address))

    def heal(self) -> None:
        self.cut.clear()

    def transport_class(self) -> type:
        net = self

        class FilteringTransport(TCPTransport):
            def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
                super().__init__(syncObj, selfNode, otherNodes)
                net.transports[selfNode.id] = self

            def send(self, node: Any, message: Any) -> bool:
                if (self._selfNode.id, node.id) in net.cut:
                    return True  # lost on the way, as on a real network
                if net.record:
                    net.sent.append((self._selfNode.id, node.id, message))
                return bool(super().send(node, message))

            def _onMessageReceived(self, node: Any, message: Any) -> None:
                if (node.id, self._selfNode.id) in net.cut:
                    return
                if self._selfNode.id in net.slow or (node.id, self._selfNode.id) in net.held:
                    net.inbox[self._selfNode.id].append((node, message))
                    return
                super()._onMessageReceived(node, message)

            def deliver_one(self) -> bool:
                box = net.inbox[self._selfNode.id]
                if not box:
                    return False
                node, message = box.popleft()
                TCPTransport._onMessageReceived(self, node, message)
                return True

        return FilteringTransport


@dataclass
class Proposal:
    results: list[bytes] | None = None
    error: ProposalError | None = None
    done: bool = False

    def callback(self, results: list[bytes] | None, error: ProposalError | None) -> None:
        self.results, self.error, self.done = results, error, True

    @property
    def succeeded(self) -> bool:
        return self.done and self.error is None


@dataclass
class HandCluster:
    data_dir: str
    size: int = 3
    corrections: frozenset[Correction] = ALL_CORRECTIONS
    config: dict[str, Any] = field(default_factory=dict)
    network: Network = field(default_factory=Network)
    nodes: list[RaftNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(self.size)]
        for i, address in enumerate(self.addresses):
            config = RaftConfig(
                self_address=address,
                peer_addresses=self.addresses,
                password="test-secret",
                data_dir=os.path.join(self.data_dir, f"m{i}"),
                manual_tick=True,
                corrections=self.corrections,
                transport_class=self.network.transport_class(),
                # Scenarios count entries exactly: no staggered compactions.
                **{"log_compaction_stagger": False, **self.config},
            )
            self.nodes.append(RaftNode(config, StateMachine()))

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def tick(self, nodes: Iterable[RaftNode] | None = None) -> None:
        for node in self.nodes if nodes is None else nodes:
            transport = self.network.transports.get(node.address)
            if transport is not None and node.address in self.network.slow:
                transport.deliver_one()
            node.tick(0.0005)

    def tick_until(
        self, condition: Callable[[], bool], nodes: Iterable[RaftNode] | None = None, timeout: float = 15.0
    ) -> None:
        chosen = list(self.nodes if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached while ticking")
            self.tick(chosen)

    def tick_for(self, seconds: float, nodes: Iterable[RaftNode] | None = None) -> None:
        chosen = list(self.nodes if nodes is None else nodes)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tick(chosen)

    def deliver_one(self, node: RaftNode) -> bool:
        """Hand `node` the oldest message waiting in its inbox."""
        return bool(self.network.transports[node.address].deliver_one())

    def leader(self, among: Iterable[RaftNode] | None = None) -> RaftNode | None:
        leaders = [n for n in (self.nodes if among is None else among) if n.is_leader]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.term)

    def elect(self, among: Iterable[RaftNode] | None = None, timeout: float = 15.0) -> RaftNode:
        chosen = list(self.nodes if among is None else among)
        self.tick_until(lambda: self.leader(chosen) is not None, chosen, timeout)
        leader = self.leader(chosen)
        assert leader is not None
        return leader

    def others(self, node: RaftNode) -> list[RaftNode]:
        return [n for n in self.nodes if n is not node]

    def propose(self, node: RaftNode, *commands: bytes) -> Proposal:
        proposal = Proposal()
        node.submit(list(commands), proposal.callback)
        return proposal

    def settle(self, proposal: Proposal, nodes: Iterable[RaftNode] | None = None, timeout: float = 15.0) -> None:
        """Tick (the chosen nodes) until `proposal` has its answer."""
        self.tick_until(lambda: proposal.done, nodes, timeout)

    def caught_up(self, nodes: Iterable[RaftNode] | None = None) -> bool:
        chosen = list(self.nodes if nodes is None else nodes)
        return len({n.applied_index for n in chosen}) == 1 and all(n.applied_index == n.commit_index for n in chosen)


def put(key: bytes, value: bytes) -> bytes:
    return internal_pb2.Command(put=kv_pb2.PutRequest(key=key, value=value)).SerializeToString()


def value_of(node: RaftNode, key: bytes) -> bytes | None:
    resp = node.state_machine.range(kv_pb2.RangeRequest(key=key, serializable=True))
    return resp.kvs[0].value if resp.kvs else None


def log_entries(node: RaftNode) -> list[tuple[bytes, int, int]]:
    log = node._SyncObj__raftLog
    return [log[i] for i in range(len(log))]


def first_log_index(node: RaftNode) -> int:
    return int(node._SyncObj__raftLog[0][1])


def last_log_index(node: RaftNode) -> int:
    return int(node._SyncObj__raftLog[-1][1])


@contextlib.contextmanager
def hand_cluster(tmp_path: Any, **kwargs: Any) -> Iterator[HandCluster]:
    cluster = HandCluster(str(tmp_path), **kwargs)
    try:
        yield cluster
    finally:
        cluster.close()
