"""The group committer's read barrier: lost to a leader change, it is
proposed again (a read has no outcome to be unsure of), and it gives up
as NotCommitted, never as a write whose outcome is unknown."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from ha import group_commit
from ha.errors import NotCommitted
from ha.group_commit import Callback, GroupCommitter
from ha.metrics import StoreMetrics
from ha.raft_node import FAIL_REASON, proposal_error


class Proposer:
    """Fails the first `failures` batches as a deposed leader does."""

    def __init__(self, failures: int):
        self.failures = failures
        self.batches = 0

    def can_propose(self) -> bool:
        return True

    def submit(self, commands: list[bytes], callback: Callback) -> None:
        self.batches += 1
        loop = asyncio.get_running_loop()
        if self.batches <= self.failures:
            loop.call_soon(callback, None, proposal_error(FAIL_REASON.LEADER_CHANGED))
        else:
            loop.call_soon(callback, [b""] * len(commands), None)


async def test_a_barrier_lost_to_a_leader_change_is_proposed_again() -> None:
    proposer = Proposer(failures=2)
    committer = GroupCommitter(proposer, asyncio.get_running_loop(), StoreMetrics(CollectorRegistry()))
    await committer.barrier()
    assert proposer.batches == 3


async def test_a_barrier_that_never_commits_is_not_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_commit, "BARRIER_RETRY_FOR", 0.2)
    proposer = Proposer(failures=1_000)
    committer = GroupCommitter(proposer, asyncio.get_running_loop(), StoreMetrics(CollectorRegistry()))
    with pytest.raises(NotCommitted, match="no read barrier could be committed"):
        await committer.barrier()
    assert proposer.batches > 1
