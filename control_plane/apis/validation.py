"""Validation of API objects, with field paths as Kubernetes reports them
(`spec.containers[0].image: Required value`). Pure functions of the object.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from control_plane.apis.errors import Cause
from control_plane.apis.quantity import parse_quantity
from control_plane.apis.resources import Resource

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_ANNOTATIONS_BYTES = 256 * 1024

Check = Callable[[dict[str, Any], list[Cause]], None]


def required(causes: list[Cause], path: str) -> None:
    causes.append(Cause(path, "Required value", "FieldValueRequired"))


def bad(causes: list[Cause], path: str, value: Any, why: str) -> None:
    # Quoted as Kubernetes (Go's %q) quotes them: "value", not 'value'.
    shown = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else repr(value)
    causes.append(Cause(path, f"Invalid value: {shown}: {why}", "FieldValueInvalid"))


def dns_label(causes: list[Cause], path: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > 63 or not DNS1123_LABEL.match(value):
        bad(
            causes,
            path,
            value,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')",
        )


def dns_subdomain(causes: list[Cause], path: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > 253 or not DNS1123_SUBDOMAIN.match(value):
        bad(
            causes,
            path,
            value,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com')",
        )


def path_segment(causes: list[Cause], path: str, value: Any) -> None:
    if not isinstance(value, str) or value in (".", "..") or "/" in value or "%" in value or not value:
        bad(causes, path, value, "may not be '.' or '..' and may not contain '/' or '%'")


def qualified_key(causes: list[Cause], path: str, key: Any) -> None:
    if not isinstance(key, str):
        bad(causes, path, key, "must be a string")
        return
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        bad(causes, path, key, "prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        bad(
            causes,
            path,
            key,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character",
        )


def validate_metadata(resource: Resource, obj: dict[str, Any], causes: list[Cause]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        required(causes, "metadata")
        return
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        causes.append(Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired"))
    elif name:
        if resource.group == "rbac.authorization.k8s.io":
            path_segment(causes, "metadata.name", name)
        elif resource.plural in ("namespaces", "services"):
            dns_label(causes, "metadata.name", name)
        else:
            dns_subdomain(causes, "metadata.name", name)
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        bad(causes, "metadata.labels", labels, "must be a map")
    else:
        for key, value in labels.items():
            qualified_key(causes, "metadata.labels", key)
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                bad(
                    causes,
                    "metadata.labels",
                    value,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
                    "or '.', and must start and end with an alphanumeric character",
                )
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        bad(causes, "metadata.annotations", annotations, "must be a map")
    else:
        size = 0
        for key, value in annotations.items():
            qualified_key(causes, "metadata.annotations", key)
            size += len(str(key)) + len(str(value))
        if size > MAX_ANNOTATIONS_BYTES:
            causes.append(
                Cause(
                    "metadata.annotations",
                    f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes",
                    "FieldValueTooLong",
                )
            )
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for field_name in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(ref, dict) or not ref.get(field_name):
                required(causes, f"metadata.ownerReferences[{i}].{field_name}")


def _ports(causes: list[Cause], path: str, ports: Any, key: str = "containerPort") -> None:
    if ports is None:
        return
    if not isinstance(ports, list):
        bad(causes, path, ports, "must be a list")
        return
    for i, port in enumerate(ports):
        value = port.get(key) if isinstance(port, dict) else None
        if not isinstance(value, int) or not 0 < value < 65536:
            bad(causes, f"{path}[{i}].{key}", value, "must be between 1 and 65535, inclusive")
        protocol = port.get("protocol", "TCP") if isinstance(port, dict) else "TCP"
        if protocol not in ("TCP", "UDP", "SCTP"):
            causes.append(
                Cause(
                    f"{path}[{i}].protocol",
                    f'Unsupported value: "{protocol}": supported values: "SCTP", "TCP", "UDP"',
                    "FieldValueNotSupported",
                )
            )


def _resources(causes: list[Cause], path: str, resources: Any) -> None:
    if resources is None:
        return
    if not isinstance(resources, dict):
        bad(causes, path, resources, "must be an object")
        return
    parsed = {
        kind: _quantities(causes, f"{path}.{kind}", resources.get(kind), False) for kind in ("requests", "limits")
    }
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:
            bad(
                causes,
                f"{path}.requests[{name}]",
                resources["requests"][name],
                f"must be less than or equal to {name} limit of {resources['limits'][name]}",
            )


_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_VOLUME_SOURCES = frozenset((
    "emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected", "persistentVolumeClaim",
    "nfs", "csi", "ephemeral", "iscsi", "rbd", "cephfs", "fc", "azureFile", "azureDisk", "gcePersistentDisk",
    "awsElasticBlockStore", "gitRepo", "glusterfs", "portworxVolume", "scaleIO", "storageos", "vsphereVolume",
    "quobyte", "photonPersistentDisk", "flocker", "flexVolume", "cinder", "image",
))  # fmt: skip
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def _port_or_name(causes: list[Cause], path: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value < 65536:
            bad(causes, path, value, "must be between 1 and 65535, inclusive")
    elif isinstance(value, str) and value:
        if not (value.isdigit() and 0 < int(value) < 65536) and not re.fullmatch(
            r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", value
        ):
            bad(causes, path, value, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    else:
        required(causes, path)


def _probe(causes: list[Cause], path: str, probe: Any, kind: str) -> None:
    """A probe as Kubernetes validates it: one handler, sane timings."""
    if probe is None:
        return
    if not isinstance(probe, dict):
        bad(causes, path, probe, "must be an object")
        return
    handlers = [h for h in _PROBE_HANDLERS if probe.get(h) is not None]
    if not handlers:
        causes.append(Cause(path, "Required value: must specify a handler type", "FieldValueRequired"))
    elif len(handlers) > 1:
        causes.append(
            Cause(f"{path}.{handlers[1]}", "Forbidden: may not specify more than 1 handler type", "FieldValueForbidden")
        )
    for handler in handlers[:1]:
        body = probe[handler]
        if not isinstance(body, dict):
            bad(causes, f"{path}.{handler}", body, "must be an object")
        elif handler == "exec" and not body.get("command"):
            required(causes, f"{path}.exec.command")
        elif handler in ("httpGet", "tcpSocket"):
            _port_or_name(causes, f"{path}.{handler}.port", body.get("port"))
            scheme = body.get("scheme", "HTTP")
            if handler == "httpGet" and scheme not in ("HTTP", "HTTPS"):
                causes.append(
                    Cause(
                        f"{path}.httpGet.scheme",
                        f'Unsupported value: "{scheme}": supported values: "HTTP", "HTTPS"',
                        "FieldValueNotSupported",
                    )
                )
        elif handler == "grpc":
            _port_or_name(causes, f"{path}.grpc.port", body.get("port"))
    for field_name, least in (("initialDelaySeconds", 0), ("periodSeconds", 1), ("timeoutSeconds", 1),
                              ("successThreshold", 1), ("failureThreshold", 1)):  # fmt: skip
        value = probe.get(field_name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            why = "must be greater than or equal to 0" if least == 0 else "must be greater than or equal to 1"
            bad(causes, f"{path}.{field_name}", value, why)
    if kind in ("livenessProbe", "startupProbe") and probe.get("successThreshold") not in (None, 1):
        bad(causes, f"{path}.successThreshold", probe.get("successThreshold"), "must be 1")


def _objects(causes: list[Cause], path: str, items: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of an optional list, with their paths; a list that is
    not one, or an item that is not an object, becomes a cause."""
    if items is None:
        return
    if not isinstance(items, list):
        bad(causes, path, items, "must be a list")
        return
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if isinstance(item, dict):
            yield where, item
        else:
            bad(causes, where, item, "must be an object")


def _named_objects(causes: list[Cause], path: str, items: Any, names: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """_objects whose items each have a unique DNS-label name (containers,
    volumes). Every name seen is added to `names`."""
    for where, item in _objects(causes, path, items):
        name = item.get("name")
        if not name:
            required(causes, f"{where}.name")
        else:
            dns_label(causes, f"{where}.name", name)
            if name in names:
                causes.append(Cause(f"{where}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
            names.add(str(name))
        yield where, item


def _volumes(causes: list[Cause], path: str, volumes: Any) -> set[str]:
    """The pod's volumes (each named once, with one source); their names."""
    names: set[str] = set()
    for where, volume in _named_objects(causes, path, volumes, names):
        sources = [k for k in volume if k in _VOLUME_SOURCES]
        if not sources:
            causes.append(Cause(where, "Required value: must specify a volume type", "FieldValueRequired"))
        elif len(sources) > 1:
            causes.append(
                Cause(
                    f"{where}.{sources[1]}", "Forbidden: may not specify more than 1 volume type", "FieldValueForbidden"
                )
            )
        host_path = volume.get("hostPath")
        if isinstance(host_path, dict) and not str(host_path.get("path") or "").startswith("/"):
            bad(causes, f"{where}.hostPath.path", host_path.get("path"), "must be an absolute path")
    return names


def _volume_mounts(causes: list[Cause], path: str, mounts: Any, volumes: set[str]) -> None:
    seen: set[str] = set()
    for where, mount in _objects(causes, path, mounts):
        name = mount.get("name")
        if not name:
            required(causes, f"{where}.name")
        elif name not in volumes:
            causes.append(Cause(f"{where}.name", f'Not found: "{name}"', "FieldValueNotFound"))
        mount_path = mount.get("mountPath")
        if not mount_path:
            required(causes, f"{where}.mountPath")
        elif mount_path in seen:
            bad(causes, f"{where}.mountPath", mount_path, "must be unique")
        else:
            seen.add(str(mount_path))
        sub = str(mount.get("subPath") or "")
        if sub.startswith("/") or ".." in sub.split("/"):
            bad(causes, f"{where}.subPath", sub, "must be a relative path without '..'")


def validate_pod_spec(
    spec: Any, path: str, causes: list[Cause], restart_policies: tuple[str, ...] = ("Always", "OnFailure", "Never")
) -> None:
    if not isinstance(spec, dict):
        required(causes, path)
        return
    containers = spec.get("containers")
    if not containers:
        required(causes, f"{path}.containers")
    volumes = _volumes(causes, f"{path}.volumes", spec.get("volumes"))
    for list_name in ("initContainers", "containers"):
        for where, c in _named_objects(causes, f"{path}.{list_name}", spec.get(list_name) or [], set()):
            if not c.get("image"):
                required(causes, f"{where}.image")
            # Each check runs (and builds its field path) only for what the
            # container has: on every pod create, most of these are absent.
            if (ports := c.get("ports")) is not None:
                _ports(causes, f"{where}.ports", ports)
            if (resources := c.get("resources")) is not None:
                _resources(causes, f"{where}.resources", resources)
            if (mounts := c.get("volumeMounts")) is not None:
                _volume_mounts(causes, f"{where}.volumeMounts", mounts, volumes)
            for kind in _PROBES:
                if (probe := c.get(kind)) is not None:
                    _probe(causes, f"{where}.{kind}", probe, kind)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in restart_policies:
        supported = ", ".join(f'"{p}"' for p in restart_policies)
        causes.append(
            Cause(
                f"{path}.restartPolicy",
                f'Unsupported value: "{policy}": supported values: {supported}',
                "FieldValueNotSupported",
            )
        )


def _selector_matches(selector: Any, labels: dict[str, Any]) -> bool:
    if not isinstance(selector, dict):
        return False
    match_labels = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(match_labels or selector.get("matchExpressions"))


def validate_workload(obj: dict[str, Any], causes: list[Cause], restart: tuple[str, ...] = ("Always",)) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        required(causes, "spec")
        return
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        bad(causes, "spec.replicas", replicas, "must be greater than or equal to 0")
    selector = spec.get("selector")
    template = spec.get("template")
    if not selector:
        required(causes, "spec.selector")
    if not isinstance(template, dict):
        required(causes, "spec.template")
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector and not _selector_matches(selector, labels):
        bad(causes, "spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    validate_pod_spec(template.get("spec"), "spec.template.spec", causes, restart)


def validate_job(obj: dict[str, Any], causes: list[Cause]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        required(causes, "spec")
        return
    template = spec.get("template")
    if not isinstance(template, dict):
        required(causes, "spec.template")
        return
    validate_pod_spec(template.get("spec"), "spec.template.spec", causes, ("OnFailure", "Never"))
    if isinstance(template.get("spec"), dict) and "restartPolicy" not in template["spec"]:
        causes.append(
            Cause(
                "spec.template.spec.restartPolicy",
                'Required value: valid values: "OnFailure", "Never"',
                "FieldValueRequired",
            )
        )


def validate_cron_job(obj: dict[str, Any], causes: list[Cause]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        required(causes, "spec")
        return
    schedule = spec.get("schedule")
    if not schedule:
        required(causes, "spec.schedule")
    elif not (schedule.startswith("@") or len(str(schedule).split()) == 5):
        bad(causes, "spec.schedule", schedule, "unparseable cron schedule (expects 5 fields or @hourly-style)")
    job_template = spec.get("jobTemplate")
    if not isinstance(job_template, dict):
        required(causes, "spec.jobTemplate")
        return
    inner: list[Cause] = []
    validate_job(job_template, inner)
    causes.extend(Cause(f"spec.jobTemplate.{c.field}", c.message, c.reason) for c in inner)


def validate_pod(obj: dict[str, Any], causes: list[Cause]) -> None:
    validate_pod_spec(obj.get("spec"), "spec", causes)


def validate_service(obj: dict[str, Any], causes: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(Cause("spec.type", f'Unsupported value: "{kind}"', "FieldValueNotSupported"))
    if kind == "ExternalName":
        if not spec.get("externalName"):
            required(causes, "spec.externalName")
        return
    if not spec.get("ports") and spec.get("clusterIP") != "None":
        required(causes, "spec.ports")
    _ports(causes, "spec.ports", spec.get("ports"), key="port")


def validate_config_data(obj: dict[str, Any], causes: list[Cause], base64_values: bool) -> None:
    for section in ("data", "binaryData", "stringData"):
        data = obj.get(section)
        if data is None:
            continue
        if not isinstance(data, dict):
            bad(causes, section, data, "must be a map")
            continue
        for key, value in data.items():
            if not CONFIG_KEY.match(str(key)):
                bad(
                    causes,
                    f"{section}[{key}]",
                    key,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                )
            if (base64_values and section == "data") or section == "binaryData":
                try:
                    base64.b64decode(str(value), validate=True)
                except binascii.Error:
                    bad(causes, f"{section}[{key}]", "<value>", "illegal base64 data")


def validate_role(obj: dict[str, Any], causes: list[Cause]) -> None:
    for i, rule in enumerate(obj.get("rules") or []):
        if not isinstance(rule, dict) or not rule.get("verbs"):
            required(causes, f"rules[{i}].verbs")


def validate_binding(obj: dict[str, Any], causes: list[Cause]) -> None:
    ref = obj.get("roleRef")
    if not isinstance(ref, dict):
        required(causes, "roleRef")
        return
    for name in ("kind", "name"):
        if not ref.get(name):
            required(causes, f"roleRef.{name}")


def validate_lease(obj: dict[str, Any], causes: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    seconds = spec.get("leaseDurationSeconds")
    if seconds is not None and (not isinstance(seconds, int) or seconds <= 0):
        bad(causes, "spec.leaseDurationSeconds", seconds, "must be greater than 0")


def _quantities(causes: list[Cause], path: str, values: Any, check_names: bool = True) -> dict[str, Decimal]:
    """A resource-name -> quantity map (requests, limits, quota hard limits, limit ranges)."""
    out: dict[str, Decimal] = {}
    if values is None:
        return out
    if not isinstance(values, dict):
        bad(causes, path, values, "must be an object")
        return out
    for name, value in values.items():
        if check_names:
            qualified_key(causes, f"{path}[{name}]", name)
        try:
            quantity = parse_quantity(value)
        except ValueError as e:
            bad(causes, f"{path}[{name}]", value, str(e))
            continue
        if quantity < 0:
            bad(causes, f"{path}[{name}]", value, "must be greater than or equal to 0")
        out[name] = quantity
    return out


def validate_resource_quota(obj: dict[str, Any], causes: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    _quantities(causes, "spec.hard", spec.get("hard"))
    if spec.get("scopes") or spec.get("scopeSelector"):
        bad(causes, "spec.scopes", spec.get("scopes") or spec.get("scopeSelector"), "quota scopes are not supported")


LIMIT_TYPES = ("Container", "Pod", "PersistentVolumeClaim")


def validate_limit_range(obj: dict[str, Any], causes: list[Cause]) -> None:
    limits = (obj.get("spec") or {}).get("limits")
    if not isinstance(limits, list):
        required(causes, "spec.limits")
        return
    for i, item in enumerate(limits):
        path = f"spec.limits[{i}]"
        if not isinstance(item, dict):
            bad(causes, path, item, "must be an object")
            continue
        if item.get("type") not in LIMIT_TYPES:
            causes.append(
                Cause(
                    f"{path}.type",
                    f"Unsupported value: {item.get('type')!r}: supported values: "
                    + ", ".join(f'"{t}"' for t in LIMIT_TYPES),
                    "FieldValueNotSupported",
                )
            )
        values = {
            k: _quantities(causes, f"{path}.{k}", item.get(k)) for k in ("min", "max", "default", "defaultRequest")
        }
        _quantities(causes, f"{path}.maxLimitRequestRatio", item.get("maxLimitRequestRatio"))
        if item.get("type") == "Pod" and (values["default"] or values["defaultRequest"]):
            bad(causes, f"{path}.default", item.get("default"), "may not be specified when `type` is 'Pod'")
        # min <= defaultRequest <= default <= max, per resource.
        order = ("min", "defaultRequest", "default", "max")
        for i, lower_key in enumerate(order):
            for upper_key in order[i + 1 :]:
                for name, lower in values[lower_key].items():
                    upper = values[upper_key].get(name)
                    if upper is not None and lower > upper:
                        bad(
                            causes,
                            f"{path}.{lower_key}[{name}]",
                            item[lower_key][name],
                            f"{lower_key} value {item[lower_key][name]} is greater than {upper_key} value "
                            f"{item[upper_key][name]}",
                        )


VALIDATORS: dict[str, Check] = {
    "resourcequotas": validate_resource_quota,
    "limitranges": validate_limit_range,
    "pods": validate_pod,
    "deployments": validate_workload,
    "replicasets": validate_workload,
    "daemonsets": validate_workload,
    "statefulsets": validate_workload,
    "jobs": validate_job,
    "cronjobs": validate_cron_job,
    "services": validate_service,
    "configmaps": lambda obj, causes: validate_config_data(obj, causes, base64_values=False),
    "secrets": lambda obj, causes: validate_config_data(obj, causes, base64_values=True),
    "roles": validate_role,
    "clusterroles": validate_role,
    "rolebindings": validate_binding,
    "clusterrolebindings": validate_binding,
    "leases": validate_lease,
}


def validate(resource: Resource, obj: dict[str, Any]) -> list[Cause]:
    """Every problem with `obj` as a `resource`; empty when valid."""
    causes: list[Cause] = []
    validate_metadata(resource, obj, causes)
    check = VALIDATORS.get(resource.plural)
    if check is not None:
        check(obj, causes)
    return causes
