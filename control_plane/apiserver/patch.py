"""The patch types of the Kubernetes API: JSON merge patch (RFC 7386), JSON
patch (RFC 6902), and strategic merge patch, which merges lists of the
built-in types by key (containers by name, ports by number...) and honours
the directives kubectl sends ($patch, $setElementOrder, $retainKeys,
$deleteFromPrimitiveList).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from control_plane.apis import errors

Object = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Object, patch: Any) -> Object:
    if not isinstance(patch, list):
        raise errors.bad_request("a JSON patch must be a list of operations")
    try:
        result = jsonpatch.JsonPatch(patch).apply(target)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as e:
        raise ApiErrorPatch(str(e)) from None
    if not isinstance(result, dict):
        raise errors.bad_request("the patched document is not an object")
    return result


class ApiErrorPatch(errors.ApiError):
    def __init__(self, message: str):
        super().__init__(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


# -- strategic merge ---------------------------------------------------------------

# (parent field, list field) -> merge key, from the Go types' patchMergeKey tags.
# "*" matches any parent. A list not listed here is replaced as a whole.
MERGE_KEYS: dict[tuple[str, str], str] = {
    ("*", "containers"): "name",
    ("*", "initContainers"): "name",
    ("*", "ephemeralContainers"): "name",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("spec", "ports"): "port",  # ServiceSpec.Ports
    ("*", "env"): "name",
    ("*", "volumeMounts"): "mountPath",
    ("*", "volumeDevices"): "devicePath",
    ("*", "volumes"): "name",
    ("*", "imagePullSecrets"): "name",
    ("*", "hostAliases"): "ip",
    ("*", "topologySpreadConstraints"): "topologyKey",
    ("*", "readinessGates"): "conditionType",
    ("*", "resourceClaims"): "name",
    ("*", "ownerReferences"): "uid",
    ("*", "conditions"): "type",
    ("status", "addresses"): "type",
    ("*", "containerStatuses"): "name",
    ("*", "initContainerStatuses"): "name",
}
# Lists of primitives with set semantics (patchStrategy:"merge").
MERGE_PRIMITIVES = {"finalizers"}


def merge_key(parent: str, field: str) -> str | None:
    """The key a list merges by, given the field holding the object it is
    in (a container's ports merge by containerPort, a service's by port)."""
    return MERGE_KEYS.get((parent, field)) or MERGE_KEYS.get(("*", field))


def strategic_merge(target: Any, patch: Any, parent: str = "") -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch) if not (isinstance(patch, dict) and patch.get("$patch") == "delete") else None
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if key.startswith("$setElementOrder/") or key.startswith("$deleteFromPrimitiveList/"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, list):
            result[key] = _merge_list(current, value, key, parent)
        elif isinstance(value, dict):
            merged = strategic_merge(current if isinstance(current, dict) else {}, value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
        if key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = _reorder(result[field], value, merge_key(parent, field))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list[Any], field: str, parent: str) -> list[Any]:
    current_list = current if isinstance(current, list) else []
    # {"$patch": "replace"} among the items: the list is replaced by the others.
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and v.get("$patch") == "replace")]
    if field in MERGE_PRIMITIVES and all(not isinstance(v, dict) for v in patch):
        merged = list(current_list)
        merged.extend(v for v in patch if v not in merged)
        return merged
    key = merge_key(parent, field)
    if key is None or not all(isinstance(v, dict) for v in patch):
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(v) for v in current_list]
    for item in patch:
        ident = item.get(key)
        index = next((i for i, v in enumerate(merged) if isinstance(v, dict) and v.get(key) == ident), None)
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
            continue
        if index is None:
            merged.append(strategic_merge({}, item, field))
        else:
            merged[index] = strategic_merge(merged[index], item, field)
    return merged


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """$setElementOrder: the patch says the order; items it does not name
    keep their place after the named ones."""

    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(v) for v in order]
    by_ident = {ident(v): v for v in items}
    ordered = [by_ident[i] for i in wanted if i in by_ident]
    rest = [v for v in items if ident(v) not in wanted]
    return ordered + rest


def apply_patch(content_type: str, target: Object, body: Any) -> Object:
    kind = content_type.split(";")[0].strip()
    if kind == MERGE_PATCH:
        if not isinstance(body, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        return merge_patch(target, body)
    if kind == JSON_PATCH:
        return json_patch(target, body)
    if kind == STRATEGIC_MERGE_PATCH:
        if not isinstance(body, dict):
            raise errors.bad_request("a strategic merge patch must be a JSON object")
        result = strategic_merge(target, body)
        return result if isinstance(result, dict) else {}
    raise errors.unsupported_media_type(content_type)
