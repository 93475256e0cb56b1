"""Defaulting of API objects, as Kubernetes defaults them, so that what a
client reads back is what it would read from Kubernetes. Mutates in place;
never overrides a value the client set."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from control_plane.apis.pods import all_containers
from control_plane.apis.quantity import parse_quantity

Defaulter = Callable[[dict[str, Any]], None]


def _container(c: dict[str, Any]) -> None:
    image = str(c.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in all_containers(spec):
        _container(c)


def _template(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        if isinstance(template.get("spec"), dict):
            default_pod_spec(template["spec"])


def _requests_from_limits(c: dict[str, Any]) -> None:
    """A limit without a request requests the limit (pods only, not templates)."""
    resources = c.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
        requests = resources.setdefault("requests", {})
        if isinstance(requests, dict):
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)


def default_pod(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        default_pod_spec(spec)
        for c in all_containers(spec):
            _requests_from_limits(c)
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def prepare_pod(obj: dict[str, Any]) -> None:
    """What a new pod's status says of its spec as admitted (LimitRanger may
    have given it requests): its QoS class."""
    spec = obj.get("spec")
    if isinstance(spec, dict):
        with contextlib.suppress(ValueError, TypeError, AttributeError):  # invalid: validation says why
            obj.setdefault("status", {})["qosClass"] = qos_class(spec)


QOS_RESOURCES = ("cpu", "memory")


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' CPU and
    memory requests and limits, as Kubernetes classifies pods."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for c in all_containers(spec):
        resources = c.get("resources") or {}
        for name, value in (resources.get("requests") or {}).items():
            quantity = parse_quantity(value)
            if name in QOS_RESOURCES and quantity != 0:
                requests[name] = requests.get(name, Decimal(0)) + quantity
        found = set()
        for name, value in (resources.get("limits") or {}).items():
            quantity = parse_quantity(value)
            if name in QOS_RESOURCES and quantity != 0:
                found.add(name)
                limits[name] = limits.get(name, Decimal(0)) + quantity
        if not set(QOS_RESOURCES) <= found:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def default_deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    _template(spec)


def default_replica_set(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _template(spec)


def default_stateful_set(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {"partition": 0})
    _template(spec)


def default_daemon_set(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {"maxUnavailable": 1, "maxSurge": 0})
    _template(spec)


def default_job_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if "parallelism" not in spec:
        spec["parallelism"] = 1
    if "completions" not in spec:
        spec["completions"] = 1
    _template(spec)


def default_job(obj: dict[str, Any]) -> None:
    default_job_spec(obj.setdefault("spec", {}))


def default_cron_job(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job = spec.get("jobTemplate")
    if isinstance(job, dict) and isinstance(job.get("spec"), dict):
        default_job_spec(job["spec"])


def default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])


def default_namespace(obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def default_secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")


def default_limit_range(obj: dict[str, Any]) -> None:
    """A Container item's default limit falls back to its max, its default
    request to its default limit, then to its min (as Kubernetes)."""
    for item in (obj.get("spec") or {}).get("limits") or []:
        if not isinstance(item, dict) or item.get("type") != "Container":
            continue
        default = item.setdefault("default", {})
        request = item.setdefault("defaultRequest", {})
        if not isinstance(default, dict) or not isinstance(request, dict):
            continue
        for source, target in ((item.get("max"), default), (default, request), (item.get("min"), request)):
            for name, value in (source or {}).items() if isinstance(source, dict) else ():
                target.setdefault(name, value)
        for key in ("default", "defaultRequest"):
            if not item[key]:
                del item[key]


DEFAULTERS: dict[str, Defaulter] = {
    "limitranges": default_limit_range,
    "pods": default_pod,
    "deployments": default_deployment,
    "replicasets": default_replica_set,
    "statefulsets": default_stateful_set,
    "daemonsets": default_daemon_set,
    "jobs": default_job,
    "cronjobs": default_cron_job,
    "services": default_service,
    "namespaces": default_namespace,
    "secrets": default_secret,
}


def apply_defaults(plural: str, obj: dict[str, Any]) -> None:
    defaulter = DEFAULTERS.get(plural)
    if defaulter is not None:
        defaulter(obj)


def prepare_for_create(plural: str, obj: dict[str, Any]) -> None:
    """After admission, before validation: what the server derives from a
    new object (Kubernetes' PrepareForCreate)."""
    if plural == "pods":
        prepare_pod(obj)
