"""The API server's own caches, filled through a loopback client as
kube-apiserver fills its informers: what admission reads on every write
(namespaces, service accounts, limit ranges, resource quotas: the
ObjectCache), the RBAC objects (the RBAC authorizer's PolicySource) and
the scheduled pods, projected to their node and the objects they use (the
Node authorizer's PodGraph). /readyz fails until they have all listed.

A cache is behind the store by the time an event takes to arrive: readers
that must not be (a quota charge) read the store, or carry a compare that
fails when the cache was stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from control_plane.apis.resources import Resource
from control_plane.client import ApiClient, Informer, resource
from control_plane.security.node_authorizer import pod_references

Object = dict[str, Any]


def _namespace_of(obj: Object) -> list[str]:
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def _node_of(obj: Object) -> list[str]:
    return [str((obj.get("spec") or {}).get("nodeName") or "")]


class ObjectCache(Protocol):
    def get(self, r: Resource, namespace: str, name: str) -> Object | None: ...

    def list(self, r: Resource, namespace: str) -> tuple[int, list[Object]] | None:
        """A namespace's objects and the revision the cache reflects (None:
        this resource is not cached, or not synced)."""
        ...


ADMISSION_READS = (("", "namespaces"), ("", "serviceaccounts"), ("", "limitranges"), ("", "resourcequotas"))


class ApiServerCaches:
    def __init__(self, client: ApiClient, authorization: bool = True):
        self.namespaces = Informer(client, resource("namespaces"))
        self.informers = [self.namespaces]
        # ObjectCache: by storage prefix.
        self._objects: dict[str, Informer] = {self.namespaces.resource.storage_prefix(): self.namespaces}
        for group, plural in ADMISSION_READS[1:]:
            informer = Informer(client, resource(plural, group))
            informer.add_index("namespace", _namespace_of)
            self._objects[informer.resource.storage_prefix()] = informer
            self.informers.append(informer)
        # PolicySource: bumped on every RBAC change, so resolved rules are recomputed.
        self.generation = 0
        if not authorization:
            return
        rbac = "rbac.authorization.k8s.io"
        self.roles = Informer(client, resource("roles", rbac))
        self.role_binding_cache = Informer(client, resource("rolebindings", rbac))
        self.cluster_roles = Informer(client, resource("clusterroles", rbac))
        self.cluster_role_binding_cache = Informer(client, resource("clusterrolebindings", rbac))
        self.role_binding_cache.add_index("namespace", _namespace_of)
        for informer in (self.roles, self.role_binding_cache, self.cluster_roles, self.cluster_role_binding_cache):
            informer.add_handler(self._bump, lambda old, new: self._bump(new), self._bump)
        # Only scheduled pods: those are what nodes ask about.
        self.pods = Informer(client, resource("pods"), field_selector="spec.nodeName!=", transform=pod_references)
        self.pods.add_index("node", _node_of)
        self.informers += [
            self.roles,
            self.role_binding_cache,
            self.cluster_roles,
            self.cluster_role_binding_cache,
            self.pods,
        ]

    def _bump(self, obj: Object) -> None:
        self.generation += 1

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    async def stop(self) -> None:
        for informer in self.informers:
            await informer.stop()

    def unsynced(self) -> list[str]:
        return [i.resource.plural for i in self.informers if not i.has_synced()]

    # -- ObjectCache ---------------------------------------------------------------------

    def get(self, r: Resource, namespace: str, name: str) -> Object | None:
        informer = self._objects.get(r.storage_prefix())
        if informer is None or not informer.has_synced():
            return None
        return informer.lister.get(name, namespace if r.namespaced else "")

    def list(self, r: Resource, namespace: str) -> tuple[int, list[Object]] | None:
        informer = self._objects.get(r.storage_prefix())
        if informer is None or not informer.has_synced() or not informer.resource_version.isdigit():
            return None
        revision = int(informer.resource_version)
        if r.namespaced and namespace:
            return revision, informer.lister.by_index("namespace", namespace)
        return revision, informer.lister.list()

    # -- rbac.PolicySource ---------------------------------------------------------------

    def cluster_role_bindings(self) -> Iterable[Object]:
        return self.cluster_role_binding_cache.lister.list()

    def role_bindings(self, namespace: str) -> Iterable[Object]:
        return self.role_binding_cache.lister.by_index("namespace", namespace)

    def cluster_role(self, name: str) -> Object | None:
        return self.cluster_roles.lister.get(name)

    def role(self, namespace: str, name: str) -> Object | None:
        return self.roles.lister.get(name, namespace)

    # -- node_authorizer.PodGraph ----------------------------------------------------------

    def pod(self, namespace: str, name: str) -> Object | None:
        return self.pods.lister.get(name, namespace)

    def pods_on(self, node: str) -> Iterable[Object]:
        return self.pods.lister.by_index("node", node)
