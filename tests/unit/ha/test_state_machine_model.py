"""The state machine against a plain-Python model of an etcd-like store:
hypothesis drives random puts, deletes, compare-and-swap txns, leases, lease
ticks, compaction, and snapshot/restore in the middle, and after every step
the two must agree on current values, past revisions and answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ha.state_machine import StateMachine
from ha.storepb import kv_pb2
from tests.support.commands import (
    apply,
    cmp_mod,
    compact,
    delete,
    error_code,
    grant,
    keep_alive,
    op_put,
    put,
    revoke,
    tick,
    txn,
)

KEYS = st.sampled_from([b"a", b"b", b"c", b"d"])
VALUES = st.binary(min_size=0, max_size=4)


@dataclass
class Model:
    """An etcd-like store in the simplest terms: a full copy of the state
    per revision."""

    revision: int = 0
    compacted: int = 0
    # revision -> {key: (value, create, mod, version, lease)}
    history: dict[int, dict[bytes, tuple[bytes, int, int, int, int]]] = field(default_factory=lambda: {0: {}})
    # lease id -> [ttl, deadline or None while pending]
    leases: dict[int, list[int | None]] = field(default_factory=dict)
    clock: int = 0
    next_lease: int = 1

    @property
    def now(self) -> dict[bytes, tuple[bytes, int, int, int, int]]:
        return self.history[self.revision]

    def commit(self, state: dict[bytes, tuple[bytes, int, int, int, int]]) -> None:
        if state != self.now:
            self.revision += 1
            self.history[self.revision] = state

    def put(self, key: bytes, value: bytes, lease: int, state: dict | None = None) -> None:
        target = dict(self.now) if state is None else state
        prev = target.get(key)
        rev = self.revision + 1
        if prev is None:
            target[key] = (value, rev, rev, 1, lease)
        else:
            target[key] = (value, prev[1], rev, prev[3] + 1, lease)
        if state is None:
            self.revision = rev
            self.history[rev] = target

    def drop_keys_of(self, lease_ids: list[int]) -> None:
        state = {k: v for k, v in self.now.items() if v[4] not in lease_ids}
        for lease_id in lease_ids:
            del self.leases[lease_id]
        self.commit(state)


class StoreComparison(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = StateMachine()
        self.model = Model()

    @rule(key=KEYS, value=VALUES, use_lease=st.booleans(), lease_pick=st.integers(0, 5))
    def put_key(self, key: bytes, value: bytes, use_lease: bool, lease_pick: int) -> None:
        lease = 0
        if use_lease:
            ids = sorted(self.model.leases) or [lease_pick + 100]
            lease = ids[lease_pick % len(ids)]
        result = apply(self.sm, put(key, value, lease=lease))
        if lease and lease not in self.model.leases:
            assert error_code(result) == "LEASE_NOT_FOUND"
            return
        self.model.put(key, value, lease)
        assert result.put.header.revision == self.model.revision

    @rule(key=KEYS, whole_range=st.booleans())
    def delete_key(self, key: bytes, whole_range: bool) -> None:
        end = b"\xff" if whole_range else b""
        result = apply(self.sm, delete(key, end))
        state = {k: v for k, v in self.model.now.items() if not (k == key or (whole_range and k >= key))}
        deleted = len(self.model.now) - len(state)
        self.model.commit(state)
        assert result.delete_range.deleted == deleted
        assert result.delete_range.header.revision == self.model.revision

    @rule(key=KEYS, value=VALUES, stale=st.booleans(), other=KEYS)
    def compare_and_swap(self, key: bytes, value: bytes, stale: bool, other: bytes) -> None:
        current = self.model.now.get(key)
        expected = (current[2] if current else 0) - (1 if stale else 0)
        result = apply(self.sm, txn([cmp_mod(key, expected)], [op_put(key, value), op_put(other + b"/x", value)]))
        succeeds = not stale
        assert result.txn.succeeded is succeeds
        if succeeds:
            state = dict(self.model.now)
            self.model.put(key, value, 0, state)
            self.model.put(other + b"/x", value, 0, state)
            self.model.revision += 1
            self.model.history[self.model.revision] = state
        assert result.txn.header.revision == self.model.revision

    @rule(ttl=st.integers(1, 5))
    def grant_lease(self, ttl: int) -> None:
        result = apply(self.sm, grant(ttl))
        assert result.lease_grant.id == self.model.next_lease
        self.model.leases[self.model.next_lease] = [ttl, None]
        self.model.next_lease += 1

    @rule(pick=st.integers(0, 5))
    def keep_lease_alive(self, pick: int) -> None:
        ids = sorted(self.model.leases)
        lease_id = ids[pick % len(ids)] if ids else 999
        result = apply(self.sm, keep_alive(lease_id))
        if lease_id not in self.model.leases:
            assert error_code(result) == "LEASE_NOT_FOUND"
            return
        self.model.leases[lease_id][1] = None

    @rule(pick=st.integers(0, 5))
    def revoke_lease(self, pick: int) -> None:
        ids = sorted(self.model.leases)
        lease_id = ids[pick % len(ids)] if ids else 999
        result = apply(self.sm, revoke(lease_id))
        if lease_id not in self.model.leases:
            assert error_code(result) == "LEASE_NOT_FOUND"
            return
        self.model.drop_keys_of([lease_id])

    @rule(advance_ms=st.integers(0, 4_000), promote=st.booleans())
    def tick_clock(self, advance_ms: int, promote: bool) -> None:
        m = self.model
        m.clock += advance_ms
        expired = []
        for lease_id, lease in sorted(m.leases.items()):
            full = m.clock + lease[0] * 1000  # type: ignore[operator]
            if lease[1] is None or promote:
                lease[1] = max(lease[1] or 0, full)
            elif lease[1] <= m.clock:
                expired.append(lease_id)
        apply(self.sm, tick(m.clock, promote))
        if expired:
            m.drop_keys_of(expired)

    @precondition(lambda self: self.model.revision > self.model.compacted)
    @rule(data=st.data())
    def compact_history(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(self.model.compacted + 1, self.model.revision))
        assert error_code(apply(self.sm, compact(rev))) is None
        self.model.compacted = rev

    @rule()
    def snapshot_and_restore(self) -> None:
        fresh = StateMachine()
        fresh.restore(self.sm.snapshot())
        assert fresh.state_hash() == self.sm.state_hash()
        self.sm = fresh

    @invariant()
    def current_state_matches(self) -> None:
        resp = self.sm.range(kv_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
        got = {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in resp.kvs}
        assert got == self.model.now
        assert self.sm.revision == self.model.revision

    @invariant()
    def past_revisions_match(self) -> None:
        for rev in range(max(self.model.compacted, 1), self.model.revision + 1):
            resp = self.sm.range(kv_pb2.RangeRequest(key=b"\0", range_end=b"\0", revision=rev))
            assert {kv.key: kv.value for kv in resp.kvs} == {k: v[0] for k, v in self.model.history[rev].items()}


TestStoreAgainstModel = StoreComparison.TestCase
TestStoreAgainstModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
