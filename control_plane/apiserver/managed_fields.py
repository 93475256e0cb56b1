"""Field ownership (metadata.managedFields) and server-side apply, as
Kubernetes' structured-merge-diff does them for the built-in types.

Every write records which manager set which fields. An update (PUT, or a
patch other than apply) gives its manager the fields whose values it
changed and takes them from everyone else. An apply gives its manager
exactly the fields of its configuration: fields it applied before and
applies no longer are removed from the object unless someone else owns
them, and a field it applies with a new value that another manager owns is
a conflict (409) unless it forces, which takes the field over.

A field path is a tuple of path elements spelled as in fieldsV1:
"f:name" for a map field, 'k:{"name":"web"}' for the item of a list that
merges by key (containers by name), 'v:"x"' for a member of a set of
primitives (finalizers). Lists that merge by no key are atomic: one field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from control_plane.apis.errors import ApiError, Cause
from control_plane.apiserver.patch import MERGE_PRIMITIVES, merge_key

Object = dict[str, Any]
Path = tuple[str, ...]

# The metadata a manager can own; the rest is the server's (name, uid, ...).
OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
_MISSING = object()


@dataclass
class Manager:
    """Who is writing: the fieldManager of the request, the operation
    (Update or Apply), and the subresource written ("" or "status")."""

    name: str
    operation: str = "Update"
    subresource: str = ""


@dataclass
class _Entry:
    manager: str
    operation: str
    api_version: str
    time: str
    subresource: str
    fields: set[Path] = field(default_factory=set)
    # The fieldsV1 the fields were decoded from, and the fields then: an
    # entry the write did not change is written back as it was read.
    tree: Object | None = None
    decoded: frozenset[Path] = frozenset()

    def same_writer(self, m: Manager) -> bool:
        return (self.manager, self.operation, self.subresource) == (m.name, m.operation, m.subresource)


# -- field sets -------------------------------------------------------------------------


Root = tuple[Any, Path, str, str]  # value, path, field name, parent field name


def _roots(obj: Object, subresource: str) -> Iterator[Root]:
    """The top-level fields of `obj` a manager can own: the status for the
    status subresource, otherwise everything but the status and server
    metadata."""
    if subresource == "status":
        if "status" in obj:
            yield obj["status"], ("f:status",), "status", ""
        return
    for key, value in obj.items():
        if key == "metadata":
            if isinstance(value, dict):
                for mkey in OWNED_METADATA:
                    if mkey in value:
                        yield value[mkey], ("f:metadata", f"f:{mkey}"), mkey, "metadata"
        elif key not in ("apiVersion", "kind", "status"):
            yield value, (f"f:{key}",), key, ""


def field_set(obj: Object, subresource: str = "") -> set[Path]:
    out: set[Path] = set()
    for value, path, name, parent in _roots(obj, subresource):
        _walk(value, path, name, parent, out)
    return out


# fieldsV1 trees already built, as JSON, by the JSON of the fields they
# describe. Objects made from one template (a ReplicaSet's pods, a
# DaemonSet's) have the same owned fields, names and uids being the
# server's, so their trees are the same; building each anew was ~7% of a
# leader's CPU under pod creates (py-spy, c=64).
_TREES: dict[bytes, bytes] = {}
_TREES_KEPT = 512
_TREE_KEY_MAX = 16 * 1024  # bigger objects (a ConfigMap's data) are built each time: keys that size would fill memory


def fields_v1_of(obj: Object, subresource: str = "") -> Object:
    """to_fields_v1(field_set(obj)), built in one walk (every create)."""
    roots = list(_roots(obj, subresource))
    try:
        key = orjson.dumps([subresource, *((path, value) for value, path, _, _ in roots)])
    except TypeError:  # keys that are not strings (YAML `1: a`): not remembered
        key = b""
    if not key or len(key) > _TREE_KEY_MAX:
        return _fields_v1(roots)
    tree = _TREES.get(key)
    if tree is None:
        if len(_TREES) >= _TREES_KEPT:
            del _TREES[next(iter(_TREES))]  # the oldest
        tree = _TREES[key] = orjson.dumps(_fields_v1(roots))
    result: Object = orjson.loads(tree)  # a copy of its own: the caller may change it
    return result


def _fields_v1(roots: list[Root]) -> Object:
    root: Object = {}
    for value, path, name, parent in roots:
        node = root
        for element in path[:-1]:
            node = node.setdefault(element, {})
        node[path[-1]] = _tree(value, name, parent)
    return root


def _tree(value: Any, name: str, parent: str) -> Object:
    shape = _shape(value, name, parent)
    if shape == "map":
        return {f"f:{k}": _tree(v, k, name) for k, v in value.items()}
    if shape == "keyed":
        key = merge_key(parent, name)
        assert key is not None
        return {
            _key_element(key, item[key]): {".": {}, **{f"f:{k}": _tree(v, k, name) for k, v in item.items()}}
            for item in value
        }
    if shape == "set":
        return {f"v:{orjson.dumps(v).decode()}": {} for v in value}
    return {}


def _walk(value: Any, path: Path, name: str, parent: str, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, f"f:{key}"), key, name, out)
        return
    if isinstance(value, list) and value:
        key = merge_key(parent, name)
        if key is not None and all(isinstance(item, dict) and key in item for item in value):
            for item in value:
                item_path = (*path, _key_element(key, item[key]))
                out.add(item_path)  # the item itself, as fieldsV1's "."
                for child_key, child in item.items():
                    _walk(child, (*item_path, f"f:{child_key}"), child_key, name, out)
            return
        if name in MERGE_PRIMITIVES and all(not isinstance(item, dict | list) for item in value):
            out.update((*path, f"v:{orjson.dumps(item).decode()}") for item in value)
            return
    out.add(path)


def _scope(subresource: str) -> str:
    """Which half of an object a subresource writes: the status, or the
    rest (scale writes spec.replicas)."""
    return "status" if subresource == "status" else ""


def _key_element(key: str, value: Any) -> str:
    # One key: no sorting to do, and orjson writes it as Go does (UTF-8 as is).
    return "k:{" + orjson.dumps(key).decode() + ":" + orjson.dumps(value).decode() + "}"


def _is_member(element: str) -> bool:
    return element.startswith(("k:", "v:"))


def value_at(obj: Any, path: Path) -> Any:
    """The value at `path`, or _MISSING."""
    node = obj
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f" and isinstance(node, dict) and rest in node:
            node = node[rest]
        elif kind == "k" and isinstance(node, list):
            [(key, wanted)] = json.loads(rest).items()
            node = next((i for i in node if isinstance(i, dict) and i.get(key) == wanted), _MISSING)
        elif kind == "v" and isinstance(node, list):
            wanted = json.loads(rest)
            node = wanted if wanted in node else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def remove_at(obj: Object, path: Path) -> None:
    """Remove the field at `path`, and the maps and lists it leaves empty."""
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    if parent is _MISSING:
        return
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind == "k" and isinstance(parent, list):
        [(key, wanted)] = json.loads(rest).items()
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == wanted)]
    elif kind == "v" and isinstance(parent, list):
        wanted = json.loads(rest)
        parent[:] = [i for i in parent if i != wanted]
    if len(path) > 1 and not parent and not _is_member(path[-2]):
        remove_at(obj, path[:-1])


def describe(path: Path) -> str:
    """A path as Kubernetes prints it in a conflict: .spec.containers[name="web"].image"""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        else:
            out += f"[={rest}]"
    return out


# -- fieldsV1 ------------------------------------------------------------------------------


def to_fields_v1(paths: Iterable[Path]) -> Object:
    root: Object = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
        node["."] = {}
    return _trim(root)


def _trim(node: Object) -> Object:
    # A field owned with nothing under it is {}; "." marks an owned field
    # that also has owned fields under it (a list item).
    children = {k: _trim(v) for k, v in node.items() if k != "."}
    if "." in node and children:
        return {".": {}, **children}
    return children


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    if prefix and (not tree or "." in tree):
        out.add(prefix)
    for element, child in tree.items():
        if element != ".":
            out |= from_fields_v1(child, (*prefix, element))
    return out


def _decode(managed: Any) -> list[_Entry]:
    entries = []
    for raw in managed if isinstance(managed, list) else []:
        if isinstance(raw, dict) and raw.get("manager") is not None:
            entries.append(
                _Entry(
                    str(raw.get("manager", "")),
                    str(raw.get("operation", "Update")),
                    str(raw.get("apiVersion", "")),
                    str(raw.get("time", "")),
                    str(raw.get("subresource", "")),
                )
            )
            entries[-1].fields = from_fields_v1(raw.get("fieldsV1"))
            entries[-1].tree = raw.get("fieldsV1")
            entries[-1].decoded = frozenset(entries[-1].fields)
    return entries


def _encode(entries: list[_Entry]) -> list[Object]:
    out = []
    for e in entries:
        if not e.fields:
            continue  # a manager that owns nothing is forgotten
        tree = e.tree if e.tree is not None and e.fields == e.decoded else to_fields_v1(e.fields)
        out.append(_raw_entry(e.manager, e.operation, e.api_version, e.time, e.subresource, tree))
    return out


def _raw_entry(manager: str, operation: str, api_version: str, time: str, subresource: str, tree: Object) -> Object:
    raw: Object = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": time}
    raw["fieldsType"] = "FieldsV1"
    raw["fieldsV1"] = tree
    if subresource:
        raw["subresource"] = subresource
    return raw


def _entry_for(entries: list[_Entry], m: Manager, api_version: str, now: str) -> _Entry:
    for e in entries:
        if e.same_writer(m):
            e.api_version, e.time = api_version, now
            return e
    e = _Entry(m.name, m.operation, api_version, now, m.subresource)
    entries.append(e)
    return e


def _owned_under(fields: set[Path], path: Path) -> bool:
    n = len(path)
    return any(p[:n] == path for p in fields)


# -- update ----------------------------------------------------------------------------------


def record_update(old: Object | None, new: Object, m: Manager, api_version: str, now: str) -> list[Object]:
    """new's managedFields after `m` wrote it over `old` (None: created):
    the fields it changed become its own and no one else's; fields gone
    from the object are no one's."""
    if old is None:
        return _created(new, m, api_version, now)
    managed = (old.get("metadata") or {}).get("managedFields")
    changed: set[Path] = set()
    gone: set[Path] = set()
    _diff_top(old, new, m.subresource, changed, gone)
    if not changed and not gone:
        return copy.deepcopy(managed) if isinstance(managed, list) else []
    entries = _decode(managed)
    for e in entries:
        if _scope(e.subresource) == _scope(m.subresource):
            e.fields -= gone
            if not e.same_writer(m):
                e.fields -= changed
    if changed:
        _entry_for(entries, m, api_version, now).fields |= changed
    return _encode(entries)


def _diff_top(old: Object, new: Object, subresource: str, changed: set[Path], gone: set[Path]) -> None:
    """The owned fields an update changed (set, or set to another value)
    and removed, over the same fields field_set() names."""
    before = {path: (value, name, parent) for value, path, name, parent in _roots(old, subresource)}
    after = {path: (value, name, parent) for value, path, name, parent in _roots(new, subresource)}
    for path in before.keys() | after.keys():
        old_value, name, parent = before.get(path, (_MISSING, "", ""))
        new_value, name, parent = after.get(path, (_MISSING, name, parent))
        _diff(old_value, new_value, path, name, parent, changed, gone)


def _shape(value: Any, name: str, parent: str) -> str:
    """How _walk sees a value: a map, a list keyed by a merge key, a set of
    primitives, or one field (a leaf)."""
    if isinstance(value, dict) and value:
        return "map"
    if isinstance(value, list) and value:
        key = merge_key(parent, name)
        if key is not None and all(isinstance(i, dict) and key in i for i in value):
            return "keyed"
        if name in MERGE_PRIMITIVES and all(not isinstance(i, dict | list) for i in value):
            return "set"
    return "leaf"


def _diff(old: Any, new: Any, path: Path, name: str, parent: str, changed: set[Path], gone: set[Path]) -> None:
    # Walks both values together, as _walk walks one; equal subtrees are
    # skipped whole, which makes an update's cost that of what it changed.
    if old is _MISSING:
        if new is not _MISSING:
            _walk(new, path, name, parent, changed)
        return
    if new is _MISSING:
        _walk(old, path, name, parent, gone)
        return
    if old == new:
        return
    shape = _shape(new, name, parent)
    if shape != _shape(old, name, parent):
        before: set[Path] = set()
        _walk(old, path, name, parent, before)
        _walk(new, path, name, parent, changed)
        gone.update(before - changed)
        return
    if shape == "map":
        for key in old.keys() | new.keys():
            _diff(old.get(key, _MISSING), new.get(key, _MISSING), (*path, f"f:{key}"), key, name, changed, gone)
    elif shape == "keyed":
        key = merge_key(parent, name)
        assert key is not None
        old_items = {json.dumps(i[key]): i for i in old}
        new_items = {json.dumps(i[key]): i for i in new}
        for ident in old_items.keys() | new_items.keys():
            o, n = old_items.get(ident, _MISSING), new_items.get(ident, _MISSING)
            item_path = (*path, _key_element(key, json.loads(ident)))
            if o is _MISSING or n is _MISSING:
                side = changed if o is _MISSING else gone
                side.add(item_path)
                item = n if o is _MISSING else o
                for child_key, child in item.items():
                    _walk(child, (*item_path, f"f:{child_key}"), child_key, name, side)
                continue
            for child_key in o.keys() | n.keys():
                _diff(
                    o.get(child_key, _MISSING),
                    n.get(child_key, _MISSING),
                    (*item_path, f"f:{child_key}"),
                    child_key,
                    name,
                    changed,
                    gone,
                )
    elif shape == "set":
        changed.update((*path, f"v:{json.dumps(v)}") for v in new if v not in old)
        gone.update((*path, f"v:{json.dumps(v)}") for v in old if v not in new)
    else:
        changed.add(path)


# -- apply -----------------------------------------------------------------------------------


def created_by_apply(config: Object, m: Manager, api_version: str, now: str) -> list[Object]:
    """The managedFields of an object `m` created by applying `config`
    (before defaulting: defaulted fields are no one's)."""
    return _created(config, Manager(m.name, "Apply", m.subresource), api_version, now)


def _created(obj: Object, m: Manager, api_version: str, now: str) -> list[Object]:
    tree = fields_v1_of(obj, m.subresource)
    if not tree:
        return []
    return [_raw_entry(m.name, m.operation, api_version, now, m.subresource, tree)]


def apply(current: Object, config: Object, m: Manager, force: bool, api_version: str, now: str) -> Object:
    """The object `m` applying `config` over `current` makes, with its
    managedFields; an ApiError 409 on conflicts."""
    config_fields = field_set(config, m.subresource)
    entries = _decode((current.get("metadata") or {}).get("managedFields"))
    others = [e for e in entries if not e.same_writer(m) and _scope(e.subresource) == _scope(m.subresource)]
    changed = {
        p
        for p in config_fields
        if not _is_member(p[-1])
        and value_at(current, p) is not _MISSING
        and value_at(current, p) != value_at(config, p)
    }
    conflicts = [(e, p) for e in others for p in sorted(changed & e.fields)]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for e in others:
        e.fields -= changed  # forced, or no one else owned them

    merged = _merge(current, config, "", "")
    mine = _entry_for(entries, m, api_version, now)
    dropped = mine.fields - config_fields
    for path in sorted(dropped, key=len):  # an item before its fields: its key finds it
        if not any(_owned_under(e.fields, path) for e in others):
            remove_at(merged, path)
    mine.fields = config_fields
    merged.setdefault("metadata", {})["managedFields"] = _encode(entries)
    return merged


def _merge(current: Any, config: Any, name: str, parent: str) -> Any:
    """config over current: maps merge, keyed lists merge by key, sets
    unite, everything else is replaced."""
    if isinstance(config, dict) and isinstance(current, dict):
        out = dict(current)
        for key, value in config.items():
            out[key] = _merge(current.get(key), value, key, name)
        return out
    if isinstance(config, list) and isinstance(current, list):
        key = merge_key(parent, name)
        if key is not None and all(isinstance(i, dict) and key in i for i in config + current):
            merged = list(current)
            for item in config:
                at = next((n for n, c in enumerate(merged) if c.get(key) == item[key]), None)
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = _merge(merged[at], item, name, name)
            return merged
        if name in MERGE_PRIMITIVES:
            return list(current) + [copy.deepcopy(i) for i in config if i not in current]
    return copy.deepcopy(config)


def _conflict_error(conflicts: list[tuple[_Entry, Path]]) -> ApiError:
    causes = [
        Cause(describe(p), f'conflict with "{e.manager}" using {e.api_version}', "FieldManagerConflict")
        for e, p in conflicts
    ]
    many = "conflict" if len(causes) == 1 else "conflicts"
    lines = ", ".join(f"{c.message}: {c.field}" for c in causes)
    return ApiError(409, "Conflict", f"Apply failed with {len(causes)} {many}: {lines}", causes=causes)
