"""ResourceQuota: a namespace's quotas bound what its objects may use in
all (object counts, pods' CPU and memory), and their status.used is exact.

Kubernetes charges a quota with an optimistic update of its status before
the object is written, and relies on a controller to correct the counts
later. Here the charge rides in the write's own store transaction: the
write puts the quotas' new status.used and carries a compare that no
quota of the namespace changed since they were read. Two masters charging
the same quota at once are two transactions of which one fails its
compare and is evaluated again, so the count can neither drift nor be
exceeded, whatever master takes the write. Writes that change no usage
(most updates) cost nothing; a write in a namespace without quotas carries
only the compare, so a quota created meanwhile is not missed.

A new quota's (or a changed quota's) usage is counted from the objects at
one store revision and stored with a compare on the quota itself
(`recount`), so it starts exact too.

Pods that have finished (Succeeded, Failed) use nothing, so the status
update that finishes a pod gives its share back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from control_plane.apis.quantity import format_quantity, parse_quantity
from control_plane.apis.resources import REGISTRY, Resource
from control_plane.apiserver.admission import DELETE, UPDATE, AdmissionRequest, Object, Plugin, Reader, forbidden
from control_plane.apiserver.object_keys import object_key, object_prefix
from ha.keys import prefix_end
from ha.storepb import kv_pb2

RESOURCE_QUOTAS: Resource = REGISTRY.lookup("", "v1", "resourcequotas")  # type: ignore[assignment]
Usage = dict[str, Decimal]
Txn = Callable[[kv_pb2.TxnRequest], Awaitable[kv_pb2.TxnResponse]]

# Quota names that count objects by their legacy name.
LEGACY_COUNTS = {
    "pods": "pods",
    "services": "services",
    "configmaps": "configmaps",
    "secrets": "secrets",
    "resourcequotas": "resourcequotas",
    "replicationcontrollers": "replicationcontrollers",
    "persistentvolumeclaims": "persistentvolumeclaims",
}
COMPUTE = ("cpu", "memory", "ephemeral-storage")
BINARY = ("memory", "ephemeral-storage", "storage")


def _q(value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return Decimal(0)


def _pod_totals(spec: Object, kind: str) -> Usage:
    """A pod's requests or limits: the larger of its containers' sum and
    its largest init container, per resource (as Kubernetes counts them)."""
    total: Usage = {}
    for container in spec.get("containers") or ():
        for name, value in ((container.get("resources") or {}).get(kind) or {}).items():
            total[name] = total.get(name, Decimal(0)) + _q(value)
    for container in spec.get("initContainers") or ():
        for name, value in ((container.get("resources") or {}).get(kind) or {}).items():
            total[name] = max(total.get(name, Decimal(0)), _q(value))
    return total


def usage(resource: Resource, obj: Object | None) -> Usage:
    """What an object uses of the quota names it is charged under."""
    if obj is None:
        return {}
    count_name = f"count/{resource.plural}" + (f".{resource.group}" if resource.group else "")
    used: Usage = {count_name: Decimal(1)}
    if resource.plural in LEGACY_COUNTS and not resource.group:
        used[LEGACY_COUNTS[resource.plural]] = Decimal(1)
    if resource.plural == "pods" and not resource.group:
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return {}
        spec = obj.get("spec") or {}
        for name, value in _pod_totals(spec, "requests").items():
            used[f"requests.{name}"] = value
            if name in COMPUTE:
                used[name] = value
        for name, value in _pod_totals(spec, "limits").items():
            used[f"limits.{name}"] = value
    elif resource.plural == "services" and not resource.group:
        spec = obj.get("spec") or {}
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            used["services.nodeports"] = Decimal(sum(1 for p in spec.get("ports") or () if p.get("nodePort")))
        if spec.get("type") == "LoadBalancer":
            used["services.loadbalancers"] = Decimal(1)
    return used


def _format(name: str, value: Decimal) -> str:
    return format_quantity(value, binary=name.rpartition(".")[2] in BINARY)


def counts(resource: Resource, quota_name: str) -> bool:
    """Whether objects of a resource are charged under a quota name."""
    if quota_name == f"count/{resource.plural}" + (f".{resource.group}" if resource.group else ""):
        return True
    if resource.group:
        return False
    if resource.plural in LEGACY_COUNTS and quota_name == resource.plural:
        return True
    if resource.plural == "pods":
        return quota_name in COMPUTE or quota_name.startswith(("requests.", "limits."))
    if resource.plural == "services":
        return quota_name in ("services.nodeports", "services.loadbalancers")
    return False


def _tracked(quota_names: list[str]) -> list[Resource]:
    """The resources a quota with these names counts."""
    return [
        r
        for r in REGISTRY.resources
        if r.namespaced and not r.virtual and not r.review and any(counts(r, n) for n in quota_names)
    ]


class ResourceQuota(Plugin):
    name = "ResourceQuota"

    def __init__(self, reader: Reader, txn: Txn, encode: Callable[[Object], bytes], attempts: int = 100):
        self.reader = reader
        self.txn = txn
        self.encode = encode
        self.attempts = attempts
        # One charging write at a time per namespace on this master: the
        # others would only fail their compare against it.
        self._locks: dict[str, asyncio.Lock] = {}

    def handles(self, req: AdmissionRequest) -> bool:
        return (
            req.resource.namespaced
            and not req.resource.review
            and req.resource.plural != "resourcequotas"
            and req.subresource not in ("binding", "eviction", "log", "token")
        )

    async def validate(self, req: AdmissionRequest) -> None:
        # The cache is good enough to learn there is no quota (the compare
        # below catches one made since); a quota to charge is read fresh,
        # under the namespace's lock.
        revision, quotas = await self.reader.read_all(RESOURCE_QUOTAS, req.namespace, fresh=req.attempt > 0)
        delta: Usage = {}
        if quotas or req.operation == UPDATE:
            before = usage(req.resource, req.old)
            after = {} if req.operation == DELETE else usage(req.resource, req.obj)
            delta = {k: after.get(k, Decimal(0)) - before.get(k, Decimal(0)) for k in before.keys() | after.keys()}
            delta = {k: v for k, v in delta.items() if v}
            if not delta:
                return  # (creates and deletes always change an object count)
        if quotas and req.stack is not None:
            await req.stack.enter_async_context(self._locks.setdefault(req.namespace, asyncio.Lock()))
            revision, quotas = await self.reader.read_all(RESOURCE_QUOTAS, req.namespace, fresh=True)
        prefix = object_prefix(RESOURCE_QUOTAS, req.namespace)
        # No quota of the namespace changed since they were read.
        req.compares.append(
            kv_pb2.Compare(
                key=prefix,
                range_end=prefix_end(prefix),
                target=kv_pb2.Compare.MOD,
                result=kv_pb2.Compare.LESS,
                mod_revision=revision + 1,
            )
        )
        for quota in quotas:
            charged = self._charge(req, quota, delta)
            if charged is not None:
                key = object_key(RESOURCE_QUOTAS, req.namespace, quota["metadata"]["name"])
                req.ops.append(kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=self.encode(charged))))

    def _charge(self, req: AdmissionRequest, quota: Object, delta: Usage) -> Object | None:
        """The quota with the delta added to its usage (None: it does not
        count these), or 403 when an increase goes over a hard limit."""
        hard = {k: _q(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
        status = quota.get("status") or {}
        used = {k: _q(v) for k, v in (status.get("used") or {}).items()}
        relevant = {k: v for k, v in delta.items() if k in hard}
        if not relevant:
            return None
        over = [k for k, v in relevant.items() if v > 0 and used.get(k, Decimal(0)) + v > hard[k]]
        if over:
            names = sorted(over)
            raise forbidden(
                req,
                f"exceeded quota: {quota['metadata']['name']}, "
                f"requested: {','.join(f'{k}={_format(k, relevant[k])}' for k in names)}, "
                f"used: {','.join(f'{k}={_format(k, used.get(k, Decimal(0)))}' for k in names)}, "
                f"limited: {','.join(f'{k}={_format(k, hard[k])}' for k in names)}",
            )
        charged = dict(quota)
        new_used = {k: max(Decimal(0), used.get(k, Decimal(0)) + relevant.get(k, Decimal(0))) for k in hard}
        charged["status"] = {
            "hard": dict((quota.get("spec") or {}).get("hard") or {}),
            "used": {k: _format(k, v) for k, v in new_used.items()},
        }
        return charged

    # -- counting a quota from scratch ----------------------------------------------------

    async def recount(self, namespace: str, name: str) -> Object | None:
        """Count a quota's usage from the objects at one store revision and
        store it, unless the quota changed meanwhile (then count again).
        The quota as stored, or None if it is gone."""
        key = object_key(RESOURCE_QUOTAS, namespace, name)
        for attempt in range(self.attempts):
            revision, quotas = await self.reader.read_all(RESOURCE_QUOTAS, namespace, fresh=True)
            quota = next((q for q in quotas if q["metadata"]["name"] == name), None)
            if quota is None:
                return None
            hard = (quota.get("spec") or {}).get("hard") or {}
            used: Usage = dict.fromkeys(hard, Decimal(0))
            for resource in _tracked(list(hard)):
                _, objects = await self.reader.read_all(resource, namespace, revision, fresh=True)
                for obj in objects:
                    for k, v in usage(resource, obj).items():
                        if k in used:
                            used[k] += v
            status = {"hard": dict(hard), "used": {k: _format(k, v) for k, v in used.items()}}
            if quota.get("status") == status:
                return quota
            updated = {**quota, "status": status}
            mod = int(quota["metadata"]["resourceVersion"])
            resp = await self.txn(
                kv_pb2.TxnRequest(
                    compare=[kv_pb2.Compare(key=key, target=kv_pb2.Compare.MOD, mod_revision=mod)],
                    success=[kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=self.encode(updated)))],
                )
            )
            if resp.succeeded:
                updated["metadata"] = {**updated["metadata"], "resourceVersion": str(resp.header.revision)}
                return updated
            await asyncio.sleep(random.uniform(0, 0.01 * min(attempt + 1, 10)))
        raise RuntimeError(f"resource quota {namespace}/{name}: too many concurrent changes to count it")
