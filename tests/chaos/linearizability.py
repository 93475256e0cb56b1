"""A linearizability checker for histories of register operations: the
Wing-Gong-Lowe search with Lowe's memoisation of (linearized set, state),
as Porcupine implements it, run per key (a history of independent registers
is linearizable iff each key's sub-history is: P-compositionality).

Operations: write(v), read() -> v, cas(old, new) -> succeeded. An operation
whose outcome is unknown (the client got an error that does not prove the
request never took effect) returns at infinity with an unknown output: it
may take effect at any point after its call, or never (at infinity it
affects no read). A read whose outcome is unknown observes nothing and is
dropped; an operation that surely did not happen must not be in the history.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

UNKNOWN: Any = object()


@dataclass(frozen=True)
class Op:
    client: int
    kind: str  # "write" | "read" | "cas"
    key: Hashable
    arg: Any  # write: value; cas: (old, new); read: None
    result: Any  # read: value or None; cas: bool; write: None; or UNKNOWN
    call: float
    ret: float = math.inf


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register model: is `op` with its result possible in `state`, and
    what state follows."""
    if op.kind == "write":
        return True, op.arg
    if op.kind == "read":
        return op.result is UNKNOWN or op.result == state, state
    old, new = op.arg
    matches = state == old
    if op.result is not UNKNOWN and op.result != matches:
        return False, state
    return True, new if matches else state


@dataclass
class _Entry:
    time: float
    op_id: int
    is_call: bool
    match: _Entry | None = None
    prev: _Entry | None = None
    next: _Entry | None = None


def _build(ops: list[Op]) -> _Entry:
    events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op id)
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((op.ret, 1, i))
    # At equal times calls come first: the two operations count as concurrent.
    events.sort()
    head = _Entry(-math.inf, -1, False)
    calls: dict[int, _Entry] = {}
    prev = head
    for t, kind, i in events:
        entry = _Entry(t, i, kind == 0, prev=prev)
        prev.next = entry
        prev = entry
        if kind == 0:
            calls[i] = entry
        else:
            calls[i].match = entry
    return head


def _lift(entry: _Entry) -> None:
    entry.prev.next = entry.next  # type: ignore[union-attr]
    if entry.next is not None:
        entry.next.prev = entry.prev
    match = entry.match
    assert match is not None
    match.prev.next = match.next  # type: ignore[union-attr]
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    match = entry.match
    assert match is not None
    match.prev.next = match  # type: ignore[union-attr]
    if match.next is not None:
        match.next.prev = match
    entry.prev.next = entry  # type: ignore[union-attr]
    if entry.next is not None:
        entry.next.prev = entry


def check_register(ops: list[Op], initial: Any = None) -> bool:
    """Is this single-register history linearizable?"""
    ops = [op for op in ops if not (op.kind == "read" and op.result is UNKNOWN)]
    if not ops:
        return True
    head = _build(ops)
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
    linearized = 0
    state = initial
    entry = head.next
    while head.next is not None:
        assert entry is not None
        if entry.is_call:
            ok, new_state = step(state, ops[entry.op_id])
            if ok:
                new_linearized = linearized | (1 << entry.op_id)
                key = (new_linearized, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, new_linearized
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not linearized yet: undo the last choice.
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op_id)
            _unlift(entry)
            entry = entry.next
    return True


@dataclass
class Verdict:
    ok: bool
    keys: int
    operations: int
    failed_keys: list[Hashable] = field(default_factory=list)


def check(history: Iterable[Op], initial: Any = None) -> Verdict:
    """Check a history of many registers, one key at a time."""
    by_key: dict[Hashable, list[Op]] = defaultdict(list)
    count = 0
    for op in history:
        by_key[op.key].append(op)
        count += 1
    failed = [key for key, ops in by_key.items() if not check_register(ops, initial)]
    return Verdict(not failed, len(by_key), count, failed)
