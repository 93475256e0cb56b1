"""The admission chain a master runs, in Kubernetes' order."""

from __future__ import annotations

from collections.abc import Callable

from control_plane.apiserver.admission import Chain, Object, Plugin, Reader
from control_plane.apiserver.admission.default_toleration_seconds import DefaultTolerationSeconds
from control_plane.apiserver.admission.limit_ranger import LimitRanger
from control_plane.apiserver.admission.namespace_lifecycle import NamespaceLifecycle
from control_plane.apiserver.admission.node_restriction import NodeRestriction
from control_plane.apiserver.admission.rbac_escalation import RbacEscalation
from control_plane.apiserver.admission.resource_quota import ResourceQuota, Txn
from control_plane.apiserver.admission.service_account import ServiceAccount
from control_plane.security.authz import Authorizer
from control_plane.security.rbac import PolicySource, RbacAuthorizer


def standard_chain(reader: Reader, txn: Txn, encode: Callable[[Object], bytes]) -> tuple[Chain, ResourceQuota]:
    """The plugins that need only the store (and the quota plugin, which
    the service also asks to count new quotas)."""
    quota = ResourceQuota(reader, txn, encode)
    plugins: list[Plugin] = [
        NamespaceLifecycle(reader),
        LimitRanger(reader),
        ServiceAccount(reader),
        DefaultTolerationSeconds(),
        quota,
    ]
    return Chain(plugins), quota


def with_authorization(chain: Chain, rbac: RbacAuthorizer, authorizer: Authorizer, source: PolicySource) -> Chain:
    """The chain with the plugins that judge by who is asking:
    NodeRestriction (after ServiceAccount, as in Kubernetes) and RBAC
    escalation prevention."""
    plugins = list(chain.plugins)
    at = next((i + 1 for i, p in enumerate(plugins) if isinstance(p, ServiceAccount)), len(plugins))
    plugins.insert(at, NodeRestriction())
    plugins.append(RbacEscalation(rbac, authorizer, source))
    return Chain(plugins)
