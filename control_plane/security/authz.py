"""Authorization's common shape, as kube-apiserver's: the attributes of a
request (who, verb, what), authorizers that answer allow, deny or no
opinion, and a chain that asks them in order (the first allow or deny
wins; no one allowing is a deny).

The authorizers themselves live beside this: rbac.py (roles and
bindings), node_authorizer.py (what an agent may touch). The privileged
group system:masters is allowed everything before either is asked, as in
Kubernetes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from control_plane.security.identity import SYSTEM_MASTERS, UserInfo


@dataclass(frozen=True)
class Attributes:
    user: UserInfo
    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = "v1"
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    # A non-resource request's path (/version, /metrics, ...).
    path: str = ""
    # A list or watch's selectors (the Node authorizer reads them).
    field_selector: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no-opinion"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


NO_OPINION = Verdict(Decision.NO_OPINION)


class Authorizer(Protocol):
    def authorize(self, attrs: Attributes) -> Verdict: ...


class PrivilegedGroups:
    """system:masters may do anything (kube-apiserver's first authorizer)."""

    def __init__(self, groups: Sequence[str] = (SYSTEM_MASTERS,)):
        self.groups = frozenset(groups)

    def authorize(self, attrs: Attributes) -> Verdict:
        if self.groups.intersection(attrs.user.groups):
            return Verdict(Decision.ALLOW, "privileged group")
        return NO_OPINION


class AlwaysAllow:
    """--authorization-mode=AlwaysAllow: for experiments on a trusted machine."""

    def authorize(self, attrs: Attributes) -> Verdict:
        return Verdict(Decision.ALLOW, "AlwaysAllow")


class Chain:
    def __init__(self, authorizers: Sequence[Authorizer]):
        self.authorizers = list(authorizers)

    def authorize(self, attrs: Attributes) -> Verdict:
        reasons = []
        for authorizer in self.authorizers:
            verdict = authorizer.authorize(attrs)
            if verdict.decision is not Decision.NO_OPINION:
                return verdict
            if verdict.reason:
                reasons.append(verdict.reason)
        return Verdict(Decision.DENY, ", ".join(reasons))


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """kube-apiserver's 403 message for a request it refused."""
    user = f'User "{attrs.user.name}"'
    if not attrs.resource_request:
        message = f"forbidden: {user} cannot {attrs.verb} path {attrs.path!r}".replace("'", '"')
    else:
        what = attrs.resource + (f" {attrs.name!r}".replace("'", '"') if attrs.name else "")
        if attrs.api_group:
            what = f"{attrs.resource}.{attrs.api_group}" + (f' "{attrs.name}"' if attrs.name else "")
        scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        message = (
            f"{what} is forbidden: {user} cannot {attrs.verb} resource "
            f'"{attrs.combined_resource}" in API group "{attrs.api_group}" {scope}'
        )
    return f"{message}: {reason}" if reason else message
