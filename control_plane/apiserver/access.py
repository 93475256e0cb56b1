"""The steps every API request takes before the service layer, shared by the
REST and gRPC front ends: authentication (who), authorization (may they),
and audit (what was asked and answered), in kube-apiserver's order.

Also here: what a REST path asks for as authorization attributes, parsed
as Kubernetes' RequestInfoFactory parses it (before any routing, so a
request for a resource that does not exist is refused, not told it does
not exist), and what identity a gRPC peer's certificate carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from cryptography import x509

from control_plane.apis import errors
from control_plane.apis.errors import ApiError
from control_plane.security.audit import AuditEvent, Auditor
from control_plane.security.authn import Authenticator, Credentials, Unauthorized
from control_plane.security.authz import Attributes, Authorizer, Chain, PrivilegedGroups, forbidden_message
from control_plane.security.identity import (
    ANONYMOUS,
    AUTHENTICATED,
    SYSTEM_MASTERS,
    UNAUTHENTICATED,
    UserInfo,
    authenticated,
    service_account_user,
)
from control_plane.security.pki import identity_of

log = logging.getLogger(__name__)

# Everyone is this user on a master started with --insecure (no TLS, no
# authentication), as on kube-apiserver's old insecure port.
UNSECURED_USER = UserInfo("system:unsecured", "", (SYSTEM_MASTERS, AUTHENTICATED))
NAMESPACE_SUBRESOURCES = frozenset(("status", "finalize"))
Identity = tuple[str, tuple[str, ...]]


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


class Access:
    def __init__(
        self,
        authenticator: Authenticator | None,
        authorizer: Authorizer | None = None,
        auditor: Auditor | None = None,
    ):
        # None: --insecure, every request is UNSECURED_USER.
        self.authenticator = authenticator
        self.authorizer: Authorizer = authorizer or Chain([PrivilegedGroups()])
        self.auditor = auditor
        self._pem_identities: dict[bytes, Identity] = {}

    async def authenticate(self, credentials: Credentials) -> UserInfo:
        if self.authenticator is None:
            return UNSECURED_USER
        try:
            return await self.authenticator.authenticate(credentials)
        except Unauthorized as e:
            log.info("refused a request: %s", e)
            raise unauthorized() from None

    def impersonate(self, user: UserInfo, headers: Iterable[tuple[str, str]]) -> UserInfo:
        """The user a request acts as (Impersonate-User, -Group, -Uid,
        -Extra-* headers), as Kubernetes allows it: the caller must be
        authorized to `impersonate` each of them."""
        name, uid = "", ""
        groups: list[str] = []
        extra: dict[str, list[str]] = {}
        for key, value in headers:
            k = key.lower()
            if k == "impersonate-user":
                name = value
            elif k == "impersonate-group":
                groups.append(value)
            elif k == "impersonate-uid":
                uid = value
            elif k.startswith("impersonate-extra-"):
                extra.setdefault(k.removeprefix("impersonate-extra-"), []).append(value)
        if not name:
            if groups or uid or extra:
                raise errors.bad_request("impersonating groups, a uid or extras requires Impersonate-User")
            return user
        checks = []
        account = UserInfo(name).service_account
        if account is not None:
            checks.append(
                Attributes(user, "impersonate", resource="serviceaccounts", namespace=account[0], name=account[1])
            )
        else:
            checks.append(Attributes(user, "impersonate", resource="users", name=name))
        checks += [Attributes(user, "impersonate", resource="groups", name=g) for g in groups]
        if uid:
            checks.append(Attributes(user, "impersonate", api_group="authentication.k8s.io", resource="uids", name=uid))
        for key, values in extra.items():
            for value in values:
                checks.append(
                    Attributes(
                        user,
                        "impersonate",
                        api_group="authentication.k8s.io",
                        resource="userextras",
                        subresource=key,
                        name=value,
                    )
                )
        for check in checks:
            verdict = self.authorizer.authorize(check)
            if not verdict.allowed:
                raise ApiError(
                    403, "Forbidden", forbidden_message(check, verdict.reason if verdict.reason != "RBAC" else "")
                )
        if account is not None:
            return service_account_user(account[0], account[1], uid, extra)
        if name == ANONYMOUS:
            return UserInfo(name, uid, tuple(dict.fromkeys([*groups, UNAUTHENTICATED])))
        return authenticated(name, uid, groups, extra)

    def authorize(self, attrs: Attributes, audit: AuditEvent | None = None) -> None:
        verdict = self.authorizer.authorize(attrs)
        if audit is not None:
            audit.annotations["authorization.k8s.io/decision"] = "allow" if verdict.allowed else "forbid"
            if verdict.reason:
                audit.annotations["authorization.k8s.io/reason"] = verdict.reason
        if not verdict.allowed:
            reason = "" if verdict.reason in ("", "RBAC") else verdict.reason
            raise ApiError(
                403,
                "Forbidden",
                forbidden_message(attrs, reason),
                {"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}
                if attrs.resource_request
                else {},
            )

    def begin_audit(
        self, attrs: Attributes, request_uri: str, source_ips: Iterable[str], user_agent: str
    ) -> AuditEvent | None:
        if self.auditor is None:
            return None
        return self.auditor.begin(attrs, request_uri, source_ips, user_agent)

    def audit_started(self, event: AuditEvent | None) -> None:
        """A long-running request (a watch) began answering."""
        if event is not None and self.auditor is not None:
            self.auditor.started(event)

    def finish_audit(
        self, event: AuditEvent | None, code: int, response: Any = None, status: dict[str, Any] | None = None
    ) -> None:
        if event is not None and self.auditor is not None:
            self.auditor.finish(event, code, response, status)

    # -- gRPC peers -------------------------------------------------------------------

    def begin_grpc_audit(
        self,
        attrs: Attributes,
        request_uri: Callable[[], str],
        context: grpc.aio.ServicerContext,
        user_agent: Callable[[], str],
    ) -> AuditEvent | None:
        """begin_audit for a gRPC call. The URI, the peer and the user agent
        are made or read only when requests are audited: reading a call's
        context costs more than a store write's own Python work."""
        if self.auditor is None:
            return None
        return self.begin_audit(attrs, request_uri(), [peer_ip(context)], user_agent())

    async def authenticate_grpc(self, context: grpc.aio.ServicerContext) -> UserInfo:
        """A gRPC caller's user. Without authentication (--insecure) the
        call's metadata and peer are not even read: reading them costs more
        than a store write's own Python work."""
        if self.authenticator is None:
            return UNSECURED_USER
        return await self.authenticate(self.grpc_credentials(context))

    def grpc_credentials(self, context: grpc.aio.ServicerContext) -> Credentials:
        """A gRPC caller's verified client certificate (mTLS), and its
        authorization metadata."""
        authorization = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = str(value)
        pems = (context.auth_context() or {}).get("x509_pem_cert")
        if not pems:
            return Credentials(None, authorization)
        pem = next(iter(pems))
        identity = self._pem_identities.get(pem)
        if identity is None:
            user, groups = identity_of(x509.load_pem_x509_certificate(pem))
            identity = (user, tuple(groups))
            if len(self._pem_identities) > 10_000:
                self._pem_identities.clear()
            self._pem_identities[pem] = identity
        return Credentials(identity, authorization)


def peer_ip(context: grpc.aio.ServicerContext) -> str:
    """ipv4:127.0.0.1:5555 -> 127.0.0.1"""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]").replace("%5B", "").replace("%5D", "")
    return rest.rpartition(":")[0] if kind == "ipv4" else peer


def certificate_identity(peercert: Mapping[str, Any] | None) -> Identity | None:
    """The identity in a verified peer certificate as Python's ssl module
    gives it (SSLObject.getpeercert()): CN and the O values."""
    if not peercert:
        return None
    cn = ""
    groups: list[str] = []
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                groups.append(value)
    return cn, tuple(groups)


def kube_verb(method: str, has_name: bool, watch: bool) -> str:
    """The authorization verb of a resource request (apply is a patch)."""
    if method == "GET" or method == "HEAD":
        return "watch" if watch else ("get" if has_name else "list")
    if method == "DELETE":
        return "delete" if has_name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def request_attributes(method: str, path: str, query: Mapping[str, str], user: UserInfo) -> Attributes:
    """What a REST request asks to do, as Kubernetes' RequestInfoFactory
    reads a path."""
    parts = [p for p in path.split("/") if p]
    watch = query.get("watch", "false").lower() in ("true", "1", "")
    if parts and parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts and parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(user, method.lower(), resource_request=False, path=path or "/")
    if rest[0] == "watch":  # the old /watch/ paths
        watch, rest = True, rest[1:]
        if not rest:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    return Attributes(
        user,
        kube_verb(method, bool(name), watch),
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        path=path,
        field_selector=query.get("fieldSelector", ""),
    )
