"""Who may use the store's raw gRPC services (KV and Cluster), which bypass
every API semantic, as etcd's client port does: cluster administrators
only (group system:masters), each call authenticated and audited.

`guarded(servicer, access, service)` stands in for a store servicer: the
same methods, each checking and auditing its caller before it runs, so
the store itself (ha/) stays free of users and policies, and the API's
own service pays nothing for the check.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from control_plane.apis.errors import ApiError
from control_plane.apiserver.access import Access
from control_plane.security.audit import AuditEvent
from control_plane.security.authz import Attributes
from control_plane.security.identity import SYSTEM_MASTERS
from ha.kv_service import KVService
from ha.server import SERVICE_NAMES

DENIED = "the store's KV and Cluster services are for cluster administrators (group system:masters) only"


class _Guard:
    def __init__(self, access: Access, service: str):
        self.access = access
        self.service = service

    async def admit(self, context: grpc.aio.ServicerContext, method: str) -> AuditEvent | None:
        access = self.access
        try:
            user = await access.authenticate_grpc(context)
        except ApiError:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Unauthorized")
            raise
        path = f"/{self.service}/{method}"
        attrs = Attributes(user, method.lower(), resource_request=False, path=path)
        audit = access.begin_grpc_audit(
            attrs, lambda: path, context, lambda: str(dict(context.invocation_metadata() or ()).get("user-agent", ""))
        )
        if SYSTEM_MASTERS not in user.groups:
            access.finish_audit(audit, 403)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f'User "{user.name}": {DENIED}')
        return audit

    def finish(self, audit: AuditEvent | None, context: grpc.aio.ServicerContext, failed: bool) -> None:
        if audit is None:
            return
        ok = not failed and context.code() in (None, grpc.StatusCode.OK)
        self.access.finish_audit(audit, 200 if ok else 500)


def _unary(guard: _Guard, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        audit = await guard.admit(context, name)
        failed = True
        try:
            result = await method(request, context)
            failed = False
            return result
        finally:
            guard.finish(audit, context, failed)

    return call


def _streaming(guard: _Guard, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        audit = await guard.admit(context, name)
        guard.access.audit_started(audit)
        failed = True
        try:
            async for response in method(request, context):
                yield response
            failed = False
        finally:
            guard.finish(audit, context, failed)

    return call


class _Guarded:
    """A servicer's methods, each behind the guard."""

    def __init__(self, servicer: Any, guard: _Guard):
        for name, method in inspect.getmembers(servicer, inspect.ismethod):
            if not name[:1].isupper():
                continue
            wrap = _streaming if inspect.isasyncgenfunction(method) else _unary
            setattr(self, name, wrap(guard, name, method))


def guarded(servicer: Any, access: Access, service: str) -> Any:
    return _Guarded(servicer, _Guard(access, service))


def store_guard(access: Access) -> Callable[[Any], Any]:
    """What the master hands StoreServer.register to wrap KV and Cluster."""

    def wrap(servicer: Any) -> Any:
        if access.authenticator is None and access.auditor is None:
            # --insecure without an audit log: every caller is an admin and
            # nothing is recorded, so there is nothing to stand in for.
            return servicer
        kv_name, cluster_name = SERVICE_NAMES
        return guarded(servicer, access, kv_name if isinstance(servicer, KVService) else cluster_name)

    return wrap
