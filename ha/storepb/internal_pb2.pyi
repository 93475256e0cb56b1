from ha.storepb import kv_pb2 as _kv_pb2
from ha.storepb import cluster_pb2 as _cluster_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseTick(_message.Message):
    __slots__ = ("now_ms", "interval_ms", "promote")
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    now_ms: int
    interval_ms: int
    promote: bool
    def __init__(self, now_ms: _Optional[int] = ..., interval_ms: _Optional[int] = ..., promote: _Optional[bool] = ...) -> None: ...

class Barrier(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Command(_message.Message):
    __slots__ = ("put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "lease_keep_alive", "lease_tick", "barrier", "member_set", "member_remove")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TICK_FIELD_NUMBER: _ClassVar[int]
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_SET_FIELD_NUMBER: _ClassVar[int]
    MEMBER_REMOVE_FIELD_NUMBER: _ClassVar[int]
    put: _kv_pb2.PutRequest
    delete_range: _kv_pb2.DeleteRangeRequest
    txn: _kv_pb2.TxnRequest
    compaction: _kv_pb2.CompactionRequest
    lease_grant: _kv_pb2.LeaseGrantRequest
    lease_revoke: _kv_pb2.LeaseRevokeRequest
    lease_keep_alive: _kv_pb2.LeaseKeepAliveRequest
    lease_tick: LeaseTick
    barrier: Barrier
    member_set: _cluster_pb2.Member
    member_remove: _cluster_pb2.MemberRemoveRequest
    def __init__(self, put: _Optional[_Union[_kv_pb2.PutRequest, _Mapping]] = ..., delete_range: _Optional[_Union[_kv_pb2.DeleteRangeRequest, _Mapping]] = ..., txn: _Optional[_Union[_kv_pb2.TxnRequest, _Mapping]] = ..., compaction: _Optional[_Union[_kv_pb2.CompactionRequest, _Mapping]] = ..., lease_grant: _Optional[_Union[_kv_pb2.LeaseGrantRequest, _Mapping]] = ..., lease_revoke: _Optional[_Union[_kv_pb2.LeaseRevokeRequest, _Mapping]] = ..., lease_keep_alive: _Optional[_Union[_kv_pb2.LeaseKeepAliveRequest, _Mapping]] = ..., lease_tick: _Optional[_Union[LeaseTick, _Mapping]] = ..., barrier: _Optional[_Union[Barrier, _Mapping]] = ..., member_set: _Optional[_Union[_cluster_pb2.Member, _Mapping]] = ..., member_remove: _Optional[_Union[_cluster_pb2.MemberRemoveRequest, _Mapping]] = ...) -> None: ...

class CommandError(_message.Message):
    __slots__ = ("code", "message", "compact_revision", "current_revision")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INTERNAL: _ClassVar[CommandError.Code]
        INVALID_ARGUMENT: _ClassVar[CommandError.Code]
        KEY_TOO_LARGE: _ClassVar[CommandError.Code]
        VALUE_TOO_LARGE: _ClassVar[CommandError.Code]
        TOO_MANY_OPS: _ClassVar[CommandError.Code]
        DUPLICATE_KEY: _ClassVar[CommandError.Code]
        LEASE_NOT_FOUND: _ClassVar[CommandError.Code]
        LEASE_EXISTS: _ClassVar[CommandError.Code]
        COMPACTED: _ClassVar[CommandError.Code]
        FUTURE_REVISION: _ClassVar[CommandError.Code]
        UNKNOWN_OPERATION: _ClassVar[CommandError.Code]
        MEMBER_NOT_FOUND: _ClassVar[CommandError.Code]
    INTERNAL: CommandError.Code
    INVALID_ARGUMENT: CommandError.Code
    KEY_TOO_LARGE: CommandError.Code
    VALUE_TOO_LARGE: CommandError.Code
    TOO_MANY_OPS: CommandError.Code
    DUPLICATE_KEY: CommandError.Code
    LEASE_NOT_FOUND: CommandError.Code
    LEASE_EXISTS: CommandError.Code
    COMPACTED: CommandError.Code
    FUTURE_REVISION: CommandError.Code
    UNKNOWN_OPERATION: CommandError.Code
    MEMBER_NOT_FOUND: CommandError.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    code: CommandError.Code
    message: str
    compact_revision: int
    current_revision: int
    def __init__(self, code: _Optional[_Union[CommandError.Code, str]] = ..., message: _Optional[str] = ..., compact_revision: _Optional[int] = ..., current_revision: _Optional[int] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "lease_keep_alive", "done", "error")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    put: _kv_pb2.PutResponse
    delete_range: _kv_pb2.DeleteRangeResponse
    txn: _kv_pb2.TxnResponse
    compaction: _kv_pb2.CompactionResponse
    lease_grant: _kv_pb2.LeaseGrantResponse
    lease_revoke: _kv_pb2.LeaseRevokeResponse
    lease_keep_alive: _kv_pb2.LeaseKeepAliveResponse
    done: _kv_pb2.ResponseHeader
    error: CommandError
    def __init__(self, put: _Optional[_Union[_kv_pb2.PutResponse, _Mapping]] = ..., delete_range: _Optional[_Union[_kv_pb2.DeleteRangeResponse, _Mapping]] = ..., txn: _Optional[_Union[_kv_pb2.TxnResponse, _Mapping]] = ..., compaction: _Optional[_Union[_kv_pb2.CompactionResponse, _Mapping]] = ..., lease_grant: _Optional[_Union[_kv_pb2.LeaseGrantResponse, _Mapping]] = ..., lease_revoke: _Optional[_Union[_kv_pb2.LeaseRevokeResponse, _Mapping]] = ..., lease_keep_alive: _Optional[_Union[_kv_pb2.LeaseKeepAliveResponse, _Mapping]] = ..., done: _Optional[_Union[_kv_pb2.ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[CommandError, _Mapping]] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ("revision", "sub", "kv", "tombstone")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SUB_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    sub: int
    kv: _kv_pb2.KeyValue
    tombstone: bool
    def __init__(self, revision: _Optional[int] = ..., sub: _Optional[int] = ..., kv: _Optional[_Union[_kv_pb2.KeyValue, _Mapping]] = ..., tombstone: _Optional[bool] = ...) -> None: ...

class KeyHistory(_message.Message):
    __slots__ = ("key", "versions")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    def __init__(self, key: _Optional[bytes] = ..., versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("id", "ttl", "deadline_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    ttl: int
    deadline_ms: int
    def __init__(self, id: _Optional[int] = ..., ttl: _Optional[int] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("format", "revision", "compact_revision", "keys", "leases", "members", "lease_clock_ms", "next_lease_id")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LEASE_CLOCK_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    format: int
    revision: int
    compact_revision: int
    keys: _containers.RepeatedCompositeFieldContainer[KeyHistory]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    members: _containers.RepeatedCompositeFieldContainer[_cluster_pb2.Member]
    lease_clock_ms: int
    next_lease_id: int
    def __init__(self, format: _Optional[int] = ..., revision: _Optional[int] = ..., compact_revision: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[KeyHistory, _Mapping]]] = ..., leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[_cluster_pb2.Member, _Mapping]]] = ..., lease_clock_ms: _Optional[int] = ..., next_lease_id: _Optional[int] = ...) -> None: ...
