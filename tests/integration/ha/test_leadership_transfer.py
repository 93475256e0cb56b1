"""Leadership transfer while followers forward writes, on real hand-ticked
nodes: the leader appends nothing forwarded while leadership moves, so the
target it asked to take over still holds the whole log when the others
vote.

The `forwarded-appended` run is the control: the leader takes forwarded
commands as usual, appends one after asking the target to take over, and
the target's election is lost (the voters' logs are longer than its own),
which is how a transfer with writers on every master timed out in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ha.raft_node import ProposalError, RaftNode
from tests.support.raft_kit import ASKED_ELECTIONS_ONLY, HandCluster, hand_cluster, last_log_index, put, value_of


def match_index(leader: RaftNode, follower: RaftNode) -> int:
    peers = leader.raft_status()["peers"]
    return int(next(p["match_index"] for p in peers if p["address"] == follower.address))


def ask_to_take_over(c: HandCluster, leader: RaftNode, target: RaftNode) -> None:
    """Once the target is fully caught up, the leader sends it TimeoutNow,
    which waits in the target's inbox with everything the leader sends it
    afterwards."""
    c.tick_until(lambda: match_index(leader, target) == last_log_index(leader))
    c.network.held.add((leader.address, target.address))
    refused: list[ProposalError | None] = []
    leader.transfer_leadership(target.address, refused.append)
    assert refused == [None], "the leader refused the transfer"
    inbox = c.network.inbox[target.address]
    c.tick_until(lambda: bool(inbox), [leader, target])
    assert inbox[0][1]["type"] == "timeout_now"


@pytest.mark.parametrize("variant", ["forwarded-refused", "forwarded-appended"])
def test_a_write_forwarded_during_a_transfer_is_refused_and_the_target_wins(tmp_path: Path, variant: str) -> None:
    # The target's own timer must not fire while the leader's messages
    # wait in its inbox.
    with hand_cluster(tmp_path, config=ASKED_ELECTIONS_ONLY) as c:
        leader = c.elect()
        c.settle(c.propose(leader, put(b"/before", b"1")))
        c.tick_until(c.caught_up)
        target, forwarder = c.others(leader)
        term = leader.term
        log_end = last_log_index(leader)

        leader.refuse_forwarded_commands(variant == "forwarded-refused")
        ask_to_take_over(c, leader, target)
        late = c.propose(forwarder, put(b"/late", b"x"))
        if variant == "forwarded-refused":
            c.settle(late, [leader, forwarder, target])
            assert isinstance(late.error, ProposalError) and late.error.never_appended, late.error
            assert last_log_index(leader) == log_end
        else:
            c.tick_until(lambda: last_log_index(forwarder) > log_end, [leader, forwarder, target])

        # The target reads only the TimeoutNow, and stands for election.
        c.deliver_one(target)
        c.tick_until(lambda: (new := c.leader()) is not None and new.term > term)

        if variant == "forwarded-appended":
            assert c.leader() is not target
            return
        assert c.leader() is target
        leader.refuse_forwarded_commands(False)
        c.network.held.clear()
        c.network.inbox[target.address].clear()
        again = c.propose(forwarder, put(b"/late", b"x"))
        c.settle(again)
        assert again.succeeded, again.error
        c.tick_until(lambda: all(value_of(n, b"/late") == b"x" and value_of(n, b"/before") == b"1" for n in c.nodes))
