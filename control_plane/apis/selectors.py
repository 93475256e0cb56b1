"""Label and field selectors, parsed as Kubernetes parses them and matched
against objects.

Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
joined by commas. Fields: `path=value`, `path==value`, `path!=value` over
dotted paths such as metadata.name or spec.nodeName.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from control_plane.apis.errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


Labels = dict[str, str]
Requirement = Callable[[Labels], bool]


def _label_equals(key: str, value: str, equal: bool) -> Requirement:
    return lambda labels: (labels.get(key) == value) == equal


def _label_in(key: str, allowed: set[str], inside: bool) -> Requirement:
    return lambda labels: (labels.get(key) in allowed) == inside


def _label_exists(key: str, exists: bool) -> Requirement:
    return lambda labels: (key in labels) == exists


def label_matcher(selector: str) -> Matcher:
    requirements: list[Requirement] = []
    for part in _split(selector or ""):
        eq = _EQ.match(part)
        if eq:
            key, op, value = eq.groups()
            requirements.append(_label_equals(key, value, op != "!="))
            continue
        match = _SET.match(part)
        if not match:
            raise bad_request(f"unable to parse requirement: {part!r}")
        negate, key, op, values = match.groups()
        if op:
            if negate:
                raise bad_request(f"unable to parse requirement: {part!r}")
            allowed = {v.strip() for v in values.split(",") if v.strip()}
            requirements.append(_label_in(key, allowed, op == "in"))
        else:
            requirements.append(_label_exists(key, not negate))

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in requirements)

    return matches


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_equals(path: str, value: str, equal: bool) -> Matcher:
    return lambda obj: (_field(obj, path) == value) == equal


def field_matcher(selector: str) -> Matcher:
    requirements: list[Matcher] = []
    for part in _split(selector or ""):
        eq = _EQ.match(part)
        if not eq:
            raise bad_request(f"invalid field selector: {part!r}")
        path, op, value = eq.groups()
        requirements.append(_field_equals(path, value, op != "!="))
    return lambda obj: all(r(obj) for r in requirements)


def field_equalities(selector: str) -> dict[str, str]:
    """The `path=value` requirements of a field selector (what a list is
    limited to, for authorizers that allow only some lists); a selector
    that does not parse has none."""
    out: dict[str, str] = {}
    for part in _split(selector or ""):
        eq = _EQ.match(part)
        if eq and eq.group(2) != "!=":
            out[eq.group(1)] = eq.group(3)
    return out


_NOT_A_STRING = re.compile(r"^(-?\d+(\.\d+)?|true|false)$")


def field_prefilter(selector: str) -> Callable[[bytes], bool]:
    """A test on an object's stored JSON that is False only when the object
    cannot match the field selector, so a watch need not parse the objects
    it will not send (a node's watch of its pods sees every pod in the
    cluster change). `path=value` needs `"value"` somewhere in the bytes,
    `path!=` (set at all) needs the key; anything else is not pre-judged."""
    needles: list[bytes] = []
    for part in _split(selector or ""):
        eq = _EQ.match(part)
        if not eq:
            return lambda raw: True
        path, op, value = eq.groups()
        if op != "!=" and value and not _NOT_A_STRING.match(value):
            needles.append(b'"%s"' % value.encode())
        elif op == "!=" and not value:
            needles.append(b'"%s":' % path.rsplit(".", 1)[-1].encode())
    if not needles:
        return lambda raw: True
    return lambda raw: all(needle in raw for needle in needles)
