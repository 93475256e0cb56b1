"""LimitRanger: a namespace's LimitRanges give containers their default
requests and limits and bound what a container, or a whole pod, may ask
for (min, max, maxLimitRequestRatio), as Kubernetes' plugin does.

Defaults are filled on create (and recorded in the pod's
kubernetes.io/limit-ranger annotation); the bounds are checked on create.

The ranges are read from the API server's cache, which may not yet hold
one created a moment ago. As in Kubernetes, a namespace the cache shows
without ranges is looked up in the store itself (this master's applied
state, which holds every write this master acknowledged), and a namespace
found empty there is believed for LIVE_TTL seconds.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from control_plane.apis.pods import all_containers
from control_plane.apis.quantity import parse_quantity
from control_plane.apis.resources import REGISTRY, Resource
from control_plane.apiserver.admission import CREATE, AdmissionRequest, Object, Plugin, Reader, forbidden

LIMIT_RANGES: Resource = REGISTRY.lookup("", "v1", "limitranges")  # type: ignore[assignment]
ANNOTATION = "kubernetes.io/limit-ranger"
LIVE_TTL = 30.0  # Kubernetes' liveTTL


def _quantity(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None  # validation says why


class LimitRanger(Plugin):
    name = "LimitRanger"
    operations = frozenset((CREATE,))
    resources = frozenset(("pods",))
    mutating = True
    main_resource_only = True

    def __init__(self, reader: Reader):
        self.reader = reader
        self._empty_until: dict[str, float] = {}  # namespaces the store showed without ranges

    async def _ranges(self, namespace: str) -> list[Object]:
        _, ranges = await self.reader.read_all(LIMIT_RANGES, namespace)
        if ranges or self._empty_until.get(namespace, 0.0) > time.monotonic():
            return ranges
        _, ranges = await self.reader.read_all(LIMIT_RANGES, namespace, fresh=True)
        if not ranges:
            if len(self._empty_until) > 10_000:
                self._empty_until.clear()
            self._empty_until[namespace] = time.monotonic() + LIVE_TTL
        return ranges

    async def _items(self, req: AdmissionRequest) -> list[Object]:
        """The namespace's limits (one read per admission phase)."""
        ranges = await self._ranges(req.namespace)
        return [item for lr in ranges for item in (lr.get("spec") or {}).get("limits") or () if isinstance(item, dict)]

    async def admit(self, req: AdmissionRequest) -> None:
        spec = (req.obj or {}).get("spec")
        if not isinstance(spec, dict):
            return
        items = [item for item in await self._items(req) if item.get("type") == "Container"]
        if not items:
            return
        notes = []
        for container in all_containers(spec):
            resources = container.setdefault("resources", {})
            if not isinstance(resources, dict):
                continue
            set_requests: list[str] = []
            set_limits: list[str] = []
            for item in items:
                for source, target, names in (
                    ("defaultRequest", "requests", set_requests),
                    ("default", "limits", set_limits),
                ):
                    wanted = resources.setdefault(target, {})
                    for name, value in (item.get(source) or {}).items():
                        if isinstance(wanted, dict) and name not in wanted:
                            wanted[name] = value
                            names.append(name)
            for target in ("requests", "limits"):
                if resources.get(target) == {}:
                    del resources[target]
            if set_requests:
                notes.append(f"{', '.join(set_requests)} request for container {container.get('name')}")
            if set_limits:
                notes.append(f"{', '.join(set_limits)} limit for container {container.get('name')}")
        if notes:
            meta = (req.obj or {}).setdefault("metadata", {})
            meta.setdefault("annotations", {})[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)

    async def validate(self, req: AdmissionRequest) -> None:
        spec = (req.obj or {}).get("spec")
        if not isinstance(spec, dict):
            return
        items = await self._items(req)
        if not items:
            return
        containers = all_containers(spec)
        for item in items:
            if item.get("type") != "Container":
                continue
            for container in containers:
                resources = container.get("resources") or {}
                self._check(req, "Container", item, resources.get("requests") or {}, resources.get("limits") or {})
        pod_items = [item for item in items if item.get("type") == "Pod"]
        if pod_items:
            requests: dict[str, Decimal] = {}
            limits: dict[str, Decimal] = {}
            for container in spec.get("containers") or ():
                resources = container.get("resources") or {}
                for total, values in ((requests, resources.get("requests")), (limits, resources.get("limits"))):
                    for name, value in (values or {}).items():
                        q = _quantity(value)
                        if q is not None:
                            total[name] = total.get(name, Decimal(0)) + q
            for item in pod_items:
                self._check(req, "Pod", item, requests, limits)

    @staticmethod
    def _check(
        req: AdmissionRequest, kind: str, item: Object, requests: dict[str, Any], limits: dict[str, Any]
    ) -> None:
        for name, value in (item.get("min") or {}).items():
            low = _quantity(value)
            request = _quantity(requests[name]) if name in requests else None
            if low is None:
                continue
            if request is None:
                raise forbidden(req, f"minimum {name} usage per {kind} is {value}.  No request is specified")
            if request < low:
                raise forbidden(req, f"minimum {name} usage per {kind} is {value}, but request is {requests[name]}")
        for name, value in (item.get("max") or {}).items():
            high = _quantity(value)
            limit = _quantity(limits[name]) if name in limits else None
            if high is None:
                continue
            if limit is None:
                raise forbidden(req, f"maximum {name} usage per {kind} is {value}.  No limit is specified")
            if limit > high:
                raise forbidden(req, f"maximum {name} usage per {kind} is {value}, but limit is {limits[name]}")
        for name, value in (item.get("maxLimitRequestRatio") or {}).items():
            ratio = _quantity(value)
            limit = _quantity(limits.get(name)) if name in limits else None
            request = _quantity(requests.get(name)) if name in requests else None
            if ratio is None or limit is None:
                continue
            if not request:
                raise forbidden(
                    req, f"{name} max limit to request ratio per {kind} is {value}, but no request is specified"
                )
            if limit / request > ratio:
                raise forbidden(
                    req,
                    f"{name} max limit to request ratio per {kind} is {value}, but provided ratio is "
                    f"{float(limit / request):f}",
                )
