"""RBAC: authorization by Roles, ClusterRoles and their bindings
(rbac.authorization.k8s.io/v1), with Kubernetes' matching rules:

- ClusterRoleBindings grant their ClusterRole's rules everywhere;
  RoleBindings grant a Role's or a ClusterRole's rules in their namespace.
- A subject is a User (by name), a Group, or a ServiceAccount (namespace
  defaults to the binding's).
- A rule matches a request when its verbs, apiGroups, resources (with
  `*`, `pods/log`, `*/scale`) and resourceNames (empty: any) match, or, for
  a non-resource request, its nonResourceURLs (exact, or a `prefix*`).

Also here: the rules a user holds in a namespace (SelfSubjectRulesReview)
and the escalation check: a user may create or change a Role only with
rules it holds itself, and bind a role only if it holds its rules (or may
`bind` / `escalate` it), so RBAC cannot be used to gain permissions.

Reads come from a PolicySource (the API server's informer caches);
resolved rules are cached per user and namespace until any RBAC object
changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from control_plane.security.authz import NO_OPINION, Attributes, Decision, Verdict
from control_plane.security.identity import SERVICE_ACCOUNT_PREFIX, UserInfo

Object = dict[str, Any]
Rule = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"


class PolicySource(Protocol):
    """Where the RBAC objects are read from."""

    # Bumped whenever any RBAC object changes (cache invalidation).
    generation: int

    def cluster_role_bindings(self) -> Iterable[Object]: ...

    def role_bindings(self, namespace: str) -> Iterable[Object]: ...

    def cluster_role(self, name: str) -> Object | None: ...

    def role(self, namespace: str, name: str) -> Object | None: ...


def _has(values: Iterable[str] | None, wanted: str) -> bool:
    values = values or ()
    return "*" in values or wanted in values


def resource_matches(rule: Rule, attrs: Attributes) -> bool:
    combined = attrs.combined_resource
    for resource in rule.get("resources") or ():
        if resource in ("*", combined):
            return True
        if attrs.subresource and resource == f"*/{attrs.subresource}":
            return True
    return False


def url_matches(rule: Rule, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or ():
        if url in ("*", path):
            return True
        if url.endswith("*") and path.startswith(url[:-1]):
            return True
    return False


def rule_allows(rule: Rule, attrs: Attributes) -> bool:
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return url_matches(rule, attrs.path)
    if not _has(rule.get("apiGroups"), attrs.api_group) or not resource_matches(rule, attrs):
        return False
    names = rule.get("resourceNames") or ()
    return not names or attrs.name in names


def subject_matches(subject: Object, user: UserInfo, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = str(subject.get("name") or "")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.name == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"
    return False


def _binds(binding: Object, user: UserInfo) -> bool:
    namespace = str((binding.get("metadata") or {}).get("namespace") or "")
    return any(subject_matches(s, user, namespace) for s in binding.get("subjects") or ())


class RbacAuthorizer:
    def __init__(self, source: PolicySource, cache_size: int = 4096):
        self.source = source
        self.cache_size = cache_size
        self._cache: dict[tuple[str, tuple[str, ...], str], list[Rule]] = {}
        self._cache_generation = -1

    def authorize(self, attrs: Attributes) -> Verdict:
        for rule in self.rules(attrs.user, attrs.namespace if attrs.resource_request else ""):
            if rule_allows(rule, attrs):
                return Verdict(Decision.ALLOW, "RBAC")
        return NO_OPINION

    def rules(self, user: UserInfo, namespace: str = "") -> list[Rule]:
        """Every rule the user holds in a namespace ("" = cluster-wide only)."""
        if self._cache_generation != self.source.generation:
            self._cache.clear()
            self._cache_generation = self.source.generation
        key = (user.name, user.groups, namespace)
        cached = self._cache.get(key)
        if cached is None:
            cached = list(self._resolve(user, namespace))
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _resolve(self, user: UserInfo, namespace: str) -> Iterator[Rule]:
        for binding in self.source.cluster_role_bindings():
            if _binds(binding, user):
                yield from self._role_rules(binding, "")
        if namespace:
            for binding in self.source.role_bindings(namespace):
                if _binds(binding, user):
                    yield from self._role_rules(binding, namespace)

    def _role_rules(self, binding: Object, namespace: str) -> list[Rule]:
        ref = binding.get("roleRef") or {}
        name = str(ref.get("name") or "")
        role = self.source.cluster_role(name) if ref.get("kind") == "ClusterRole" else None
        if ref.get("kind") == "Role" and namespace:
            role = self.source.role(namespace, name)
        return [r for r in (role or {}).get("rules") or () if isinstance(r, dict)]

    # -- escalation ----------------------------------------------------------------------

    def covers(self, user: UserInfo, namespace: str, wanted: Iterable[Rule]) -> list[Rule]:
        """The wanted rules the user does not hold itself (empty: it holds them all)."""
        held = self.rules(user, namespace)
        return [rule for rule in wanted if not all(_covered(held, atom) for atom in _atoms(rule))]


def _atoms(rule: Rule) -> Iterator[Rule]:
    """A rule broken into one verb, group, resource and name each (as
    Kubernetes' escalation check does), so each can be checked alone."""
    verbs = rule.get("verbs") or ()
    urls = rule.get("nonResourceURLs") or ()
    for verb in verbs:
        for url in urls:
            yield {"verbs": [verb], "nonResourceURLs": [url]}
        for group in rule.get("apiGroups") or ():
            for resource in rule.get("resources") or ():
                for name in rule.get("resourceNames") or [""]:
                    yield {"verbs": [verb], "apiGroups": [group], "resources": [resource], "name": name}


def _covered(held: list[Rule], atom: Rule) -> bool:
    verb = atom["verbs"][0]
    for rule in held:
        if not _has(rule.get("verbs"), verb):
            continue
        if "nonResourceURLs" in atom:
            url = atom["nonResourceURLs"][0]
            held_urls = rule.get("nonResourceURLs") or ()
            if _wildcard_held(held_urls, url) if url.endswith("*") else url_matches(rule, url):
                return True
            continue
        group, resource, name = atom["apiGroups"][0], atom["resources"][0], atom["name"]
        if not _has(rule.get("apiGroups"), group) or (group == "*" and "*" not in (rule.get("apiGroups") or ())):
            continue
        held_resources = rule.get("resources") or ()
        if resource == "*" and "*" not in held_resources:
            continue
        sub = resource.partition("/")[2]
        if not ("*" in held_resources or resource in held_resources or (sub and f"*/{sub}" in held_resources)):
            continue
        names = rule.get("resourceNames") or ()
        if names and (not name or name not in names):
            continue
        return True
    return False


def _wildcard_held(held_urls: Iterable[str], wanted: str) -> bool:
    """A wanted `prefix*` is held only by `*` or a shorter-or-equal `prefix*`."""
    prefix = wanted[:-1]
    return any(u == "*" or (u.endswith("*") and prefix.startswith(u[:-1])) for u in held_urls)
