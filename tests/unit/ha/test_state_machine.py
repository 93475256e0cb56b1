"""The store's state machine, driven by commands alone (no Raft)."""

from __future__ import annotations

import pytest

from ha import limits
from ha.keys import prefix_end
from ha.state_machine import StateMachine
from ha.storepb import internal_pb2, kv_pb2
from tests.support.commands import (
    Compare,
    apply,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    command,
    compact,
    delete,
    error_code,
    grant,
    keep_alive,
    member,
    op_delete,
    op_put,
    op_range,
    put,
    revoke,
    tick,
    txn,
    values,
)


@pytest.fixture
def sm() -> StateMachine:
    return StateMachine()


def test_revisions_count_changes_not_commands(sm: StateMachine) -> None:
    assert apply(sm, put(b"a", b"1")).put.header.revision == 1
    assert apply(sm, put(b"a", b"2")).put.header.revision == 2
    # A delete of nothing and a failed txn change nothing.
    assert apply(sm, delete(b"zz")).delete_range.header.revision == 2
    assert apply(sm, txn([cmp_value(b"a", b"nope")], [op_put(b"b")])).txn.header.revision == 2
    kv = sm.range(kv_pb2.RangeRequest(key=b"a")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (1, 2, 2)


def test_delete_then_recreate_resets_version(sm: StateMachine) -> None:
    apply(sm, put(b"a"))
    apply(sm, put(b"a"))
    apply(sm, delete(b"a"))
    apply(sm, put(b"a"))
    kv = sm.range(kv_pb2.RangeRequest(key=b"a")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (4, 4, 1)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param(kv_pb2.RangeRequest(key=b"b"), [b"b"], id="single-key"),
        pytest.param(kv_pb2.RangeRequest(key=b"b", range_end=b"d"), [b"b", b"c"], id="half-open-range"),
        pytest.param(kv_pb2.RangeRequest(key=b"b", range_end=b"\0"), [b"b", b"c", b"d"], id="from-key"),
        pytest.param(kv_pb2.RangeRequest(key=b"a", range_end=b"\0", limit=2), [b"a", b"b"], id="limit"),
        pytest.param(kv_pb2.RangeRequest(key=b"x"), [], id="missing"),
    ],
)
def test_range(sm: StateMachine, request_: kv_pb2.RangeRequest, expected: list[bytes]) -> None:
    for k in (b"a", b"b", b"c", b"d"):
        apply(sm, put(k))
    resp = sm.range(request_)
    assert [kv.key for kv in resp.kvs] == expected


def test_range_counts_and_more(sm: StateMachine) -> None:
    for i in range(5):
        apply(sm, put(b"/p/%d" % i))
    resp = sm.range(kv_pb2.RangeRequest(key=b"/p/", range_end=prefix_end(b"/p/"), limit=2))
    assert (len(resp.kvs), resp.count, resp.more) == (2, 5, True)
    count = sm.range(kv_pb2.RangeRequest(key=b"/p/", range_end=prefix_end(b"/p/"), count_only=True))
    assert (len(count.kvs), count.count) == (0, 5)
    keys_only = sm.range(kv_pb2.RangeRequest(key=b"/p/0", keys_only=True))
    assert keys_only.kvs[0].value == b"" and keys_only.kvs[0].mod_revision == 1


def test_reads_at_past_revisions(sm: StateMachine) -> None:
    apply(sm, put(b"a", b"1"))  # rev 1
    apply(sm, put(b"b", b"1"))  # rev 2
    apply(sm, put(b"a", b"2"))  # rev 3
    apply(sm, delete(b"b"))  # rev 4
    assert values(sm, revision=1) == {b"a": b"1"}
    assert values(sm, revision=2) == {b"a": b"1", b"b": b"1"}
    assert values(sm, revision=3) == {b"a": b"2", b"b": b"1"}
    assert values(sm) == {b"a": b"2"}


@pytest.mark.parametrize(
    ("compare", "succeeds"),
    [
        pytest.param(cmp_value(b"k", b"v1"), True, id="value-equal"),
        pytest.param(cmp_value(b"k", b"v0"), False, id="value-differs"),
        pytest.param(cmp_value(b"missing", b""), False, id="value-of-missing-key"),
        pytest.param(cmp_version(b"k", 1), True, id="version"),
        pytest.param(cmp_version(b"missing", 0), True, id="version-of-missing-is-0"),
        pytest.param(cmp_create(b"missing", 0), True, id="create-0-means-absent"),
        pytest.param(cmp_mod(b"k", 1), True, id="mod-equal"),
        pytest.param(cmp_mod(b"k", 0, Compare.GREATER), True, id="mod-greater"),
        pytest.param(cmp_mod(b"k", 1, Compare.LESS), False, id="mod-less"),
        pytest.param(cmp_value(b"k", b"v1", Compare.NOT_EQUAL), False, id="not-equal"),
        pytest.param(
            Compare(key=b"k", range_end=b"l", target=Compare.VERSION, result=Compare.EQUAL, version=1),
            True,
            id="range-compare",
        ),
    ],
)
def test_txn_compares(sm: StateMachine, compare: kv_pb2.Compare, succeeds: bool) -> None:
    apply(sm, put(b"k", b"v1"))
    result = apply(sm, txn([compare], [op_put(b"then")], [op_put(b"else")]))
    assert result.txn.succeeded is succeeds
    assert set(values(sm)) == {b"k", b"then" if succeeds else b"else"}


def test_txn_is_atomic_at_one_revision(sm: StateMachine) -> None:
    apply(sm, put(b"old"))
    result = apply(sm, txn([], [op_put(b"x"), op_put(b"y"), op_delete(b"old"), op_range(b"x")]))
    assert result.txn.succeeded
    assert result.txn.header.revision == 2
    # The range inside the txn sees the txn's own earlier writes.
    assert result.txn.responses[3].response_range.kvs[0].key == b"x"
    assert {kv.mod_revision for kv in sm.range(kv_pb2.RangeRequest(key=b"\0", range_end=b"\0")).kvs} == {2}


def test_compare_and_swap_on_mod_revision(sm: StateMachine) -> None:
    rev = apply(sm, put(b"k", b"a")).put.header.revision
    assert apply(sm, txn([cmp_mod(b"k", rev)], [op_put(b"k", b"b")])).txn.succeeded
    # The second writer with the same stale revision loses.
    assert not apply(sm, txn([cmp_mod(b"k", rev)], [op_put(b"k", b"c")])).txn.succeeded
    assert values(sm) == {b"k": b"b"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(put(b""), "INVALID_ARGUMENT", id="empty-key"),
        pytest.param(put(b"k" * (limits.MAX_KEY_BYTES + 1)), "KEY_TOO_LARGE", id="oversized-key"),
        pytest.param(put(b"k", b"v" * (limits.MAX_VALUE_BYTES + 1)), "VALUE_TOO_LARGE", id="oversized-value"),
        pytest.param(put(b"k", lease=99), "LEASE_NOT_FOUND", id="missing-lease"),
        pytest.param(put(b"k", ignore_value=True), "INVALID_ARGUMENT", id="ignore-value-on-missing-key"),
        pytest.param(
            txn([], [op_put(b"k%d" % i) for i in range(limits.MAX_TXN_OPS + 1)]), "TOO_MANY_OPS", id="txn-too-big"
        ),
        pytest.param(txn([], [op_put(b"a"), op_put(b"a")]), "DUPLICATE_KEY", id="txn-duplicate-put"),
        pytest.param(txn([], [op_delete(b"a", b"z"), op_put(b"b")]), "DUPLICATE_KEY", id="txn-put-in-delete"),
        pytest.param(txn([], [op_put(b"a"), op_put(b"")]), "INVALID_ARGUMENT", id="txn-bad-op-stores-nothing"),
        pytest.param(compact(5), "FUTURE_REVISION", id="compact-future"),
        pytest.param(revoke(7), "LEASE_NOT_FOUND", id="revoke-missing-lease"),
        pytest.param(keep_alive(7), "LEASE_NOT_FOUND", id="keepalive-missing-lease"),
        pytest.param(grant(0), "INVALID_ARGUMENT", id="zero-ttl"),
        pytest.param(b"\xff\xff\xff", "INVALID_ARGUMENT", id="undecodable"),
        pytest.param(b"", "UNKNOWN_OPERATION", id="empty-command"),
        pytest.param(member("", "h:1"), "INVALID_ARGUMENT", id="member-without-id"),
    ],
)
def test_bad_commands_are_answered_and_store_nothing(sm: StateMachine, raw: bytes, code: str) -> None:
    before = sm.state_hash()
    assert error_code(apply(sm, raw)) == code
    assert sm.state_hash() == before


def test_unknown_operation_from_a_newer_version_is_skipped(sm: StateMachine) -> None:
    # Field 99 of Command: an operation this version does not know.
    newer = b"\x9a\x06\x00"
    assert error_code(apply(sm, newer)) == "UNKNOWN_OPERATION"
    assert apply(sm, put(b"a")).put.header.revision == 1


def test_a_command_proposed_here_is_applied_from_its_checked_message(sm: StateMachine) -> None:
    """Between proposing(raw, message) and the last proposed(raw), apply(raw)
    uses the message instead of parsing raw; only bytes that are the
    message serialized may be registered, so what is applied is the same.
    Here the bytes are garbage, so which path apply took shows."""
    message = internal_pb2.Command(put=kv_pb2.PutRequest(key=b"a", value=b"1"))
    raw = b"\xff\xff\xff"
    sm.proposing(raw, message)
    sm.proposing(raw, message)  # the same bytes proposed twice at once
    assert error_code(apply(sm, raw)) is None
    sm.proposed(raw)
    assert apply(sm, raw).put.header.revision == 2  # the other proposal still waits
    sm.proposed(raw)
    assert error_code(apply(sm, raw)) == "INVALID_ARGUMENT"  # parsed again: undecodable
    assert values(sm) == {b"a": b"1"}


def test_compaction_discards_history(sm: StateMachine) -> None:
    for i in range(4):
        apply(sm, put(b"a", b"%d" % i))  # revs 1..4
    apply(sm, put(b"gone"))  # 5
    apply(sm, delete(b"gone"))  # 6
    assert error_code(apply(sm, compact(5))) is None
    assert values(sm, revision=5) == {b"a": b"3", b"gone": b"v"}
    assert error_code(apply(sm, compact(5))) == "COMPACTED"
    with pytest.raises(Exception, match="compacted"):
        sm.range(kv_pb2.RangeRequest(key=b"a", revision=4))
    events, _ = sm.events_since(6, b"\0", b"\0")
    assert [(revision, key, kv is None) for revision, _, key, kv, _ in events] == [(6, b"gone", True)]
    with pytest.raises(Exception, match="compact"):
        sm.events_since(5, b"\0", b"\0")


def test_events_carry_previous_values_and_never_split_a_revision(sm: StateMachine) -> None:
    apply(sm, put(b"a", b"1"))
    apply(sm, txn([], [op_put(b"a", b"2"), op_put(b"b", b"2"), op_put(b"c", b"2")]))
    events, reached = sm.events_since(1, b"\0", b"\0", max_events=2)
    assert [(revision, key) for revision, _, key, _, _ in events] == [(1, b"a"), (2, b"a"), (2, b"b"), (2, b"c")]
    prev_kv = events[1][4]  # encoded (ha.keyspace)
    assert prev_kv is not None and kv_pb2.KeyValue.FromString(prev_kv).value == b"1"
    assert reached == 2


def test_leases_expire_by_the_proposed_clock_only(sm: StateMachine) -> None:
    lease = apply(sm, grant(10)).lease_grant.id
    apply(sm, put(b"k", lease=lease))
    apply(sm, tick(1_000))  # the renewal counts from this tick: deadline 11_000
    apply(sm, tick(10_999))
    assert values(sm) == {b"k": b"v"}
    apply(sm, tick(11_000))
    assert values(sm) == {}
    assert error_code(apply(sm, keep_alive(lease))) == "LEASE_NOT_FOUND"


def test_keep_alive_extends_and_revoke_deletes_keys(sm: StateMachine) -> None:
    lease = apply(sm, grant(10)).lease_grant.id
    apply(sm, put(b"a", lease=lease))
    apply(sm, put(b"b", lease=lease))
    apply(sm, tick(0))
    apply(sm, tick(9_000))
    apply(sm, keep_alive(lease))
    apply(sm, tick(9_500))  # renewed: deadline 19_500
    apply(sm, tick(19_000))
    assert set(values(sm)) == {b"a", b"b"}
    apply(sm, revoke(lease))
    assert values(sm) == {}


def test_promotion_after_a_leader_change_gives_full_ttl(sm: StateMachine) -> None:
    lease = apply(sm, grant(5)).lease_grant.id
    apply(sm, put(b"k", lease=lease))
    apply(sm, tick(1_000))  # deadline 6_000
    # A new leader whose clock runs 60 s ahead promotes the leases first.
    apply(sm, tick(61_000, promote=True))
    assert values(sm) == {b"k": b"v"}
    apply(sm, tick(66_000))
    assert values(sm) == {}


def test_moving_a_key_to_another_lease(sm: StateMachine) -> None:
    one = apply(sm, grant(5)).lease_grant.id
    two = apply(sm, grant(100)).lease_grant.id
    apply(sm, put(b"k", lease=one))
    apply(sm, put(b"k", lease=two))
    apply(sm, revoke(one))
    assert values(sm) == {b"k": b"v"}
    ttl = sm.lease_time_to_live(kv_pb2.LeaseTimeToLiveRequest(id=two, keys=True))
    assert list(ttl.keys) == [b"k"]


def test_snapshot_restore_round_trips_exactly(sm: StateMachine) -> None:
    lease = apply(sm, grant(30)).lease_grant.id
    apply(sm, tick(5_000))
    for i in range(20):
        apply(sm, put(b"/k/%d" % (i % 7), b"%d" % i, lease=lease if i % 3 == 0 else 0))
    apply(sm, delete(b"/k/1"))
    apply(sm, compact(10))
    apply(sm, member("m1", "127.0.0.1:1", "127.0.0.1:2"))
    copy = StateMachine()
    copy.restore(sm.snapshot())
    assert copy.snapshot() == sm.snapshot()
    assert copy.state_hash() == sm.state_hash()
    # Behaviour carries over too: history, events, leases, next lease id.
    assert values(copy, revision=15) == values(sm, revision=15)
    assert copy.events_since(11, b"\0", b"\0") == sm.events_since(11, b"\0", b"\0")
    for raw in (grant(5), tick(40_000), put(b"/k/9")):
        assert apply(copy, raw) == apply(sm, raw)
    assert copy.state_hash() == sm.state_hash()


def test_members(sm: StateMachine) -> None:
    apply(sm, member("m1", "h:1"))
    apply(sm, member("m1", "h:1", "h:2"))
    assert error_code(apply(sm, member("m2", "h:1"))) == "INVALID_ARGUMENT"
    assert [(m.id, m.grpc_address) for m in sm.members()] == [("m1", "h:2")]
    assert error_code(apply(sm, command(member_remove={"id": "m9"}))) == "MEMBER_NOT_FOUND"


def _busy_state(sm: StateMachine) -> None:
    lease = apply(sm, grant(30)).lease_grant.id
    apply(sm, tick(5_000))
    for i in range(30):
        apply(sm, put(b"/k/%d" % (i % 5), b"v%d" % i, lease=lease if i % 4 == 0 else 0))
    apply(sm, delete(b"/k/2"))
    apply(sm, compact(8))
    apply(sm, member("m1", "127.0.0.1:1", "127.0.0.1:2"))
    apply(sm, member("m2", "127.0.0.1:3", "127.0.0.1:4"))


def test_the_hand_encoded_snapshot_is_protobufs_own_encoding(sm: StateMachine) -> None:
    _busy_state(sm)
    encoded = sm.snapshot()
    assert internal_pb2.Snapshot.FromString(encoded).SerializeToString(deterministic=True) == encoded


def test_a_capture_is_the_state_when_it_was_taken(sm: StateMachine) -> None:
    _busy_state(sm)
    before = sm.snapshot()
    image = sm.capture()
    # The state moves on before the capture is encoded (the snapshot writer thread).
    apply(sm, put(b"/k/1", b"later"))
    apply(sm, delete(b"/k/3"))
    apply(sm, compact(20))
    apply(sm, member("m1", "127.0.0.1:9", "127.0.0.1:9"))
    assert image.encode() == before
