"""Builders for store commands and results, so tests read as what they do."""

from __future__ import annotations

from typing import Any

from ha.state_machine import StateMachine
from ha.storepb import cluster_pb2, internal_pb2, kv_pb2

Compare = kv_pb2.Compare


def command(**op: Any) -> bytes:
    return internal_pb2.Command(**op).SerializeToString()


def put(key: bytes, value: bytes = b"v", **kw: Any) -> bytes:
    return command(put=kv_pb2.PutRequest(key=key, value=value, **kw))


def delete(key: bytes, range_end: bytes = b"", prev_kv: bool = False) -> bytes:
    return command(delete_range=kv_pb2.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv))


def txn(compare: list[kv_pb2.Compare], success: list[kv_pb2.RequestOp], failure: list[kv_pb2.RequestOp] = ()) -> bytes:  # type: ignore[assignment]
    return command(txn=kv_pb2.TxnRequest(compare=compare, success=success, failure=list(failure)))


def op_put(key: bytes, value: bytes = b"v", **kw: Any) -> kv_pb2.RequestOp:
    return kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=value, **kw))


def op_delete(key: bytes, range_end: bytes = b"") -> kv_pb2.RequestOp:
    return kv_pb2.RequestOp(request_delete_range=kv_pb2.DeleteRangeRequest(key=key, range_end=range_end))


def op_range(key: bytes, range_end: bytes = b"") -> kv_pb2.RequestOp:
    return kv_pb2.RequestOp(request_range=kv_pb2.RangeRequest(key=key, range_end=range_end))


def cmp_value(key: bytes, value: bytes, result: kv_pb2.Compare.CompareResult = Compare.EQUAL) -> kv_pb2.Compare:
    return Compare(key=key, target=Compare.VALUE, result=result, value=value)


def cmp_mod(key: bytes, revision: int, result: kv_pb2.Compare.CompareResult = Compare.EQUAL) -> kv_pb2.Compare:
    return Compare(key=key, target=Compare.MOD, result=result, mod_revision=revision)


def cmp_version(key: bytes, version: int, result: kv_pb2.Compare.CompareResult = Compare.EQUAL) -> kv_pb2.Compare:
    return Compare(key=key, target=Compare.VERSION, result=result, version=version)


def cmp_create(key: bytes, revision: int, result: kv_pb2.Compare.CompareResult = Compare.EQUAL) -> kv_pb2.Compare:
    return Compare(key=key, target=Compare.CREATE, result=result, create_revision=revision)


def compact(revision: int) -> bytes:
    return command(compaction=kv_pb2.CompactionRequest(revision=revision))


def grant(ttl: int, lease_id: int = 0) -> bytes:
    return command(lease_grant=kv_pb2.LeaseGrantRequest(ttl=ttl, id=lease_id))


def revoke(lease_id: int) -> bytes:
    return command(lease_revoke=kv_pb2.LeaseRevokeRequest(id=lease_id))


def keep_alive(lease_id: int) -> bytes:
    return command(lease_keep_alive=kv_pb2.LeaseKeepAliveRequest(id=lease_id))


def tick(now_ms: int, promote: bool = False, interval_ms: int = 500) -> bytes:
    return command(lease_tick=internal_pb2.LeaseTick(now_ms=now_ms, interval_ms=interval_ms, promote=promote))


def member(member_id: str, raft: str, grpc: str = "") -> bytes:
    return command(member_set=cluster_pb2.Member(id=member_id, raft_address=raft, grpc_address=grpc))


def apply(sm: StateMachine, raw: bytes) -> internal_pb2.CommandResult:
    return internal_pb2.CommandResult.FromString(sm.apply(raw))


def error_code(result: internal_pb2.CommandResult) -> str | None:
    if result.WhichOneof("result") != "error":
        return None
    return internal_pb2.CommandError.Code.Name(result.error.code)


def values(sm: StateMachine, key: bytes = b"\0", range_end: bytes = b"\0", revision: int = 0) -> dict[bytes, bytes]:
    resp = sm.range(kv_pb2.RangeRequest(key=key, range_end=range_end, revision=revision))
    return {kv.key: kv.value for kv in resp.kvs}
