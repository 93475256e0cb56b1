"""How many messages a loaded leader sends per log entry (ha/raft_node.py,
"messages"): with the next batch always queued when the last one applies, as
under group commit, every entry must reach each follower in one
append_entries, not in that and a commit-index-only one before it.

The control run takes pysyncobj's own behaviour back (the override removed),
which sends the extra message for every entry, so the test can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ha.raft_node import ProposalError, RaftNode
from tests.support.raft_kit import ASKED_ELECTIONS_ONLY, hand_cluster, put

ENTRIES = 30


def empty_appends(sent: list[tuple[str, str, dict[str, Any]]], sender: str, receiver: str) -> int:
    return sum(
        1
        for src, dst, message in sent
        if (src, dst) == (sender, receiver) and message.get("type") == "append_entries" and not message.get("entries")
    )


@pytest.mark.parametrize("variant", ["raftkube", "pysyncobj"])
def test_a_queued_entry_carries_the_commit_index(tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if variant == "pysyncobj":
        monkeypatch.delattr(RaftNode, "_SyncObj__applyLogEntries")
    # Heartbeats rare (pysyncobj wants them under a third of the election
    # timeout): the chain takes a few ms, so about every empty append is
    # one the leader chose to send.
    config = {**ASKED_ELECTIONS_ONLY, "heartbeat_interval": 0.6, "leader_fallback_timeout": 30.0}
    with hand_cluster(tmp_path, config=config) as c:
        leader = c.elect()
        c.tick_until(c.caught_up)
        follower = c.others(leader)[0]
        applied = 0

        # Group commit's shape: each batch is proposed from the completion
        # of the one before, so it is queued while that one is applied.
        def next_batch(results: list[bytes] | None, error: ProposalError | None) -> None:
            nonlocal applied
            assert error is None, error
            applied += 1
            if applied < ENTRIES:
                leader.submit([put(b"k%d" % applied, b"v")], next_batch)

        c.network.record = True
        leader.submit([put(b"k", b"v")], next_batch)
        c.tick_until(lambda: applied == ENTRIES and c.caught_up())

        empties = empty_appends(c.network.sent, leader.address, follower.address)
        if variant == "raftkube":
            # Only applies with nothing queued send their commit index
            # alone: the chain's last, and the new leader's no-op when the
            # chain starts before it has committed.
            assert empties <= 2, empties
        else:
            assert empties >= ENTRIES - 1, empties
