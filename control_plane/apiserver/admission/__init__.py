"""Admission: what runs between authorization and storage, as
kube-apiserver's admission chain: mutating plugins first (they may change
the object), then validating ones (they may only refuse, or, for
ResourceQuota, add their own store operations to the write's transaction).

A plugin is a small class with a `name`, the operations and resources it
handles, and `admit` (mutating) and/or `validate`. Refusing is raising an
ApiError (403 Forbidden as Kubernetes answers, usually). The chain in
`default_chain` is Kubernetes' order of the plugins raftkube has:
NamespaceLifecycle, LimitRanger, ServiceAccount, NodeRestriction,
DefaultTolerationSeconds, ResourceQuota.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from control_plane.apis.errors import ApiError
from control_plane.apis.resources import Resource
from control_plane.security.identity import UserInfo
from ha.storepb import kv_pb2

Object = dict[str, Any]

CREATE, UPDATE, DELETE, CONNECT = "CREATE", "UPDATE", "DELETE", "CONNECT"


class Reader(Protocol):
    """Reads plugins make: from the API server's caches where it has them
    (as Kubernetes' plugins read their listers), else, or when `fresh`,
    from this master's applied state."""

    async def read(self, resource: Resource, namespace: str, name: str, fresh: bool = False) -> Object | None: ...

    async def read_all(
        self, resource: Resource, namespace: str, revision: int = 0, fresh: bool = False
    ) -> tuple[int, list[Object]]:
        """The objects (at a revision; 0: the latest known) and the store
        revision they reflect: every change up to it is in them."""
        ...


@dataclass
class AdmissionRequest:
    operation: str
    resource: Resource
    namespace: str
    name: str
    # The object being written (plugins' admit() may change it); None on delete.
    obj: Object | None
    # The stored object before the write (updates, deletes).
    old: Object | None
    user: UserInfo
    subresource: str = ""
    dry_run: bool = False
    # What validating plugins add to the write's store transaction.
    compares: list[kv_pb2.Compare] = field(default_factory=list)
    ops: list[kv_pb2.RequestOp] = field(default_factory=list)
    # Held until the write's transaction is answered (a plugin may lock).
    stack: contextlib.AsyncExitStack | None = None
    # How many times this write was evaluated before (a race lost): read fresh then.
    attempt: int = 0

    def reset_store_ops(self) -> None:
        self.compares.clear()
        self.ops.clear()


class Plugin:
    """One admission plugin; subclasses set what they handle and override
    admit and/or validate."""

    name: ClassVar[str] = ""
    operations: ClassVar[frozenset[str]] = frozenset((CREATE, UPDATE, DELETE))
    # Plurals handled; empty: every resource.
    resources: ClassVar[frozenset[str]] = frozenset()
    mutating: ClassVar[bool] = False
    validating: ClassVar[bool] = True
    # Only writes of the object itself, not of its subresources (status, binding...).
    main_resource_only: ClassVar[bool] = False

    def handles(self, req: AdmissionRequest) -> bool:
        if self.main_resource_only and req.subresource:
            return False
        return req.operation in self.operations and (not self.resources or req.resource.plural in self.resources)

    async def admit(self, req: AdmissionRequest) -> None:
        """Mutate req.obj (mutating plugins)."""

    async def validate(self, req: AdmissionRequest) -> None:
        """Refuse by raising ApiError (validating plugins)."""


class Chain:
    def __init__(self, plugins: Sequence[Plugin]):
        self.plugins = list(plugins)
        self._mutating = [p for p in self.plugins if p.mutating]
        self._validating = [p for p in self.plugins if p.validating]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.plugins]

    async def admit(self, req: AdmissionRequest) -> None:
        for plugin in self._mutating:
            if plugin.handles(req):
                await plugin.admit(req)

    async def validate(self, req: AdmissionRequest) -> None:
        for plugin in self._validating:
            if plugin.handles(req):
                await plugin.validate(req)


def forbidden(req: AdmissionRequest, why: str) -> ApiError:
    """The 403 Kubernetes' admission plugins answer: `pods "x" is forbidden: why`."""
    what = req.resource.plural + (f".{req.resource.group}" if req.resource.group else "")
    name = req.name or ((req.obj or {}).get("metadata") or {}).get("generateName", "")
    return ApiError(
        403,
        "Forbidden",
        f'{what} "{name}" is forbidden: {why}' if name else f"{what} is forbidden: {why}",
        {"name": name, "group": req.resource.group, "kind": req.resource.plural},
    )
