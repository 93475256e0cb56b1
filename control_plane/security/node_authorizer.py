"""The Node authorizer: what a node agent (user system:node:NAME in group
system:nodes) may read and write, decided by the pods bound to it, as
Kubernetes' Node authorizer does with its graph.

An agent may read nodes, services and endpoints; write its own Node and
its own Lease in kube-node-lease; read, delete and evict the pods bound to
it and write their status; list or watch pods only with the field selector
spec.nodeName=NAME; read the secrets, configmaps and service accounts its
pods use (and request tokens for those accounts); create events. For
anything else it has no opinion (RBAC decides, and grants nodes nothing by
default). Which fields of its own objects it may change is NodeRestriction
admission's part (admission/node_restriction.py).

The pods come from the API server's pod cache, projected to what this
needs (pod_references).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from control_plane.apis.pods import all_containers
from control_plane.apis.selectors import field_equalities
from control_plane.security.authz import NO_OPINION, Attributes, Decision, Verdict

Object = dict[str, Any]
NODE_LEASE_NAMESPACE = "kube-node-lease"


def pod_references(pod: Object) -> Object:
    """What the authorizer keeps of a pod: its node and the secrets,
    configmaps and service account it uses (volumes, env, envFrom,
    imagePullSecrets)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    secrets: set[str] = {str(s.get("name")) for s in spec.get("imagePullSecrets") or () if s.get("name")}
    configmaps: set[str] = set()
    for volume in spec.get("volumes") or ():
        if (volume.get("secret") or {}).get("secretName"):
            secrets.add(volume["secret"]["secretName"])
        if (volume.get("configMap") or {}).get("name"):
            configmaps.add(volume["configMap"]["name"])
        for source in (volume.get("projected") or {}).get("sources") or ():
            if (source.get("secret") or {}).get("name"):
                secrets.add(source["secret"]["name"])
            if (source.get("configMap") or {}).get("name"):
                configmaps.add(source["configMap"]["name"])
    for container in all_containers(spec):
        for env in container.get("env") or ():
            source = env.get("valueFrom") or {}
            if (source.get("secretKeyRef") or {}).get("name"):
                secrets.add(source["secretKeyRef"]["name"])
            if (source.get("configMapKeyRef") or {}).get("name"):
                configmaps.add(source["configMapKeyRef"]["name"])
        for env_from in container.get("envFrom") or ():
            if (env_from.get("secretRef") or {}).get("name"):
                secrets.add(env_from["secretRef"]["name"])
            if (env_from.get("configMapRef") or {}).get("name"):
                configmaps.add(env_from["configMapRef"]["name"])
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "spec": {
            "nodeName": spec.get("nodeName") or "",
            "serviceAccountName": spec.get("serviceAccountName") or "default",
        },
        "secrets": sorted(secrets),
        "configmaps": sorted(configmaps),
    }


class PodGraph(Protocol):
    """Pods as pod_references() projects them."""

    def pod(self, namespace: str, name: str) -> Object | None: ...

    def pods_on(self, node: str) -> Iterable[Object]: ...


READ = frozenset(("get", "list", "watch"))
OWN_LEASE_VERBS = frozenset(("get", "create", "update", "patch", "delete"))


class NodeAuthorizer:
    def __init__(self, graph: PodGraph):
        self.graph = graph
        self._by_resource: dict[tuple[str, str], Callable[[str, Attributes], Verdict | None]] = {
            ("", "nodes"): self._nodes,
            ("coordination.k8s.io", "leases"): self._leases,
            ("", "pods"): self._pods,
            ("", "events"): self._events,
            ("events.k8s.io", "events"): self._events,
            ("", "services"): self._read_only,
            ("", "endpoints"): self._read_only,
            ("", "secrets"): self._secrets,
            ("", "configmaps"): self._configmaps,
            ("", "serviceaccounts"): self._serviceaccounts,
            ("authentication.k8s.io", "tokenreviews"): self._create_only,
            ("authorization.k8s.io", "subjectaccessreviews"): self._create_only,
        }

    def authorize(self, attrs: Attributes) -> Verdict:
        node = attrs.user.node_name
        if not node or not attrs.resource_request:
            return NO_OPINION
        decide = self._by_resource.get((attrs.api_group, attrs.resource))
        verdict = decide(node, attrs) if decide is not None else None
        if verdict is None:
            return NO_OPINION
        if verdict.decision is Decision.ALLOW:
            return verdict
        # As Kubernetes: no opinion with a reason, so RBAC may still allow.
        return Verdict(Decision.NO_OPINION, verdict.reason)

    # -- by resource ---------------------------------------------------------------------

    def _nodes(self, node: str, attrs: Attributes) -> Verdict | None:
        if attrs.verb in READ and not attrs.subresource:
            return _allow()
        if attrs.verb == "create" and not attrs.subresource:
            return _allow()  # NodeRestriction: only its own Node
        if attrs.verb in ("update", "patch", "delete") and attrs.subresource in ("", "status"):
            if attrs.name == node:
                return _allow()
            return _deny(f"node '{node}' cannot modify node '{attrs.name}'")
        return None

    def _leases(self, node: str, attrs: Attributes) -> Verdict | None:
        # A create names no lease yet: NodeRestriction checks it is the node's own.
        own = attrs.name == node or (attrs.verb == "create" and not attrs.name)
        if attrs.namespace == NODE_LEASE_NAMESPACE and own and attrs.verb in OWN_LEASE_VERBS:
            return _allow()
        return _deny(f"node '{node}' can only access its own lease in {NODE_LEASE_NAMESPACE}")

    def _pods(self, node: str, attrs: Attributes) -> Verdict | None:
        if attrs.verb in ("list", "watch") and not attrs.subresource:
            if field_equalities(attrs.field_selector).get("spec.nodeName") == node:
                return _allow()
            return _deny(f"node '{node}' can only list and watch pods with fieldSelector spec.nodeName={node}")
        allowed = {
            "": ("get", "delete"),
            "status": ("get", "update", "patch"),
            "eviction": ("create",),
            "log": ("get",),
        }.get(attrs.subresource, ())
        if attrs.verb not in allowed:
            return None
        pod = self.graph.pod(attrs.namespace, attrs.name)
        if pod is not None and (pod.get("spec") or {}).get("nodeName") == node:
            return _allow()
        return _deny(f"no relationship found between node '{node}' and this object")

    def _events(self, node: str, attrs: Attributes) -> Verdict | None:
        return _allow() if attrs.verb in ("create", "update", "patch") else None

    def _read_only(self, node: str, attrs: Attributes) -> Verdict | None:
        return _allow() if attrs.verb in READ and not attrs.subresource else None

    def _secrets(self, node: str, attrs: Attributes) -> Verdict | None:
        return self._referenced(node, attrs, "secrets")

    def _configmaps(self, node: str, attrs: Attributes) -> Verdict | None:
        return self._referenced(node, attrs, "configmaps")

    def _serviceaccounts(self, node: str, attrs: Attributes) -> Verdict | None:
        if not (attrs.verb == "get" and not attrs.subresource) and not (
            attrs.verb == "create" and attrs.subresource == "token"
        ):
            return None
        for pod in self.graph.pods_on(node):
            if (pod["metadata"].get("namespace") == attrs.namespace) and pod["spec"][
                "serviceAccountName"
            ] == attrs.name:
                return _allow()
        return _deny(f"no relationship found between node '{node}' and this object")

    def _create_only(self, node: str, attrs: Attributes) -> Verdict | None:
        return _allow() if attrs.verb == "create" else None

    def _referenced(self, node: str, attrs: Attributes, kind: str) -> Verdict | None:
        name = attrs.name
        if attrs.verb in ("list", "watch"):
            # A watch of one object (metadata.name=X) is a get of it.
            name = field_equalities(attrs.field_selector).get("metadata.name", "")
        elif attrs.verb != "get":
            return None
        if name and not attrs.subresource:
            for pod in self.graph.pods_on(node):
                if pod["metadata"].get("namespace") == attrs.namespace and name in pod[kind]:
                    return _allow()
        return _deny(f"no relationship found between node '{node}' and this object")


def _allow() -> Verdict:
    return Verdict(Decision.ALLOW, "Node")


def _deny(reason: str) -> Verdict:
    return Verdict(Decision.DENY, reason)
