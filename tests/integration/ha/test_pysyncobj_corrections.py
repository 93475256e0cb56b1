"""Each correction of pysyncobj 0.3.17 in ha/raft_node.py, pinned by a
deterministic scenario on real, hand-ticked nodes (../shared/notes/pysyncobj.md
describes the defects).

Every test runs twice. `corrected`: all corrections on, the symptom must not
appear. `uncorrected`: the one correction off, the symptom must appear, which
proves the scenario still reaches the defect. To see a test fail, switch the
correction off in the corrected run:

    RAFTKUBE_DISABLE_CORRECTIONS=COMMIT_ON_UNVERIFIED_LOG pytest tests/integration/ha/test_pysyncobj_corrections.py
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pysyncobj.pickle as pso_pickle
import pytest

from ha import raft_node
from ha.raft_node import ALL_CORRECTIONS, Correction, SnapshotFile
from ha.state_machine import StateMachine
from tests.support.raft_kit import (
    ASKED_ELECTIONS_ONLY,
    HandCluster,
    first_log_index,
    hand_cluster,
    last_log_index,
    put,
    value_of,
)

DISABLED = frozenset(Correction[name] for name in os.environ.get("RAFTKUBE_DISABLE_CORRECTIONS", "").split(",") if name)


def corrections(variant: str, correction: Correction) -> frozenset[Correction]:
    if variant == "corrected":
        return ALL_CORRECTIONS - DISABLED
    return ALL_CORRECTIONS - {correction}


VARIANTS = ["corrected", "uncorrected"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_1_commit_index_is_not_raised_over_an_unverified_log(tmp_path: Path, variant: str) -> None:
    """A deposed leader appended a write, the others moved on and compacted;
    the snapshot they send must not make it apply (and acknowledge) its stale
    tail: its client would be told SUCCESS for a write no replica keeps."""
    with hand_cluster(
        tmp_path,
        corrections=corrections(variant, Correction.COMMIT_ON_UNVERIFIED_LOG),
        config={"log_compaction_min_entries": 20, "leader_fallback_timeout": 5.0},
    ) as c:
        old = c.elect()
        c.tick_until(c.caught_up)
        rest = c.others(old)
        c.network.isolate(old.address, c.addresses)
        write = c.propose(old, put(b"w", b"acknowledged?"))
        for _ in range(5):
            c.tick([old])  # appended on the old leader only
        stale_index = last_log_index(old)
        new = c.elect(rest)
        for i in range(40):
            p = c.propose(new, put(b"k%d" % i, b"v"))
            c.settle(p, rest)
        c.tick_until(lambda: first_log_index(new) > stale_index + 1, rest)  # compacted past it
        c.network.heal()
        c.network.slow.add(old.address)  # its messages arrive one per tick
        c.tick_until(lambda: write.done and c.caught_up(), timeout=20)

        kept = [value_of(n, b"w") for n in c.nodes]
        told_success_but_lost = write.succeeded and kept == [None, None, None]
        if variant == "corrected":
            assert not told_success_but_lost, "client told SUCCESS, yet no replica holds the value"
            assert write.error is not None and write.error.outcome_unknown
        else:
            assert told_success_but_lost


def _pipelined_burst(c: HandCluster, rounds: int) -> tuple[int, int]:
    """The leader gets its followers' replies one per tick while it keeps
    proposing and compacting: success replies arrive late. Returns how often
    a success reply moved a nextIndex backwards, and how many snapshots the
    followers were sent although they had applied past them."""
    leader = c.elect()
    c.tick_until(c.caught_up)
    c.network.slow.add(leader.address)
    backwards = 0
    for rnd in range(rounds):
        if rnd % 3 == 0:
            for _ in range(3):
                c.propose(leader, put(b"k%d" % rnd, b"v"))
        before = dict(leader._SyncObj__raftNextIndex)
        c.tick([leader])
        after = leader._SyncObj__raftNextIndex
        backwards += sum(1 for node, idx in before.items() if after.get(node, idx) < idx)
        c.tick(c.others(leader))
    c.network.slow.clear()
    c.tick_until(c.caught_up)
    stale_snapshots = sum(n._SyncObj__serializer.installs_refused for n in c.nodes)
    return backwards, stale_snapshots


@pytest.mark.parametrize("variant", VARIANTS)
def test_2_a_late_success_reply_never_moves_next_index_backwards(tmp_path: Path, variant: str) -> None:
    """Pipelined appends get their replies late; a stale one used to move the
    follower's nextIndex back below entries already sent, so the leader
    re-sent entries and, once it had compacted, whole snapshots older than
    what the follower had applied (refused here by correction 4)."""
    with hand_cluster(
        tmp_path,
        corrections=corrections(variant, Correction.STALE_SUCCESS_NEXT_INDEX),
        config={"append_entries_max_bytes": 100, "leader_fallback_timeout": 30.0, "log_compaction_min_entries": 8},
    ) as c:
        backwards, stale_snapshots = _pipelined_burst(c, rounds=300)
    if variant == "corrected":
        assert (backwards, stale_snapshots) == (0, 0)
    else:
        assert backwards > 0 and stale_snapshots > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_3_conflicting_entries_go_at_once(tmp_path: Path, variant: str) -> None:
    """A deposed leader holds a long uncommitted tail from its old term. The
    new leader pipelines several appends per round; without dropping the
    conflict at once, each round's later replies reset nextIndex past the
    conflict again, and the follower never catches up (a livelock)."""
    with hand_cluster(
        tmp_path,
        corrections=corrections(variant, Correction.CONFLICT_TRUNCATION),
        config={"append_entries_max_bytes": 100, "leader_fallback_timeout": 30.0},
    ) as c:
        old = c.elect()
        c.tick_until(c.caught_up)
        rest = c.others(old)
        c.network.isolate(old.address, c.addresses)
        for i in range(40):
            c.propose(old, put(b"stale%d" % i, b"x"))
        for _ in range(20):
            c.tick([old])
        new = c.elect(rest)
        for i in range(30):
            p = c.propose(new, put(b"k%d" % i, b"v"))
            c.settle(p, rest)
        c.network.heal()
        deadline = time.monotonic() + 8.0
        caught_up = False
        i = 0
        while time.monotonic() < deadline and not caught_up:
            c.propose(new, put(b"busy", b"%d" % i))  # clients keep the leader busy
            i += 1
            c.tick()
            caught_up = old.role == "follower" and value_of(old, b"k29") == b"v"
    if variant == "corrected":
        assert caught_up, "the deposed leader never caught up with the new one"
    else:
        assert not caught_up


@pytest.mark.parametrize("variant", VARIANTS)
def test_4_a_snapshot_older_than_the_applied_state_is_refused(tmp_path: Path, variant: str) -> None:
    """A follower that fell behind answers the leader's probes with resets.
    The leader takes the first, catches the follower up, compacts, and the
    follower applies more; only then do the other, stale, resets arrive.
    They send the leader back to a snapshot older than what the follower
    applied; installing it rolls the follower's state back."""
    with hand_cluster(
        tmp_path,
        corrections=corrections(variant, Correction.STALE_SNAPSHOT_INSTALL),
        config={"leader_fallback_timeout": 30.0},
    ) as c:
        leader = c.elect()
        c.tick_until(c.caught_up)
        follower, other = c.others(leader)
        c.network.isolate(follower.address, c.addresses)
        for i in range(10):
            p = c.propose(leader, put(b"x%d" % i, b"v"))
            c.settle(p, [leader, other])
        follower_node = next(n for n in leader._SyncObj__raftNextIndex if n.id == follower.address)
        c.network.heal()
        # The follower's replies to the leader are delayed from here on.
        c.network.held.add((follower.address, leader.address))
        c.tick_for(0.3)  # probes go out; the follower's reset replies queue up
        inbox = c.network.inbox[leader.address]
        resets = [m["next_node_idx"] for n, m in inbox if m.get("reset")]
        assert len(resets) >= 2
        behind = resets[0]  # where the follower's log ends, as it told the leader
        while leader._SyncObj__raftNextIndex[follower_node] != behind:
            assert c.deliver_one(leader), "no reset reached the leader"
        c.tick_until(lambda: follower.applied_index >= leader.commit_index)
        # The leader compacts past the follower's old position; the follower
        # then applies beyond the snapshot that compaction wrote.
        leader.forceLogCompaction()
        c.tick_until(lambda: first_log_index(leader) > behind)
        snapshot_index = first_log_index(leader) + 1
        for i in range(3):
            p = c.propose(leader, put(b"y%d" % i, b"v"))
            c.settle(p)
            c.tick_until(lambda: follower.applied_index >= leader.commit_index)
        applied = follower.applied_index
        assert applied > snapshot_index
        # Now the stale resets arrive, a heartbeat interval before the
        # follower's newer replies do.
        lowest = applied
        while inbox and inbox[0][1].get("reset"):
            c.deliver_one(leader)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            c.tick()
            lowest = min(lowest, follower.applied_index)
        c.network.held.clear()
        while c.deliver_one(leader):
            c.tick()
        c.tick_until(c.caught_up)
        refused = follower._SyncObj__serializer.installs_refused
    if variant == "corrected":
        assert lowest == applied, "the follower's applied state went backwards"
        assert refused > 0  # the stale snapshot did come, and was refused
    else:
        assert lowest < applied


def _entry_crossing_a_chunk_boundary(index: int, term: int) -> bytes:
    """A put whose log entry is under 128 KiB raw but over it pickled: the
    chunked send marks its second chunk as the last one."""
    blob = os.urandom(131072)

    def sizes(size: int) -> tuple[int, int]:
        stored = pso_pickle.dumps((0, ([put(b"big", blob[:size])],)))
        return len(stored), len(pso_pickle.dumps((stored, index, term)))

    # Both lengths grow with the value's: bisect for the first value whose
    # pickled entry is over the boundary, then check its raw one is not.
    low, high = 131072 - 200, 131072
    while low < high:
        mid = (low + high) // 2
        if sizes(mid)[1] > 131072:
            high = mid
        else:
            low = mid + 1
    raw, pickled = sizes(low)
    assert raw <= 131072 < pickled, "no size crosses the boundary"
    return put(b"big", blob[:low])


@pytest.mark.parametrize("variant", VARIANTS)
def test_6_chunked_sends_of_large_entries_complete(tmp_path: Path, variant: str) -> None:
    """Entries of 64 KiB and more go in chunks; pysyncobj computes the last
    chunk from the raw length, so followers unpickle a truncated entry
    ("pickle data was truncated" inside the tick) and replication stalls."""
    with hand_cluster(
        tmp_path,
        corrections=corrections(variant, Correction.CHUNKED_SEND),
        # No election while the entries are built (nothing ticks meanwhile).
        config={"append_entries_max_bytes": 65536, "leader_fallback_timeout": 30.0, **ASKED_ELECTIONS_ONLY},
    ) as c:
        leader = c.elect()
        c.tick_until(c.caught_up)
        first = last_log_index(leader) + 1
        proposals = [c.propose(leader, _entry_crossing_a_chunk_boundary(first + i, leader.term)) for i in range(5)]
        try:
            c.tick_until(lambda: all(p.done for p in proposals) and c.caught_up(), timeout=10)
            replicated = True
        except TimeoutError:
            replicated = False
        follower_errors = sum(n.tick_errors for n in c.others(leader))
    if variant == "corrected":
        assert replicated and follower_errors == 0
    else:
        # Followers fail inside the tick on every truncated entry; whether
        # replication then stalls for good depends on how chunks interleave.
        assert follower_errors > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_5_a_compaction_started_before_an_install_is_abandoned(
    tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's own compaction finishes after a newer snapshot was
    installed: its file must not replace the installed one, nor may it cut
    the log (pysyncobj would cut to its older point, or past the end, and
    wedge on every later tick)."""
    chosen = corrections(variant, Correction.COMPACTION_INSTALL_RACE)
    path = str(tmp_path / "raft.snapshot")
    sm = StateMachine()
    snapshots = SnapshotFile(path, sm, 1 << 20, lambda: 100, chosen)
    gate = threading.Event()
    real_write = raft_node._write_snapshot

    def gated_write(p: str, header: bytes, state: bytes) -> None:
        gate.wait(10)
        real_write(p, header, state)

    monkeypatch.setattr(raft_node, "_write_snapshot", gated_write)
    # Our compaction at index 50 starts, and stalls in its writer.
    snapshots.serialize((None, (b"", 50, 1), (b"", 49, 1), []), 49)
    # A newer snapshot (index 200) arrives from the leader and is installed.
    leader_file = tmp_path / "leader.snapshot"
    real_write(str(leader_file), pso_pickle.dumps(((b"", 200, 2), (b"", 199, 2), [])), StateMachine().snapshot())
    data = leader_file.read_bytes()
    assert snapshots.setTransmissionData((data, True, False)) is False
    assert snapshots.setTransmissionData((b"", False, True)) is True
    gate.set()
    deadline = time.monotonic() + 10
    while (state := snapshots.checkSerializing())[0] == raft_node.SERIALIZER_STATE.SERIALIZING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    installed_kept = Path(path).read_bytes() == data
    if variant == "corrected":
        assert state[0] == raft_node.SERIALIZER_STATE.FAILED and installed_kept
    else:
        assert state[0] == raft_node.SERIALIZER_STATE.SUCCESS and not installed_kept


@pytest.mark.parametrize("variant", VARIANTS)
def test_5_the_log_is_never_cut_past_its_end(tmp_path: Path, variant: str) -> None:
    with hand_cluster(tmp_path, corrections=corrections(variant, Correction.COMPACTION_INSTALL_RACE)) as c:
        leader = c.elect()
        c.tick_until(c.caught_up)
        follower = c.others(leader)[0]
        follower._SyncObj__deleteEntriesTo(last_log_index(follower) + 10)  # a stale compaction's cut
        c.tick_for(0.3)
        p = c.propose(leader, put(b"after", b"v"))
        try:
            c.tick_until(lambda: p.done and c.caught_up(), timeout=5)
            healthy = True
        except TimeoutError:
            healthy = False
    if variant == "corrected":
        assert healthy and follower.tick_errors == 0
    else:
        assert not healthy and follower.tick_errors > 0  # IndexError on every tick: wedged


@pytest.mark.parametrize("variant", VARIANTS)
def test_7_a_send_the_socket_takes_in_part_completes(tmp_path: Path, variant: str) -> None:
    """An append larger than the socket buffers: pysyncobj writes what the
    socket takes and, without the correction, the rest only with the next
    message to that peer (a heartbeat), one buffer-full each time."""
    with hand_cluster(
        tmp_path,
        corrections=corrections(variant, Correction.PARTIAL_SEND),
        # Small socket buffers, and heartbeats as rare as pysyncobj allows
        # under elections only when asked (a third of the timeout).
        config={"socket_buffer_bytes": 16384, "heartbeat_interval": 0.6, "leader_fallback_timeout": 30.0}
        | ASKED_ELECTIONS_ONLY,
    ) as c:
        leader = c.elect()
        c.tick_until(c.caught_up)
        value = os.urandom(1 << 20)  # 2 MiB in one entry, over 100 buffer-fulls
        p = c.propose(leader, put(b"big-1", value), put(b"big-2", value))
        try:
            c.tick_until(lambda: p.done and c.caught_up(), timeout=1.5)
            replicated = True
        except TimeoutError:
            replicated = False
        held = [conn.getSendBufferSize() for conn in leader._SyncObj__transport._connections.values()]
    if variant == "corrected":
        assert replicated and p.succeeded
    else:
        assert not replicated and any(size > 0 for size in held), held
