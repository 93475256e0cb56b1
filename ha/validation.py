"""Checks on store requests that need no state: key and value sizes, txn
sizes, duplicate keys. The proposer runs them so that bad input never reaches
the Raft log; the state machine runs them again, with the checks that need
state, because a log entry is never trusted to have been checked.
"""

from __future__ import annotations

from typing import Any

from ha import limits
from ha.errors import CommandFailed, ErrorCode
from ha.keys import ALL_KEYS_FROM
from ha.storepb import internal_pb2, kv_pb2


def check_key(key: bytes, what: str = "key") -> None:
    if not key:
        raise CommandFailed(ErrorCode.INVALID_ARGUMENT, f"{what} is empty")
    if len(key) > limits.MAX_KEY_BYTES:
        raise CommandFailed(ErrorCode.KEY_TOO_LARGE, f"{what} is {len(key)} bytes, the limit is {limits.MAX_KEY_BYTES}")


def check_range_end(range_end: bytes) -> None:
    if len(range_end) > limits.MAX_KEY_BYTES:
        raise CommandFailed(ErrorCode.KEY_TOO_LARGE, f"range_end is {len(range_end)} bytes, too large")


def check_put(req: kv_pb2.PutRequest) -> None:
    check_key(req.key)
    if len(req.value) > limits.MAX_VALUE_BYTES:
        raise CommandFailed(
            ErrorCode.VALUE_TOO_LARGE,
            f"value is {len(req.value)} bytes, the limit is {limits.MAX_VALUE_BYTES}",
        )
    if req.lease < 0:
        raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "lease id must not be negative")


def check_delete(req: kv_pb2.DeleteRangeRequest) -> None:
    check_key(req.key)
    check_range_end(req.range_end)


def check_range(req: kv_pb2.RangeRequest) -> None:
    check_key(req.key)
    check_range_end(req.range_end)
    if req.limit < 0:
        raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "limit must not be negative")
    if req.revision < 0:
        raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "revision must not be negative")


def check_txn(req: kv_pb2.TxnRequest) -> None:
    # Every write of the API is a txn, checked by the proposer and by every
    # master's apply: each field is read once (a read builds a new wrapper).
    compare, success, failure = req.compare, req.success, req.failure
    for name, items in (("compare", compare), ("success", success), ("failure", failure)):
        if len(items) > limits.MAX_TXN_OPS:
            raise CommandFailed(
                ErrorCode.TOO_MANY_OPS,
                f"txn has {len(items)} {name} entries, the limit is {limits.MAX_TXN_OPS}",
            )
    for c in compare:
        check_key(c.key, "compare key")
        check_range_end(c.range_end)
    if success:
        _check_ops(success)
    if failure:
        _check_ops(failure)


def _check_ops(ops: Any) -> None:
    put_keys: set[bytes] = set()
    deletes: list[tuple[bytes, bytes]] = []
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            put = op.request_put
            check_put(put)
            key = put.key
            if key in put_keys:
                raise CommandFailed(ErrorCode.DUPLICATE_KEY, "duplicate key given in txn request")
            put_keys.add(key)
        elif kind == "request_delete_range":
            delete = op.request_delete_range
            check_delete(delete)
            deletes.append((delete.key, delete.range_end))
        elif kind == "request_range":
            check_range(op.request_range)
        elif kind == "request_txn":
            check_txn(op.request_txn)
        else:
            raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "empty txn operation")
    for key in put_keys:
        for start, end in deletes:
            if in_range(key, start, end):
                raise CommandFailed(ErrorCode.DUPLICATE_KEY, "a txn puts a key it also deletes")


def check_command(cmd: internal_pb2.Command) -> None:
    """The stateless checks for whatever operation `cmd` carries."""
    op = cmd.WhichOneof("op")
    if op == "put":
        check_put(cmd.put)
    elif op == "delete_range":
        check_delete(cmd.delete_range)
    elif op == "txn":
        check_txn(cmd.txn)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == ALL_KEYS_FROM:
        return key >= start
    return start <= key < end
