"""A container's environment as the kubelet builds it: envFrom sources, then
env (values with $(VAR) references expanded, fieldRef from the pod,
configMapKeyRef and secretKeyRef read through the API), then what the
agent adds (POD_IP). A missing ConfigMap, Secret or key that is not
optional is a CreateContainerConfigError, as in Kubernetes."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

Object = dict[str, Any]
# (kind "configmaps" | "secrets", namespace, name) -> the object, or None.
Lookup = Callable[[str, str, str], Awaitable[Object | None]]
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ConfigError(Exception):
    """CreateContainerConfigError: the container's configuration cannot be built."""


def expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) from what is defined so far; $$ is a literal $; unknown stays."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


def field_value(pod: Object, path: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


async def _data(lookup: Lookup, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
    obj = await lookup(kind, namespace, name)
    singular = {"configmaps": "configmap", "secrets": "secret"}[kind]
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{singular} "{name}" not found')
    data = dict(obj.get("data") or {})
    if kind == "secrets":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
    return {k: str(v) for k, v in data.items()}


async def container_env(pod: Object, container: Object, lookup: Lookup, base: dict[str, str]) -> dict[str, str]:
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env = dict(base)
    for source in container.get("envFrom") or ():
        prefix = str(source.get("prefix") or "")
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = source.get(key)
            if ref:
                data = await _data(lookup, kind, namespace, str(ref.get("name")), bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or ():
        name = str(var.get("name"))
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"] or {}
        if "fieldRef" in source:
            env[name] = field_value(pod, str(source["fieldRef"].get("fieldPath")))
            continue
        for kind, key, what in (("configmaps", "configMapKeyRef", "ConfigMap"), ("secrets", "secretKeyRef", "Secret")):
            ref = source.get(key)
            if not ref:
                continue
            optional = bool(ref.get("optional"))
            data = await _data(lookup, kind, namespace, str(ref.get("name")), optional)
            if data is None:
                break
            if ref.get("key") not in data:
                if optional:
                    break
                raise ConfigError(f"couldn't find key {ref.get('key')} in {what} {namespace}/{ref.get('name')}")
            env[name] = data[ref["key"]]
            break
        else:
            if "resourceFieldRef" in source:
                raise ConfigError("resourceFieldRef is not supported by this agent")
    return env
