"""OpenAPI v3 documents: /openapi/v3 lists the group-versions, and each
group-version's document lists its resource paths and operations with the
query parameters the API takes, tagged with x-kubernetes-group-version-kind
as Kubernetes tags them. kubectl reads them to learn that the server
validates fields itself (the fieldValidation parameter) instead of
validating client-side. Schemas of the types are not published yet.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from control_plane.apis.resources import Registry, Resource

_QUERY = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _operations(r: Resource, item: bool) -> dict[str, Any]:
    gvk = {"group": r.group, "version": r.version, "kind": r.kind}
    ok = {"200": {"description": "OK"}}

    def op(verb: str, action: str, params: tuple[str, ...]) -> dict[str, Any]:
        return {
            "operationId": f"{verb}{r.kind}",
            "parameters": [_param(p) for p in params],
            "responses": ok,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        }

    if item:
        ops = {"get": op("read", "get", ("pretty",))}
        if "update" in r.verbs:
            ops["put"] = op("replace", "put", _QUERY)
        if "patch" in r.verbs:
            ops["patch"] = op("patch", "patch", _QUERY)
        if "delete" in r.verbs:
            ops["delete"] = op("delete", "delete", ("dryRun", "gracePeriodSeconds", "propagationPolicy", "pretty"))
        return ops
    ops = {
        "get": op("list", "list", ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"))
    }
    if "create" in r.verbs:
        ops["post"] = op("create", "post", _QUERY)
    return ops


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = registry.in_group_version(group, version)
    if not resources:
        return None
    base = "/" + _gv_path(group, version)
    paths: dict[str, Any] = {}
    for r in resources:
        scope = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
        paths[scope] = _operations(r, item=False)
        paths[f"{scope}/{{name}}"] = _operations(r, item=True)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def root_document(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, version in registry.group_versions():
        doc = group_version_document(registry, group, version)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
