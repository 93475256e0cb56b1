"""The store's replicated state machine: `apply(command) -> result`,
`snapshot()`, `restore()`, and the reads served from the applied state.

The contract (hashicorp/raft's FSM, Nomad's dispatcher):
- `apply` is deterministic: no clock, no randomness, no I/O. Time arrives in
  commands (LeaseTick) proposed by the leader.
- `apply` never raises. A bad command returns a CommandError result and
  changes nothing; an exception inside a pysyncobj replicated method would
  wedge the node, retrying the same entry forever.
- Commands and results are serialized protobufs (ha/storepb/internal.proto).
  The operation is the name of the Command's oneof field, routed by one
  table; an operation this version does not know answers UNKNOWN_OPERATION.
- A command this process proposed (`proposing`) is applied here from the
  message it was serialized from, which check_command passed already:
  parsing and checking the same bytes again gives the same command and the
  same verdict, for ~3.5% of a pod create's instructions. Every other command
  (the followers' entries, a replayed log) is parsed and checked in apply.

Every method takes the state lock, so the Raft thread applying entries and
request handlers reading state never see a half-applied command.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from ha import limits
from ha.errors import CommandFailed
from ha.keyspace import EventRecord, KeySpace, Version
from ha.leases import Lease, LeaseTable
from ha.snapshot_image import SnapshotImage
from ha.storepb import cluster_pb2, internal_pb2, kv_pb2
from ha.validation import check_command

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
ErrorCode = internal_pb2.CommandError.Code
_Compare = kv_pb2.Compare


def _copied(member: cluster_pb2.Member) -> cluster_pb2.Member:
    copy = cluster_pb2.Member()
    copy.CopyFrom(member)
    return copy


class StateMachine:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._kv = KeySpace()
        self._leases = LeaseTable()
        self._members: dict[str, cluster_pb2.Member] = {}
        # The revision being written by the command in progress, and the
        # next sub-revision within it.
        self._write_rev = 0
        self._write_sub = 0
        # Commands being proposed from this process: their bytes, the
        # checked message they were serialized from, and how many proposals
        # of those same bytes are waiting.
        self._proposing: dict[bytes, tuple[internal_pb2.Command, int]] = {}
        self._handlers: dict[str, Callable[[Any], internal_pb2.CommandResult]] = {
            "put": self._apply_put,
            "delete_range": self._apply_delete_range,
            "txn": self._apply_txn,
            "compaction": self._apply_compaction,
            "lease_grant": self._apply_lease_grant,
            "lease_revoke": self._apply_lease_revoke,
            "lease_keep_alive": self._apply_lease_keep_alive,
            "lease_tick": self._apply_lease_tick,
            "barrier": self._apply_barrier,
            "member_set": self._apply_member_set,
            "member_remove": self._apply_member_remove,
        }

    # -- the contract ---------------------------------------------------------

    def apply(self, command: bytes) -> bytes:
        with self._lock:
            try:
                result = self._apply(command)
            except CommandFailed as e:
                self._finish_write()
                result = internal_pb2.CommandResult(error=e.to_error())
            except Exception as e:  # never let anything escape into Raft
                log.exception("state machine failed on a command")
                # Changes made before the failure keep their revision, so
                # the next command cannot reuse it; every replica fails alike.
                self._finish_write()
                result = internal_pb2.CommandResult(
                    error=CommandFailed(ErrorCode.INTERNAL, f"internal error: {e!r}").to_error()
                )
            return result.SerializeToString()

    def proposing(self, command: bytes, checked: internal_pb2.Command) -> None:
        """`command` is `checked` serialized, and check_command passed it:
        until `proposed(command)`, its apply here uses that message. The
        caller must not change `checked` meanwhile."""
        with self._lock:
            known = self._proposing.get(command)
            self._proposing[command] = (checked, known[1] + 1 if known else 1)

    def proposed(self, command: bytes) -> None:
        """The proposal of `command` has its outcome (see `proposing`)."""
        with self._lock:
            known = self._proposing.pop(command, None)
            if known is not None and known[1] > 1:
                self._proposing[command] = (known[0], known[1] - 1)

    def _apply(self, command: bytes) -> internal_pb2.CommandResult:
        known = self._proposing.get(command) if self._proposing else None
        if known is not None:
            cmd = known[0]
        else:
            try:
                cmd = internal_pb2.Command.FromString(command)
            except DecodeError as e:
                raise CommandFailed(ErrorCode.INVALID_ARGUMENT, f"undecodable command: {e}") from None
        op = cmd.WhichOneof("op")
        handler = self._handlers.get(op) if op else None
        if handler is None:
            raise CommandFailed(ErrorCode.UNKNOWN_OPERATION, "unknown operation (from a newer version?)")
        if known is None:
            check_command(cmd)
        return handler(getattr(cmd, op))

    def capture(self) -> SnapshotImage:
        """The state as it is now, cheaply (O(keys)); encode it later, anywhere."""
        # A copy per key (64k tuples) would set off the cyclic collector,
        # which then walks the whole state: measured in a master, 56-220 ms
        # on the loop instead of ~20. Nothing made here is garbage.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._capture()
        finally:
            if collecting:
                gc.enable()

    def _capture(self) -> SnapshotImage:
        with self._lock:
            return SnapshotImage(
                format=SNAPSHOT_FORMAT,
                revision=self._kv.revision,
                compact_revision=self._kv.compact_revision,
                lease_clock_ms=self._leases.clock_ms,
                next_lease_id=self._leases.next_id,
                histories=self._kv.copied_histories(),  # in no order: encode sorts them
                leases=[(lease.id, lease.ttl, lease.deadline_ms) for lease in self._leases.all()],
                # Members are updated in place (member_set): copied, unlike versions.
                members=[_copied(self._members[m]) for m in sorted(self._members)],
            )

    def snapshot(self) -> bytes:
        return self.capture().encode()

    def restore(self, data: bytes) -> None:
        snap = internal_pb2.Snapshot.FromString(data)
        if snap.format != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {snap.format} is not {SNAPSHOT_FORMAT}")
        histories: list[tuple[bytes, list[Version]]] = []
        leases = [Lease(le.id, le.ttl, le.deadline_ms) for le in snap.leases]
        by_id = {le.id: le for le in leases}
        for h in snap.keys:
            versions = [(v.revision, v.sub, None if v.tombstone else v.kv.SerializeToString()) for v in h.versions]
            histories.append((h.key, versions))
            live = h.versions[-1]
            if not live.tombstone and live.kv.lease in by_id:
                by_id[live.kv.lease].keys.add(h.key)
        with self._lock:
            self._kv.load(snap.revision, snap.compact_revision, histories)
            self._leases.load(snap.lease_clock_ms, snap.next_lease_id, leases)
            self._members = {m.id: m for m in snap.members}

    def state_hash(self) -> tuple[str, int]:
        """SHA-256 of the whole state, and the revision it was taken at."""
        with self._lock:
            return hashlib.sha256(self.snapshot()).hexdigest(), self._kv.revision

    # -- reads (served from applied state, never through the log) ----------

    @property
    def revision(self) -> int:
        return self._kv.revision

    @property
    def compact_revision(self) -> int:
        return self._kv.compact_revision

    def range(self, req: kv_pb2.RangeRequest) -> kv_pb2.RangeResponse:
        """Serve a range; raises CommandFailed for a compacted or future revision."""
        with self._lock:
            return self._range(req)

    def _range(self, req: kv_pb2.RangeRequest) -> kv_pb2.RangeResponse:
        self._check_read_revision(req.revision)
        kvs, count = self._kv.range(req.key, req.range_end, req.revision, req.limit, req.count_only)
        resp = kv_pb2.RangeResponse(count=count, more=0 < req.limit < count)
        resp.header.revision = self._kv.revision
        out = resp.kvs
        if req.keys_only:
            for data in kvs:
                kv = out.add()
                kv.MergeFromString(data)
                kv.ClearField("value")
        else:
            for data in kvs:
                out.add().MergeFromString(data)
        return resp

    def _check_read_revision(self, revision: int) -> None:
        if revision <= 0:
            return
        if revision > self._kv.revision:
            raise CommandFailed(
                ErrorCode.FUTURE_REVISION,
                f"revision {revision} is ahead of the current revision {self._kv.revision}",
                current_revision=self._kv.revision,
            )
        if revision < self._kv.compact_revision:
            raise CommandFailed(
                ErrorCode.COMPACTED,
                f"revision {revision} has been compacted (compact_revision={self._kv.compact_revision})",
                compact_revision=self._kv.compact_revision,
            )

    def events_since(
        self, start_revision: int, key: bytes, range_end: bytes, max_events: int = 1000
    ) -> tuple[list[EventRecord], int]:
        """Events from start_revision on, and the revision they reach.
        Raises CommandFailed(COMPACTED) when start_revision is gone."""
        with self._lock:
            self._check_history(start_revision)
            events = self._kv.events_since(start_revision, key, range_end, max_events)
            reached = events[-1][0] if len(events) >= max_events else self._kv.revision
            return events, reached

    def keys_changed_since(self, start_revision: int) -> set[bytes]:
        """The keys changed from start_revision on (watches ask whether to
        wake). Raises CommandFailed(COMPACTED) when start_revision is gone."""
        with self._lock:
            self._check_history(start_revision)
            return self._kv.keys_changed_since(start_revision)

    def _check_history(self, start_revision: int) -> None:
        if start_revision <= self._kv.compact_revision:
            raise CommandFailed(
                ErrorCode.COMPACTED,
                f"watch from revision {start_revision} is compacted (compact_revision={self._kv.compact_revision})",
                compact_revision=self._kv.compact_revision,
            )

    def lease_time_to_live(self, req: kv_pb2.LeaseTimeToLiveRequest) -> kv_pb2.LeaseTimeToLiveResponse:
        with self._lock:
            lease = self._leases.get(req.id)
            if lease is None:
                raise CommandFailed(ErrorCode.LEASE_NOT_FOUND, f"lease {req.id} not found")
            resp = kv_pb2.LeaseTimeToLiveResponse(
                id=lease.id, ttl=self._leases.remaining_seconds(lease), granted_ttl=lease.ttl
            )
            if req.keys:
                resp.keys.extend(sorted(lease.keys))
            resp.header.revision = self._kv.revision
            return resp

    def lease_count(self) -> int:
        with self._lock:
            return len(self._leases)

    def members(self) -> list[cluster_pb2.Member]:
        with self._lock:
            return [self._members[i] for i in sorted(self._members)]

    def keys_count(self) -> int:
        with self._lock:
            return self._kv.keys_count()

    # -- writes ------------------------------------------------------------

    def _next_sub(self) -> tuple[int, int]:
        """(revision, sub) for the next change of the command in progress."""
        if self._write_rev == 0:
            self._write_rev = self._kv.revision + 1
            self._write_sub = 0
        sub = self._write_sub
        self._write_sub += 1
        return self._write_rev, sub

    def _finish_write(self) -> int:
        """End the command: its changes (if any) become the new revision."""
        if self._write_rev:
            self._kv.revision = self._write_rev
        self._write_rev = 0
        return self._kv.revision

    def _header(self, resp: Any) -> Any:
        resp.header.revision = self._finish_write()
        return resp

    def _done(self) -> internal_pb2.CommandResult:
        return internal_pb2.CommandResult(done=kv_pb2.ResponseHeader(revision=self._finish_write()))

    def _validate_put(self, req: kv_pb2.PutRequest) -> None:
        """The checks of a put that need state (check_put ran already)."""
        if req.lease and not req.ignore_lease and req.lease not in self._leases:
            raise CommandFailed(ErrorCode.LEASE_NOT_FOUND, f"lease {req.lease} not found")
        if (req.ignore_value or req.ignore_lease) and self._kv.get(req.key) is None:
            raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "ignore_value/ignore_lease on a missing key")

    def _do_put(self, req: kv_pb2.PutRequest, resp: kv_pb2.PutResponse) -> None:
        """Apply a put, answering in `resp` (results are filled in place:
        copying a response into the one that carries it cost a txn ~5%)."""
        key = req.key
        prev_live = self._kv.get(key)
        value = prev_live.value if (req.ignore_value and prev_live is not None) else req.value
        lease = prev_live.lease if (req.ignore_lease and prev_live is not None) else req.lease
        rev, sub = self._next_sub()
        self._kv.put(key, value, lease, rev, sub, prev_live)
        if prev_live is not None and prev_live.lease != lease:
            self._leases.detach(prev_live.lease, key)
        self._leases.attach(lease, key)
        if req.prev_kv and prev_live is not None:
            resp.prev_kv.CopyFrom(prev_live)

    def _do_delete(self, req: kv_pb2.DeleteRangeRequest) -> kv_pb2.DeleteRangeResponse:
        resp = kv_pb2.DeleteRangeResponse()
        for key in self._kv.live_keys_in(req.key, req.range_end):
            self._delete_key(key, resp.prev_kvs if req.prev_kv else None)
            resp.deleted += 1
        return resp

    def _delete_key(self, key: bytes, prev_kvs: Any = None) -> None:
        rev, sub = self._next_sub()
        prev = self._kv.delete(key, rev, sub)
        if prev is not None:
            self._leases.detach(prev.lease, key)
            if prev_kvs is not None:
                prev_kvs.append(prev)

    def _apply_put(self, req: kv_pb2.PutRequest) -> internal_pb2.CommandResult:
        self._validate_put(req)
        result = internal_pb2.CommandResult()
        self._do_put(req, result.put)
        self._header(result.put)
        return result

    def _apply_delete_range(self, req: kv_pb2.DeleteRangeRequest) -> internal_pb2.CommandResult:
        return internal_pb2.CommandResult(delete_range=self._header(self._do_delete(req)))

    # -- transactions --------------------------------------------------------

    def _apply_txn(self, req: kv_pb2.TxnRequest) -> internal_pb2.CommandResult:
        self._validate_txn(req)
        result = internal_pb2.CommandResult()
        self._do_txn(req, result.txn)
        self._header(result.txn)
        return result

    def _validate_txn(self, req: kv_pb2.TxnRequest) -> None:
        """The checks of a txn that need state (check_txn ran already),
        against the state before the txn, as etcd does."""
        for branch in (req.success, req.failure):
            for op in branch:
                kind = op.WhichOneof("request")
                if kind == "request_put":
                    self._validate_put(op.request_put)
                elif kind == "request_range":
                    self._check_read_revision(op.request_range.revision)
                elif kind == "request_txn":
                    self._validate_txn(op.request_txn)

    def _do_txn(self, req: kv_pb2.TxnRequest, resp: kv_pb2.TxnResponse) -> None:
        succeeded = all(self._compare(c) for c in req.compare)
        resp.succeeded = succeeded
        for op in req.success if succeeded else req.failure:
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_put":
                put = out.response_put
                put.SetInParent()
                self._do_put(op.request_put, put)
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(self._do_delete(op.request_delete_range))
            elif kind == "request_range":
                out.response_range.CopyFrom(self._range(op.request_range))
            else:
                nested = out.response_txn
                nested.SetInParent()
                self._do_txn(op.request_txn, nested)

    def _compare(self, c: kv_pb2.Compare) -> bool:
        if c.range_end:
            keys = self._kv.live_keys_in(c.key, c.range_end)
            if not keys:  # as etcd: an empty range compares as a missing key
                return self._compare_one(c, None)
            return all(self._compare_one(c, self._kv.get(k)) for k in keys)
        return self._compare_one(c, self._kv.get(c.key))

    @staticmethod
    def _compare_one(c: kv_pb2.Compare, kv: kv_pb2.KeyValue | None) -> bool:
        target = c.target
        actual: int | bytes
        expected: int | bytes
        if target == _Compare.VALUE:
            # A missing key has no value: every value compare on it fails,
            # as in etcd.
            if kv is None:
                return False
            actual, expected = kv.value, c.value
        elif target == _Compare.VERSION:
            actual, expected = (kv.version if kv else 0), c.version
        elif target == _Compare.CREATE:
            actual, expected = (kv.create_revision if kv else 0), c.create_revision
        elif target == _Compare.MOD:
            actual, expected = (kv.mod_revision if kv else 0), c.mod_revision
        else:
            actual, expected = (kv.lease if kv else 0), c.lease
        result = c.result
        if result == _Compare.EQUAL:
            return actual == expected
        if result == _Compare.NOT_EQUAL:
            return actual != expected
        if result == _Compare.GREATER:
            return actual > expected  # type: ignore[operator]
        return actual < expected  # type: ignore[operator]

    # -- compaction, leases, barriers, members -------------------------------

    def _apply_compaction(self, req: kv_pb2.CompactionRequest) -> internal_pb2.CommandResult:
        if req.revision <= self._kv.compact_revision:
            raise CommandFailed(
                ErrorCode.COMPACTED,
                f"revision {req.revision} is already compacted (compact_revision={self._kv.compact_revision})",
                compact_revision=self._kv.compact_revision,
            )
        if req.revision > self._kv.revision:
            raise CommandFailed(
                ErrorCode.FUTURE_REVISION,
                f"cannot compact at {req.revision}, ahead of the current revision {self._kv.revision}",
                current_revision=self._kv.revision,
            )
        self._kv.compact(req.revision)
        return internal_pb2.CommandResult(compaction=self._header(kv_pb2.CompactionResponse()))

    def _apply_lease_grant(self, req: kv_pb2.LeaseGrantRequest) -> internal_pb2.CommandResult:
        if req.ttl <= 0 or req.ttl > limits.MAX_LEASE_TTL_SECONDS:
            raise CommandFailed(ErrorCode.INVALID_ARGUMENT, f"lease TTL {req.ttl} is out of range")
        if req.id < 0:
            raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "lease id must not be negative")
        if req.id and req.id in self._leases:
            raise CommandFailed(ErrorCode.LEASE_EXISTS, f"lease {req.id} already exists")
        lease = self._leases.grant(req.id, req.ttl)
        return internal_pb2.CommandResult(
            lease_grant=self._header(kv_pb2.LeaseGrantResponse(id=lease.id, ttl=lease.ttl))
        )

    def _lease_or_fail(self, lease_id: int) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise CommandFailed(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} not found")
        return lease

    def _revoke(self, lease: Lease) -> None:
        for key in sorted(lease.keys):
            self._delete_key(key)
        self._leases.remove(lease.id)

    def _apply_lease_revoke(self, req: kv_pb2.LeaseRevokeRequest) -> internal_pb2.CommandResult:
        self._revoke(self._lease_or_fail(req.id))
        return internal_pb2.CommandResult(lease_revoke=self._header(kv_pb2.LeaseRevokeResponse()))

    def _apply_lease_keep_alive(self, req: kv_pb2.LeaseKeepAliveRequest) -> internal_pb2.CommandResult:
        lease = self._lease_or_fail(req.id)
        self._leases.renew(lease)
        return internal_pb2.CommandResult(
            lease_keep_alive=self._header(kv_pb2.LeaseKeepAliveResponse(id=lease.id, ttl=lease.ttl))
        )

    def _apply_lease_tick(self, req: internal_pb2.LeaseTick) -> internal_pb2.CommandResult:
        for lease in self._leases.tick(req.now_ms, req.promote):
            self._revoke(lease)
        return self._done()

    def _apply_barrier(self, req: internal_pb2.Barrier) -> internal_pb2.CommandResult:
        return self._done()

    def _apply_member_set(self, req: cluster_pb2.Member) -> internal_pb2.CommandResult:
        if not req.id or not req.raft_address:
            raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "a member needs an id and a raft address")
        for other in self._members.values():
            if other.id != req.id and other.raft_address == req.raft_address:
                raise CommandFailed(
                    ErrorCode.INVALID_ARGUMENT, f"raft address {req.raft_address} belongs to {other.id}"
                )
        member = cluster_pb2.Member()
        member.CopyFrom(req)
        self._members[req.id] = member
        return self._done()

    def _apply_member_remove(self, req: cluster_pb2.MemberRemoveRequest) -> internal_pb2.CommandResult:
        if self._members.pop(req.id, None) is None:
            raise CommandFailed(ErrorCode.MEMBER_NOT_FOUND, f"member {req.id!r} not found")
        return self._done()
