"""The default ClusterRoles and ClusterRoleBindings every cluster starts with,
after Kubernetes' bootstrap policy: cluster-admin, admin, edit and view for
users, and the system roles that let any authenticated user discover the
API and ask what it may do.

Roles are written out in full (Kubernetes aggregates admin/edit/view from
labelled roles; the result is the same rules). Objects carry Kubernetes'
`rbac.authorization.kubernetes.io/autoupdate` annotation: while it is
"true", every master start puts back the default rules.
"""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]

RBAC = "rbac.authorization.k8s.io/v1"
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
ALL_VERBS = [*READ, *WRITE]


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> Object:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def _urls(verbs: list[str], urls: list[str]) -> Object:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _meta(name: str) -> Object:
    return {
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }


def cluster_role(name: str, rules: list[Object]) -> Object:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": _meta(name), "rules": rules}


def cluster_role_binding(name: str, role: str, groups: list[str]) -> Object:
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": _meta(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups],
    }


VIEW_RULES = [
    _rule(
        READ,
        [""],
        [
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
        ],
    ),
    _rule(
        READ,
        [""],
        [
            "bindings",
            "events",
            "limitranges",
            "namespaces/status",
            "pods/log",
            "pods/status",
            "replicationcontrollers/status",
            "resourcequotas",
            "resourcequotas/status",
        ],
    ),
    _rule(READ, [""], ["namespaces"]),
    _rule(
        READ,
        ["apps"],
        [
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ],
    ),
    _rule(READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    _rule(READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
    _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    _rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    _rule(READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
]

EDIT_RULES = [
    _rule(
        [*WRITE],
        [""],
        ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
    ),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(
        [*WRITE],
        [""],
        [
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "secrets",
            "serviceaccounts",
            "services",
            "services/proxy",
        ],
    ),
    _rule(["create"], [""], ["serviceaccounts/token"]),
    _rule(READ, [""], ["secrets"]),
    _rule(["impersonate"], [""], ["serviceaccounts"]),
    _rule(
        [*WRITE],
        ["apps"],
        [
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
        ],
    ),
    _rule([*WRITE], ["autoscaling"], ["horizontalpodautoscalers"]),
    _rule([*WRITE], ["batch"], ["cronjobs", "jobs"]),
    _rule([*WRITE], ["policy"], ["poddisruptionbudgets"]),
    _rule([*WRITE], ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
    _rule([*WRITE], ["discovery.k8s.io"], ["endpointslices"]),
    *VIEW_RULES,
]

ADMIN_RULES = [
    _rule(ALL_VERBS, ["rbac.authorization.k8s.io"], ["rolebindings", "roles"]),
    _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    *EDIT_RULES,
]

CLUSTER_ROLES = [
    cluster_role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
    cluster_role("admin", ADMIN_RULES),
    cluster_role("edit", EDIT_RULES),
    cluster_role("view", VIEW_RULES),
    cluster_role(
        "system:basic-user",
        [
            _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
        ],
    ),
    cluster_role(
        "system:discovery",
        [
            _urls(
                ["get"],
                [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )
        ],
    ),
    cluster_role(
        "system:public-info-viewer", [_urls(["get"], ["/healthz", "/livez", "/readyz", "/version", "/version/"])]
    ),
    cluster_role(
        "system:monitoring",
        [_urls(["get"], ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/readyz", "/readyz/*"])],
    ),
]

CLUSTER_ROLE_BINDINGS = [
    cluster_role_binding("cluster-admin", "cluster-admin", ["system:masters"]),
    cluster_role_binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
    cluster_role_binding("system:discovery", "system:discovery", ["system:authenticated"]),
    cluster_role_binding(
        "system:public-info-viewer", "system:public-info-viewer", ["system:authenticated", "system:unauthenticated"]
    ),
    cluster_role_binding("system:monitoring", "system:monitoring", ["system:monitoring"]),
]


def needs_update(current: Object, default: Object) -> bool:
    """Whether a default object must be put back: its rules, role or
    subjects differ and it still allows auto-update."""
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    if annotations.get("rbac.authorization.kubernetes.io/autoupdate", "true") != "true":
        return False
    fields = ("rules",) if default["kind"] == "ClusterRole" else ("roleRef", "subjects")
    return any(current.get(f) != default.get(f) for f in fields)
