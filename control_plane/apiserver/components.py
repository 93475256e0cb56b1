"""componentstatuses: the health of each store member, and of the
scheduler and controller-manager as their Leases show (Unhealthy while no
one holds the Lease)."""

from __future__ import annotations

import calendar
import time
from typing import Any

from control_plane.apis.errors import ApiError
from control_plane.apis.resources import REGISTRY
from control_plane.apiserver.service import ApiService
from ha.store import Store

LEASED_COMPONENTS = (("scheduler", "kube-scheduler"), ("controller-manager", "kube-controller-manager"))


def _status(name: str, healthy: bool, message: str, error: str = "") -> dict[str, Any]:
    condition: dict[str, Any] = {"type": "Healthy", "status": "True" if healthy else "False", "message": message}
    if error:
        condition["error"] = error
    return {
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    }


def _renewed(lease: dict[str, Any]) -> float | None:
    """renewTime (MicroTime, e.g. 2026-11-22T10:00:00.123456Z) in seconds."""
    value = str((lease.get("spec") or {}).get("renewTime") or "")
    try:
        return float(calendar.timegm(time.strptime(value.split(".")[0].rstrip("Z") + "Z", "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


async def component_statuses(service: ApiService, store: Store) -> list[dict[str, Any]]:
    out = []
    status = await store.status()
    connected = {p.id: p.connected for p in status.peers}
    for member in store.members():
        if member.id == status.id:
            healthy = status.has_quorum and bool(status.leader_id)
            why = "" if healthy else "no quorum or no leader"
        else:
            healthy = connected.get(member.id, False)
            why = "" if healthy else f"not connected to {status.id}"
        role = " (leader)" if member.id == status.leader_id else ""
        out.append(_status(f"store-{member.id}", healthy, f"ok{role}" if healthy else "", why))
    leases = REGISTRY.lookup("coordination.k8s.io", "v1", "leases")
    assert leases is not None
    for component, lease_name in LEASED_COMPONENTS:
        try:
            lease = await service.get(leases, "kube-system", lease_name, "0")
        except ApiError:
            out.append(_status(component, False, "", "no instance holds its lease"))
            continue
        spec = lease.get("spec") or {}
        renewed = _renewed(lease)
        duration = int(spec.get("leaseDurationSeconds") or 15)
        if spec.get("holderIdentity") and renewed is not None and renewed + duration > time.time():
            out.append(_status(component, True, f"ok (leader {spec['holderIdentity']})"))
        else:
            out.append(_status(component, False, "", "no instance holds its lease"))
    return out
