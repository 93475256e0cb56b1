"""Discovery documents: /api, /apis, /api/v1, /apis/<group>[/<version>],
and /version, in the shapes kubectl reads."""

from __future__ import annotations

import platform
from typing import Any

from control_plane.apis.resources import Registry

GIT_VERSION = "v1.33.0-raftkube.0.1.0"


def version_info() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "raftkube",
        "gitTreeState": "clean",
        "buildDate": "2026-11-22T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }


def core_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(registry: Registry, group: str) -> dict[str, Any]:
    versions = [v for g, v in registry.group_versions() if g == group]
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for group in dict.fromkeys(g for g, _ in registry.group_versions() if g):
        groups.append(_group(registry, group))
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(registry: Registry, name: str) -> dict[str, Any] | None:
    if not any(g == name for g, _ in registry.group_versions()):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(registry, name)}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = registry.in_group_version(group, version)
    if not resources:
        return None
    out: list[dict[str, Any]] = []
    for r in resources:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub in r.subresources:
            verbs = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]}.get(sub, ["create"])
            if sub == "log":
                verbs = ["get"]
            sub_kind = {"scale": "Scale", "binding": "Binding", "eviction": "Eviction", "token": "TokenRequest"}.get(
                sub, r.kind
            )
            if sub in ("finalize",):
                verbs = ["update"]
            out.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": sub_kind,
                    "verbs": verbs,
                }
            )
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out}
