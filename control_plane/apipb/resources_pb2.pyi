from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PatchType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PATCH_TYPE_UNSPECIFIED: _ClassVar[PatchType]
    PATCH_TYPE_MERGE: _ClassVar[PatchType]
    PATCH_TYPE_JSON: _ClassVar[PatchType]
    PATCH_TYPE_STRATEGIC_MERGE: _ClassVar[PatchType]
    PATCH_TYPE_APPLY: _ClassVar[PatchType]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_ADDED: _ClassVar[EventType]
    EVENT_TYPE_MODIFIED: _ClassVar[EventType]
    EVENT_TYPE_DELETED: _ClassVar[EventType]
    EVENT_TYPE_BOOKMARK: _ClassVar[EventType]
    EVENT_TYPE_ERROR: _ClassVar[EventType]
PATCH_TYPE_UNSPECIFIED: PatchType
PATCH_TYPE_MERGE: PatchType
PATCH_TYPE_JSON: PatchType
PATCH_TYPE_STRATEGIC_MERGE: PatchType
PATCH_TYPE_APPLY: PatchType
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_ADDED: EventType
EVENT_TYPE_MODIFIED: EventType
EVENT_TYPE_DELETED: EventType
EVENT_TYPE_BOOKMARK: EventType
EVENT_TYPE_ERROR: EventType

class ResourceRef(_message.Message):
    __slots__ = ("group", "version", "resource", "namespace", "name", "subresource")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBRESOURCE_FIELD_NUMBER: _ClassVar[int]
    group: str
    version: str
    resource: str
    namespace: str
    name: str
    subresource: str
    def __init__(self, group: _Optional[str] = ..., version: _Optional[str] = ..., resource: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., subresource: _Optional[str] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ref", "resource_version")
    REF_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    resource_version: str
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., resource_version: _Optional[str] = ...) -> None: ...

class ObjectResponse(_message.Message):
    __slots__ = ("object",)
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    object: bytes
    def __init__(self, object: _Optional[bytes] = ...) -> None: ...

class CreateRequest(_message.Message):
    __slots__ = ("ref", "object", "dry_run", "field_manager")
    REF_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FIELD_MANAGER_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    object: bytes
    dry_run: bool
    field_manager: str
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., object: _Optional[bytes] = ..., dry_run: _Optional[bool] = ..., field_manager: _Optional[str] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("ref", "object", "dry_run", "field_manager")
    REF_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FIELD_MANAGER_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    object: bytes
    dry_run: bool
    field_manager: str
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., object: _Optional[bytes] = ..., dry_run: _Optional[bool] = ..., field_manager: _Optional[str] = ...) -> None: ...

class PatchRequest(_message.Message):
    __slots__ = ("ref", "type", "patch", "dry_run", "field_manager", "force")
    REF_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FIELD_MANAGER_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    type: PatchType
    patch: bytes
    dry_run: bool
    field_manager: str
    force: bool
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., type: _Optional[_Union[PatchType, str]] = ..., patch: _Optional[bytes] = ..., dry_run: _Optional[bool] = ..., field_manager: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteOptions(_message.Message):
    __slots__ = ("grace_period_seconds", "propagation_policy", "precondition_uid", "precondition_resource_version", "dry_run")
    GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_POLICY_FIELD_NUMBER: _ClassVar[int]
    PRECONDITION_UID_FIELD_NUMBER: _ClassVar[int]
    PRECONDITION_RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    grace_period_seconds: int
    propagation_policy: str
    precondition_uid: str
    precondition_resource_version: str
    dry_run: bool
    def __init__(self, grace_period_seconds: _Optional[int] = ..., propagation_policy: _Optional[str] = ..., precondition_uid: _Optional[str] = ..., precondition_resource_version: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ref", "options")
    REF_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    options: DeleteOptions
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., options: _Optional[_Union[DeleteOptions, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("ref", "label_selector", "field_selector", "limit", "resource_version", "resource_version_match")
    REF_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    FIELD_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_MATCH_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    label_selector: str
    field_selector: str
    limit: int
    resource_version: str
    resource_version_match: str
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., label_selector: _Optional[str] = ..., field_selector: _Optional[str] = ..., limit: _Optional[int] = ..., resource_version: _Optional[str] = ..., resource_version_match: _Optional[str] = ..., **kwargs) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("resource_version", "items")
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    resource_version: str
    items: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, resource_version: _Optional[str] = ..., items: _Optional[_Iterable[bytes]] = ..., **kwargs) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("selection", "options")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    selection: ListRequest
    options: DeleteOptions
    def __init__(self, selection: _Optional[_Union[ListRequest, _Mapping]] = ..., options: _Optional[_Union[DeleteOptions, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("ref", "label_selector", "field_selector", "resource_version", "allow_bookmarks", "timeout_seconds")
    REF_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    FIELD_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BOOKMARKS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    label_selector: str
    field_selector: str
    resource_version: str
    allow_bookmarks: bool
    timeout_seconds: float
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., label_selector: _Optional[str] = ..., field_selector: _Optional[str] = ..., resource_version: _Optional[str] = ..., allow_bookmarks: _Optional[bool] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "object")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    object: bytes
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., object: _Optional[bytes] = ...) -> None: ...
