"""RBAC escalation prevention, as Kubernetes' RBAC storage enforces it: a
user may create or change a Role or ClusterRole only with rules it holds
itself, and create a binding only to a role whose rules it holds, unless it
may `escalate` (roles) or `bind` (bindings) that role. Without this, anyone
allowed to write RBAC objects in a namespace could give itself anything.
"""

from __future__ import annotations

from control_plane.apiserver.admission import CREATE, UPDATE, AdmissionRequest, Object, Plugin, forbidden
from control_plane.security.authz import Attributes, Authorizer
from control_plane.security.rbac import RBAC_GROUP, PolicySource, RbacAuthorizer


class RbacEscalation(Plugin):
    name = "RBACEscalation"
    operations = frozenset((CREATE, UPDATE))
    resources = frozenset(("roles", "clusterroles", "rolebindings", "clusterrolebindings"))

    def __init__(self, rbac: RbacAuthorizer, authorizer: Authorizer, source: PolicySource):
        self.rbac = rbac
        self.authorizer = authorizer
        self.source = source

    def _may(self, req: AdmissionRequest, verb: str, resource: str, name: str, namespace: str) -> bool:
        attrs = Attributes(req.user, verb, api_group=RBAC_GROUP, resource=resource, name=name, namespace=namespace)
        return self.authorizer.authorize(attrs).allowed

    async def validate(self, req: AdmissionRequest) -> None:
        obj = req.obj or {}
        plural = req.resource.plural
        if plural in ("roles", "clusterroles"):
            if self._may(req, "escalate", plural, req.name, req.namespace):
                return
            missing = self.rbac.covers(
                req.user, req.namespace, [r for r in obj.get("rules") or () if isinstance(r, dict)]
            )
            if missing:
                raise forbidden(
                    req,
                    f'user "{req.user.name}" (groups={list(req.user.groups)}) is attempting to grant RBAC permissions '
                    f"not currently held: {missing}",
                )
            return
        ref = obj.get("roleRef") or {}
        kind, role_name = ref.get("kind"), str(ref.get("name") or "")
        role_plural = "clusterroles" if kind == "ClusterRole" else "roles"
        role_namespace = "" if kind == "ClusterRole" else req.namespace
        if self._may(req, "bind", role_plural, role_name, role_namespace):
            return
        role: Object | None = (
            self.source.cluster_role(role_name) if kind == "ClusterRole" else self.source.role(req.namespace, role_name)
        )
        rules = [r for r in (role or {}).get("rules") or () if isinstance(r, dict)]
        missing = self.rbac.covers(req.user, req.namespace, rules)
        if role is None or missing:
            raise forbidden(
                req,
                f'user "{req.user.name}" (groups={list(req.user.groups)}) is attempting to grant RBAC permissions '
                f"not currently held: {missing if role is not None else f'{kind} {role_name} not found'}",
            )
