"""Who a request is from: the user Kubernetes' authenticators produce (name,
uid, groups, extra) and the well-known names of users and groups.

Pure data: authentication (authn.py) makes these, authorization (rbac.py,
node_authorizer.py), admission and audit read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SYSTEM_MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
# The API server's own loopback identity, as kube-apiserver's.
APISERVER_USER = "system:apiserver"


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def in_group(self, group: str) -> bool:
        return group in self.groups

    @property
    def node_name(self) -> str:
        """The node an agent's identity names ("" for anyone else), as the
        Node authorizer reads it: user system:node:NAME in system:nodes."""
        if self.name.startswith(NODE_USER_PREFIX) and NODES_GROUP in self.groups:
            return self.name[len(NODE_USER_PREFIX) :]
        return ""

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) of a service account's identity."""
        if not self.name.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = self.name[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        return (namespace, name) if namespace and name else None

    def as_json(self) -> dict[str, Any]:
        """authentication.k8s.io/v1 UserInfo."""
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


def authenticated(
    name: str,
    uid: str = "",
    groups: tuple[str, ...] | list[str] = (),
    extra: Mapping[str, list[str]] | None = None,
) -> UserInfo:
    """A user as an authenticator returns it: system:authenticated is added
    to its groups, as Kubernetes does for everyone but anonymous."""
    all_groups = tuple(dict.fromkeys([*groups, AUTHENTICATED]))
    return UserInfo(name, uid, all_groups, MappingProxyType({k: tuple(v) for k, v in (extra or {}).items()}))


ANONYMOUS_USER = UserInfo(ANONYMOUS, "", (UNAUTHENTICATED,))
# In-process callers (bootstrap, the API server's own housekeeping).
SYSTEM_USER = UserInfo(APISERVER_USER, "", (SYSTEM_MASTERS, AUTHENTICATED))


def service_account_user(
    namespace: str, name: str, uid: str = "", extra: Mapping[str, list[str]] | None = None
) -> UserInfo:
    return authenticated(
        f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
        uid,
        [SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}"],
        extra,
    )
