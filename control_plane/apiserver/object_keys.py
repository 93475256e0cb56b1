"""Where API objects live in the store: /registry/<group/>plural/<namespace>/<name>
(cluster-scoped objects without the namespace), as kube-apiserver lays
them out in etcd."""

from __future__ import annotations

from control_plane.apis.resources import Resource


def object_key(resource: Resource, namespace: str, name: str) -> bytes:
    ns = f"{namespace}/" if resource.namespaced else ""
    return f"{resource.storage_prefix()}{ns}{name}".encode()


def object_prefix(resource: Resource, namespace: str) -> bytes:
    """The keys of a resource's objects in a namespace (every namespace
    when namespace is "", or for cluster-scoped resources)."""
    if resource.namespaced and namespace:
        return f"{resource.storage_prefix()}{namespace}/".encode()
    return resource.storage_prefix().encode()
