"""NodeRestriction: what a node agent may change in the objects the Node
authorizer lets it write, checked against the stored objects, as
Kubernetes' plugin does.

A node may create, update and delete only its own Node, and may not change
its own taints once registered nor set labels under
node-restriction.kubernetes.io/; it may update the status of, and delete,
only pods bound to it, and create no pods but mirror pods bound to it; it
may write only its own Lease in kube-node-lease.
"""

from __future__ import annotations

from control_plane.apiserver.admission import CREATE, DELETE, UPDATE, AdmissionRequest, Object, Plugin, forbidden
from control_plane.security.node_authorizer import NODE_LEASE_NAMESPACE

RESTRICTED_LABEL_PREFIX = "node-restriction.kubernetes.io/"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def _labels(obj: Object | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


class NodeRestriction(Plugin):
    name = "NodeRestriction"
    resources = frozenset(("nodes", "pods", "leases"))

    def handles(self, req: AdmissionRequest) -> bool:
        return bool(req.user.node_name) and super().handles(req)

    async def validate(self, req: AdmissionRequest) -> None:
        node = req.user.node_name
        getattr(self, f"_{req.resource.plural}")(req, node)

    def _nodes(self, req: AdmissionRequest, node: str) -> None:
        if req.name != node:
            raise forbidden(req, f'node "{node}" is not allowed to modify node "{req.name}"')
        if req.operation == DELETE:
            return
        old, new = _labels(req.old), _labels(req.obj)
        changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        restricted = sorted(k for k in changed if k.startswith(RESTRICTED_LABEL_PREFIX))
        if restricted:
            raise forbidden(req, f'node "{node}" is not allowed to modify labels: {", ".join(restricted)}')
        if req.operation == UPDATE:
            old_taints = ((req.old or {}).get("spec") or {}).get("taints")
            new_taints = ((req.obj or {}).get("spec") or {}).get("taints")
            if (old_taints or None) != (new_taints or None):
                raise forbidden(req, f'node "{node}" is not allowed to modify taints')

    def _pods(self, req: AdmissionRequest, node: str) -> None:
        if req.operation == CREATE:
            pod = req.obj or {}
            if MIRROR_ANNOTATION not in ((pod.get("metadata") or {}).get("annotations") or {}):
                raise forbidden(
                    req,
                    f'pod does not have "{MIRROR_ANNOTATION}" annotation, node "{node}" can only create mirror pods',
                )
            if (pod.get("spec") or {}).get("nodeName") != node:
                raise forbidden(req, f'node "{node}" can only create pods with spec.nodeName set to itself')
            return
        bound = ((req.old or {}).get("spec") or {}).get("nodeName")
        if req.operation == UPDATE:
            if req.subresource != "status":
                raise forbidden(req, f'node "{node}" can only update pod status')
            if bound != node:
                raise forbidden(
                    req, f'node "{node}" can only update pod status for pods with spec.nodeName set to itself'
                )
            return
        if bound != node:
            raise forbidden(req, f'node "{node}" can only delete pods with spec.nodeName set to itself')

    def _leases(self, req: AdmissionRequest, node: str) -> None:
        if req.namespace != NODE_LEASE_NAMESPACE or req.name != node:
            raise forbidden(req, f'node "{node}" can only access its own lease in {NODE_LEASE_NAMESPACE}')
