"""The group committer's retries. A read barrier lost to a leader change is
proposed again (a read has no outcome to be unsure of), and gives up as
NotCommitted, never as a write whose outcome is unknown. A write no Raft log
holds (forwarded to a master that was not the leader) is proposed again; a
write whose outcome is unknown is not."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from ha import group_commit
from ha.errors import NotCommitted, OutcomeUnknown
from ha.group_commit import Callback, GroupCommitOptions, GroupCommitter
from ha.metrics import StoreMetrics
from ha.raft_node import FAIL_REASON, proposal_error


class Proposer:
    """Fails the first `failures` batches as a deposed leader does (or with
    `reason`)."""

    def __init__(self, failures: int, reason: int = FAIL_REASON.LEADER_CHANGED):
        self.failures = failures
        self.reason = reason
        self.batches = 0

    def can_propose(self) -> bool:
        return True

    def submit(self, commands: list[bytes], callback: Callback) -> None:
        self.batches += 1
        loop = asyncio.get_running_loop()
        if self.batches <= self.failures:
            loop.call_soon(callback, None, proposal_error(self.reason))
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


async def test_a_write_refused_by_a_master_that_was_not_the_leader_is_proposed_again() -> None:
    proposer = Proposer(failures=3, reason=FAIL_REASON.NOT_LEADER)
    metrics = StoreMetrics(CollectorRegistry())
    committer = GroupCommitter(proposer, asyncio.get_running_loop(), metrics)
    assert await committer.propose(b"put") == b""
    assert proposer.batches == 4
    assert metrics.registry.get_sample_value("raftkube_store_proposals_retried_total") == 3


async def test_a_write_whose_outcome_is_unknown_is_not_proposed_again() -> None:
    proposer = Proposer(failures=1)
    committer = GroupCommitter(proposer, asyncio.get_running_loop(), StoreMetrics(CollectorRegistry()))
    with pytest.raises(OutcomeUnknown):
        await committer.propose(b"put")
    assert proposer.batches == 1


async def test_a_write_refused_until_the_timeout_is_not_committed() -> None:
    proposer = Proposer(failures=1_000, reason=FAIL_REASON.MISSING_LEADER)
    options = GroupCommitOptions(timeout=0.2)
    committer = GroupCommitter(proposer, asyncio.get_running_loop(), StoreMetrics(CollectorRegistry()), options)
    with pytest.raises(NotCommitted, match="no leader is known"):
        await committer.propose(b"put")
    assert proposer.batches > 1
