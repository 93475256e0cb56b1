"""Server-side Table output (meta.k8s.io/v1 Table), with the columns
Kubernetes' own printers give each kind, so `kubectl get` prints the same
thing as against Kubernetes. Wide columns have priority 1 (`-o wide`).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

Object = dict[str, Any]
Column = tuple[str, str, int, Callable[[Object, float], Any]]  # name, type, priority, cell


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = (s % 3600) // 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rem = hours % 24
        return f"{days}d{rem}h" if rem else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def age(obj: Object, now: float) -> str:
    created = _parse_time(_meta(obj).get("creationTimestamp"))
    return "<unknown>" if created is None else human_duration(now - created)


def name(obj: Object, now: float) -> str:
    return str(_meta(obj).get("name", ""))


def _none(value: Any) -> str:
    return "<none>" if value in (None, "", [], {}) else str(value)


def _selector(selector: Any) -> str:
    if not isinstance(selector, dict):
        return "<none>"
    labels = selector.get("matchLabels") if "matchLabels" in selector or "matchExpressions" in selector else selector
    parts = [f"{k}={v}" for k, v in sorted((labels or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(expr.get("values") or [])
        op = expr.get("operator", "")
        parts.append(
            f"{expr.get('key')} {op.lower()} ({values})"
            if values
            else f"{'!' if op == 'DoesNotExist' else ''}{expr.get('key')}"
        )
    return ",".join(parts) or "<none>"


def _containers(spec: Any) -> list[Object]:
    return [c for c in ((spec or {}).get("containers") or []) if isinstance(c, dict)]


def _template_spec(obj: Object) -> Object:
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


# -- pods ----------------------------------------------------------------------


def pod_ready(obj: Object, now: float) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len(_containers(obj.get("spec")))
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{total}"


def pod_status(obj: Object, now: float) -> str:
    status = obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in status.get("initContainerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode", 0) != 0:
            return f"Init:{state['terminated'].get('reason') or 'Error'}"
        if "waiting" in state and state["waiting"].get("reason") not in (None, "PodInitializing"):
            return f"Init:{state['waiting']['reason']}"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = term.get("reason") or (
                f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            )
    if _meta(obj).get("deletionTimestamp"):
        return "Terminating"
    return str(reason)


def pod_restarts(obj: Object, now: float) -> int:
    return sum(int(s.get("restartCount") or 0) for s in (obj.get("status") or {}).get("containerStatuses") or [])


POD: list[Column] = [
    ("Name", "string", 0, name),
    ("Ready", "string", 0, pod_ready),
    ("Status", "string", 0, pod_status),
    ("Restarts", "string", 0, lambda o, n: str(pod_restarts(o, n))),
    ("Age", "string", 0, age),
    ("IP", "string", 1, lambda o, n: _none((o.get("status") or {}).get("podIP"))),
    ("Node", "string", 1, lambda o, n: _none((o.get("spec") or {}).get("nodeName"))),
    ("Nominated Node", "string", 1, lambda o, n: _none((o.get("status") or {}).get("nominatedNodeName"))),
    (
        "Readiness Gates",
        "string",
        1,
        lambda o, n: _none(
            ",".join(g.get("conditionType", "") for g in (o.get("spec") or {}).get("readinessGates") or [])
        ),
    ),
]


def _images(obj: Object) -> str:
    return ",".join(c.get("image", "") for c in _containers(_template_spec(obj)))


def _container_names(obj: Object) -> str:
    return ",".join(c.get("name", "") for c in _containers(_template_spec(obj)))


def _status(obj: Object, key: str) -> int:
    return int((obj.get("status") or {}).get(key) or 0)


def _replicas(obj: Object) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


DEPLOYMENT: list[Column] = [
    ("Name", "string", 0, name),
    ("Ready", "string", 0, lambda o, n: f"{_status(o, 'readyReplicas')}/{_replicas(o)}"),
    ("Up-to-date", "integer", 0, lambda o, n: _status(o, "updatedReplicas")),
    ("Available", "integer", 0, lambda o, n: _status(o, "availableReplicas")),
    ("Age", "string", 0, age),
    ("Containers", "string", 1, lambda o, n: _container_names(o)),
    ("Images", "string", 1, lambda o, n: _images(o)),
    ("Selector", "string", 1, lambda o, n: _selector((o.get("spec") or {}).get("selector"))),
]

REPLICA_SET: list[Column] = [
    ("Name", "string", 0, name),
    ("Desired", "integer", 0, lambda o, n: _replicas(o)),
    ("Current", "integer", 0, lambda o, n: _status(o, "replicas")),
    ("Ready", "integer", 0, lambda o, n: _status(o, "readyReplicas")),
    ("Age", "string", 0, age),
    ("Containers", "string", 1, lambda o, n: _container_names(o)),
    ("Images", "string", 1, lambda o, n: _images(o)),
    ("Selector", "string", 1, lambda o, n: _selector((o.get("spec") or {}).get("selector"))),
]

STATEFUL_SET: list[Column] = [
    ("Name", "string", 0, name),
    ("Ready", "string", 0, lambda o, n: f"{_status(o, 'readyReplicas')}/{_replicas(o)}"),
    ("Age", "string", 0, age),
    ("Containers", "string", 1, lambda o, n: _container_names(o)),
    ("Images", "string", 1, lambda o, n: _images(o)),
]

DAEMON_SET: list[Column] = [
    ("Name", "string", 0, name),
    ("Desired", "integer", 0, lambda o, n: _status(o, "desiredNumberScheduled")),
    ("Current", "integer", 0, lambda o, n: _status(o, "currentNumberScheduled")),
    ("Ready", "integer", 0, lambda o, n: _status(o, "numberReady")),
    ("Up-to-date", "integer", 0, lambda o, n: _status(o, "updatedNumberScheduled")),
    ("Available", "integer", 0, lambda o, n: _status(o, "numberAvailable")),
    (
        "Node Selector",
        "string",
        0,
        lambda o, n: _none(",".join(f"{k}={v}" for k, v in (_template_spec(o).get("nodeSelector") or {}).items())),
    ),
    ("Age", "string", 0, age),
    ("Containers", "string", 1, lambda o, n: _container_names(o)),
    ("Images", "string", 1, lambda o, n: _images(o)),
    ("Selector", "string", 1, lambda o, n: _selector((o.get("spec") or {}).get("selector"))),
]


def _job_status(obj: Object) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed", "Suspended"):
            return str(cond["type"])
    return "Running"


def _job_duration(obj: Object, now: float) -> str:
    status = obj.get("status") or {}
    start = _parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = _parse_time(status.get("completionTime")) or now
    return human_duration(end - start)


JOB: list[Column] = [
    ("Name", "string", 0, name),
    ("Status", "string", 0, lambda o, n: _job_status(o)),
    (
        "Completions",
        "string",
        0,
        lambda o, n: f"{_status(o, 'succeeded')}/{(o.get('spec') or {}).get('completions', 1)}",
    ),
    ("Duration", "string", 0, _job_duration),
    ("Age", "string", 0, age),
    ("Containers", "string", 1, lambda o, n: _container_names(o)),
    ("Images", "string", 1, lambda o, n: _images(o)),
]

CRON_JOB: list[Column] = [
    ("Name", "string", 0, name),
    ("Schedule", "string", 0, lambda o, n: (o.get("spec") or {}).get("schedule", "")),
    ("Timezone", "string", 0, lambda o, n: _none((o.get("spec") or {}).get("timeZone"))),
    ("Suspend", "boolean", 0, lambda o, n: "True" if (o.get("spec") or {}).get("suspend") else "False"),
    ("Active", "integer", 0, lambda o, n: len((o.get("status") or {}).get("active") or [])),
    (
        "Last Schedule",
        "string",
        0,
        lambda o, n: (
            age({"metadata": {"creationTimestamp": (o.get("status") or {}).get("lastScheduleTime")}}, n)
            if (o.get("status") or {}).get("lastScheduleTime")
            else "<none>"
        ),
    ),
    ("Age", "string", 0, age),
]


def _ports(obj: Object) -> str:
    parts = []
    for p in (obj.get("spec") or {}).get("ports") or []:
        text = str(p.get("port"))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        parts.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _external_ip(obj: Object) -> str:
    spec = obj.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return str(spec.get("externalName", ""))
    ips = list(spec.get("externalIPs") or [])
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips += [i.get("ip") or i.get("hostname") for i in ingress]
    if ips:
        return ",".join(i for i in ips if i)
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


SERVICE: list[Column] = [
    ("Name", "string", 0, name),
    ("Type", "string", 0, lambda o, n: (o.get("spec") or {}).get("type", "ClusterIP")),
    ("Cluster-IP", "string", 0, lambda o, n: _none((o.get("spec") or {}).get("clusterIP"))),
    ("External-IP", "string", 0, lambda o, n: _external_ip(o)),
    ("Port(s)", "string", 0, lambda o, n: _ports(o)),
    ("Age", "string", 0, age),
    (
        "Selector",
        "string",
        1,
        lambda o, n: _none(
            ",".join(f"{k}={v}" for k, v in sorted(((o.get("spec") or {}).get("selector") or {}).items()))
        ),
    ),
]


def _node_status(obj: Object) -> str:
    ready = "Unknown"
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if (obj.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(obj: Object) -> str:
    roles = sorted(
        k.split("/", 1)[1]
        for k in (_meta(obj).get("labels") or {})
        if k.startswith("node-role.kubernetes.io/") and "/" in k
    )
    return ",".join(roles) or "<none>"


def _node_address(obj: Object, kind: str) -> str:
    for a in (obj.get("status") or {}).get("addresses") or []:
        if a.get("type") == kind:
            return str(a.get("address"))
    return "<none>"


def _node_info(obj: Object, key: str) -> str:
    return _none(((obj.get("status") or {}).get("nodeInfo") or {}).get(key))


NODE: list[Column] = [
    ("Name", "string", 0, name),
    ("Status", "string", 0, lambda o, n: _node_status(o)),
    ("Roles", "string", 0, lambda o, n: _node_roles(o)),
    ("Age", "string", 0, age),
    ("Version", "string", 0, lambda o, n: _node_info(o, "kubeletVersion")),
    ("Internal-IP", "string", 1, lambda o, n: _node_address(o, "InternalIP")),
    ("External-IP", "string", 1, lambda o, n: _node_address(o, "ExternalIP")),
    ("OS-Image", "string", 1, lambda o, n: _node_info(o, "osImage")),
    ("Kernel-Version", "string", 1, lambda o, n: _node_info(o, "kernelVersion")),
    ("Container-Runtime", "string", 1, lambda o, n: _node_info(o, "containerRuntimeVersion")),
]

NAMESPACE: list[Column] = [
    ("Name", "string", 0, name),
    ("Status", "string", 0, lambda o, n: (o.get("status") or {}).get("phase", "Active")),
    ("Age", "string", 0, age),
]

CONFIG_MAP: list[Column] = [
    ("Name", "string", 0, name),
    ("Data", "integer", 0, lambda o, n: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
    ("Age", "string", 0, age),
]

SECRET: list[Column] = [
    ("Name", "string", 0, name),
    ("Type", "string", 0, lambda o, n: o.get("type", "Opaque")),
    ("Data", "integer", 0, lambda o, n: len(o.get("data") or {})),
    ("Age", "string", 0, age),
]

SERVICE_ACCOUNT: list[Column] = [
    ("Name", "string", 0, name),
    ("Secrets", "integer", 0, lambda o, n: len(o.get("secrets") or [])),
    ("Age", "string", 0, age),
]


def _endpoints(obj: Object) -> str:
    pairs = []
    for subset in obj.get("subsets") or []:
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                pairs.append(f"{addr.get('ip')}:{port.get('port')}" if port else str(addr.get("ip")))
    if not pairs:
        return "<none>"
    if len(pairs) > 3:
        return ",".join(pairs[:3]) + f" + {len(pairs) - 3} more..."
    return ",".join(pairs)


ENDPOINTS: list[Column] = [
    ("Name", "string", 0, name),
    ("Endpoints", "string", 0, lambda o, n: _endpoints(o)),
    ("Age", "string", 0, age),
]


def _event_object(obj: Object) -> str:
    inv = obj.get("involvedObject") or {}
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


EVENT: list[Column] = [
    (
        "Last Seen",
        "string",
        0,
        lambda o, n: age(
            {
                "metadata": {
                    "creationTimestamp": o.get("lastTimestamp")
                    or o.get("eventTime")
                    or _meta(o).get("creationTimestamp")
                }
            },
            n,
        ),
    ),
    ("Type", "string", 0, lambda o, n: o.get("type", "")),
    ("Reason", "string", 0, lambda o, n: o.get("reason", "")),
    ("Object", "string", 0, lambda o, n: _event_object(o)),
    ("Message", "string", 0, lambda o, n: str(o.get("message", "")).strip()),
]

LEASE: list[Column] = [
    ("Name", "string", 0, name),
    ("Holder", "string", 0, lambda o, n: (o.get("spec") or {}).get("holderIdentity", "")),
    ("Age", "string", 0, age),
]

COMPONENT_STATUS: list[Column] = [
    ("Name", "string", 0, name),
    ("Status", "string", 0, lambda o, n: _component_health(o)[0]),
    ("Message", "string", 0, lambda o, n: _component_health(o)[1]),
    ("Error", "string", 0, lambda o, n: _component_health(o)[2]),
]


def _component_health(obj: Object) -> tuple[str, str, str]:
    for cond in obj.get("conditions") or []:
        if cond.get("type") == "Healthy":
            healthy = cond.get("status") == "True"
            return ("Healthy" if healthy else "Unhealthy", cond.get("message", ""), cond.get("error", ""))
    return ("Unknown", "", "")


ROLE: list[Column] = [
    ("Name", "string", 0, name),
    ("Created At", "string", 0, lambda o, n: _meta(o).get("creationTimestamp", "")),
]

ROLE_BINDING: list[Column] = [
    ("Name", "string", 0, name),
    (
        "Role",
        "string",
        0,
        lambda o, n: f"{(o.get('roleRef') or {}).get('kind', '')}/{(o.get('roleRef') or {}).get('name', '')}",
    ),
    ("Age", "string", 0, age),
    (
        "Users",
        "string",
        1,
        lambda o, n: ", ".join(s.get("name", "") for s in o.get("subjects") or [] if s.get("kind") == "User"),
    ),
    (
        "Groups",
        "string",
        1,
        lambda o, n: ", ".join(s.get("name", "") for s in o.get("subjects") or [] if s.get("kind") == "Group"),
    ),
    (
        "ServiceAccounts",
        "string",
        1,
        lambda o, n: ", ".join(
            f"{s.get('namespace', '')}/{s.get('name', '')}"
            for s in o.get("subjects") or []
            if s.get("kind") == "ServiceAccount"
        ),
    ),
]

DEFAULT: list[Column] = [("Name", "string", 0, name), ("Age", "string", 0, age)]

COLUMNS: dict[str, list[Column]] = {
    "pods": POD,
    "deployments": DEPLOYMENT,
    "replicasets": REPLICA_SET,
    "statefulsets": STATEFUL_SET,
    "daemonsets": DAEMON_SET,
    "jobs": JOB,
    "cronjobs": CRON_JOB,
    "services": SERVICE,
    "nodes": NODE,
    "namespaces": NAMESPACE,
    "configmaps": CONFIG_MAP,
    "secrets": SECRET,
    "serviceaccounts": SERVICE_ACCOUNT,
    "endpoints": ENDPOINTS,
    "events": EVENT,
    "leases": LEASE,
    "componentstatuses": COMPONENT_STATUS,
    "roles": ROLE,
    "clusterroles": ROLE,
    "rolebindings": ROLE_BINDING,
    "clusterrolebindings": ROLE_BINDING,
}

DESCRIPTIONS = {
    "Name": "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically.",
    "Age": "CreationTimestamp is a timestamp representing the server time when this object was created.",
}


def table(plural: str, objects: list[Object], list_meta: Object | None = None, now: float | None = None) -> Object:
    now = time.time() if now is None else now
    columns = COLUMNS.get(plural, DEFAULT)
    rows = []
    for obj in objects:
        meta = dict(_meta(obj))
        rows.append(
            {
                "cells": [cell(obj, now) for _, _, _, cell in columns],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta or {}),
        "columnDefinitions": [
            {
                "name": col,
                "type": kind,
                "format": "name" if col == "Name" else "",
                "description": DESCRIPTIONS.get(col, col),
                "priority": priority,
            }
            for col, kind, priority, _ in columns
        ],
        "rows": rows,
    }
