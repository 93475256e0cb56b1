"""The resource types the API serves: where they live (group, version,
plural), their kind, whether they are namespaced, their short names and
subresources. One table; discovery, routing and storage all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
READ_ONLY_VERBS = ["get", "list"]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(VERBS)
    # Not stored: computed on read (componentstatuses).
    virtual: bool = False
    # Not stored: a create is a question answered in its response
    # (SelfSubjectAccessReview, TokenReview, ...).
    review: bool = False
    # Spec changes bump metadata.generation (objects with a spec).
    has_spec: bool = True
    status_subresource: bool = field(default=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_version(self) -> tuple[str, str]:
        return self.group, self.version

    def storage_prefix(self) -> str:
        """Where its objects live in the store: /registry/<group/>plural/."""
        group = f"{self.group}/" if self.group else ""
        return f"/registry/{group}{self.plural}/"


def _r(
    group: str,
    version: str,
    kind: str,
    plural: str,
    namespaced: bool,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    **kw: object,
) -> Resource:
    return Resource(
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
        categories,
        sub,
        status_subresource="status" in sub,
        **kw,  # type: ignore[arg-type]
    )


ALL = ("all",)

RESOURCES: tuple[Resource, ...] = (
    _r("", "v1", "Namespace", "namespaces", False, ("ns",), sub=("status", "finalize")),
    _r("", "v1", "Node", "nodes", False, ("no",), sub=("status",)),
    _r("", "v1", "Pod", "pods", True, ("po",), ALL, ("status", "binding", "log", "eviction")),
    _r("", "v1", "Service", "services", True, ("svc",), ALL, ("status",)),
    _r("", "v1", "Endpoints", "endpoints", True, ("ep",), has_spec=False),
    _r("", "v1", "ConfigMap", "configmaps", True, ("cm",), has_spec=False),
    _r("", "v1", "Secret", "secrets", True, has_spec=False),
    _r("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), sub=("token",), has_spec=False),
    _r("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), sub=("status",)),
    _r("", "v1", "LimitRange", "limitranges", True, ("limits",)),
    _r("", "v1", "Event", "events", True, ("ev",), has_spec=False),
    _r(
        "",
        "v1",
        "ComponentStatus",
        "componentstatuses",
        False,
        ("cs",),
        verbs=tuple(READ_ONLY_VERBS),
        virtual=True,
        has_spec=False,
    ),
    _r("coordination.k8s.io", "v1", "Lease", "leases", True),
    _r("apps", "v1", "Deployment", "deployments", True, ("deploy",), ALL, ("status", "scale")),
    _r("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ALL, ("status", "scale")),
    _r("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ALL, ("status",)),
    _r("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), ALL, ("status", "scale")),
    _r("batch", "v1", "Job", "jobs", True, (), ALL, ("status",)),
    _r("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ALL, ("status",)),
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles", True, has_spec=False),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, has_spec=False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, has_spec=False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, has_spec=False),
    *(
        _r(group, "v1", kind, plural, namespaced, verbs=("create",), review=True, has_spec=False)
        for group, kind, plural, namespaced in (
            ("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False),
            ("authorization.k8s.io", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False),
            ("authorization.k8s.io", "SubjectAccessReview", "subjectaccessreviews", False),
            ("authorization.k8s.io", "LocalSubjectAccessReview", "localsubjectaccessreviews", True),
            ("authentication.k8s.io", "TokenReview", "tokenreviews", False),
            ("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", False),
        )
    ),
)


class Registry:
    def __init__(self, resources: tuple[Resource, ...] = RESOURCES):
        self.resources = resources
        self._by_path = {(r.group, r.version, r.plural): r for r in resources}
        self._by_kind = {(r.group, r.version, r.kind): r for r in resources}

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        return self._by_kind.get((group, version, kind))

    def group_versions(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for r in self.resources:
            seen.setdefault(r.group_version, None)
        return list(seen)

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in self.resources if r.group == group and r.version == version]


REGISTRY = Registry()
