"""NamespaceLifecycle: nothing is created in a namespace that does not
exist or is terminating, and the system namespaces cannot be deleted.

Namespaces are read from the API server's namespace cache, as Kubernetes'
plugin reads its informer; a miss falls back to the store (Reader.read), since a
namespace created a moment ago may not be cached yet.
"""

from __future__ import annotations

from control_plane.apis import errors
from control_plane.apis.resources import REGISTRY, Resource
from control_plane.apiserver.admission import CREATE, DELETE, AdmissionRequest, Plugin, Reader, forbidden

IMMORTAL = frozenset(("default", "kube-system", "kube-public"))
NAMESPACES: Resource = REGISTRY.lookup("", "v1", "namespaces")  # type: ignore[assignment]


class NamespaceLifecycle(Plugin):
    name = "NamespaceLifecycle"
    operations = frozenset((CREATE, DELETE))

    def __init__(self, reader: Reader):
        self.reader = reader

    async def validate(self, req: AdmissionRequest) -> None:
        if req.operation == DELETE:
            if req.resource.plural == "namespaces" and req.name in IMMORTAL:
                raise forbidden(req, "this namespace may not be deleted")
            return
        if not req.resource.namespaced or req.resource.review:
            return
        if not req.namespace:
            raise errors.bad_request("the namespace of the object must be given")
        namespace = await self.reader.read(NAMESPACES, "", req.namespace)
        if namespace is None:
            raise errors.not_found("", "namespaces", req.namespace)
        if (namespace.get("metadata") or {}).get("deletionTimestamp"):
            raise forbidden(
                req,
                f"unable to create new content in namespace {req.namespace} because it is being terminated",
            )
