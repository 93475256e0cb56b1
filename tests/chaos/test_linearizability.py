"""The checker itself, on histories whose verdict is known."""

from __future__ import annotations

import math
import random

import pytest

from tests.chaos.linearizability import UNKNOWN, Op, check, check_register


def w(c: int, v: object, call: float, ret: float = math.inf, key: str = "k") -> Op:
    return Op(c, "write", key, v, None, call, ret)


def r(c: int, v: object, call: float, ret: float, key: str = "k") -> Op:
    return Op(c, "read", key, None, v, call, ret)


def cas(c: int, old: object, new: object, ok: object, call: float, ret: float = math.inf) -> Op:
    return Op(c, "cas", "k", (old, new), ok, call, ret)


@pytest.mark.parametrize(
    ("history", "linearizable"),
    [
        pytest.param([w(0, 1, 0, 1), r(1, 1, 2, 3)], True, id="sequential"),
        pytest.param([w(0, 1, 0, 1), r(1, None, 2, 3)], False, id="stale-read-after-ack"),
        pytest.param([w(0, 1, 0, 10), r(1, None, 2, 3), r(2, 1, 4, 5)], True, id="read-during-write"),
        pytest.param([w(0, 1, 0, 10), r(1, 1, 2, 3), r(2, None, 4, 5)], False, id="new-then-old"),
        pytest.param([w(0, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)], False, id="lost-update"),
        pytest.param(
            [w(0, 1, 0, 1), cas(1, 1, 2, True, 2, 3), cas(2, 1, 3, True, 4, 5)], False, id="two-cas-from-same-value"
        ),
        pytest.param(
            [w(0, 1, 0, 1), cas(1, 1, 2, True, 2, 6), cas(2, 1, 3, False, 3, 5), r(3, 2, 7, 8)],
            True,
            id="concurrent-cas-one-wins",
        ),
        pytest.param([w(0, 1, 0, 1), w(1, 2, 2), r(2, 2, 5, 6)], True, id="unknown-write-seen"),
        pytest.param([w(0, 1, 0, 1), w(1, 2, 2), r(2, 1, 5, 6)], True, id="unknown-write-not-yet-seen"),
        pytest.param(
            [w(0, 1, 0, 1), w(1, 2, 2), r(2, 2, 5, 6), r(3, 1, 7, 8)], False, id="unknown-write-seen-then-unseen"
        ),
        pytest.param([w(0, 1, 0, 1), cas(1, 1, 2, UNKNOWN, 2), r(2, 2, 5, 6)], True, id="unknown-cas-applied"),
        pytest.param([w(0, 1, 0, 1), r(1, 7, 2, 3)], False, id="value-never-written"),
    ],
)
def test_known_histories(history: list[Op], linearizable: bool) -> None:
    assert check_register(history) is linearizable


def test_partitioned_by_key() -> None:
    history = [w(0, 1, 0, 1, key="a"), r(1, 1, 2, 3, key="a"), w(0, 1, 0, 1, key="b"), r(1, None, 2, 3, key="b")]
    verdict = check(history)
    assert not verdict.ok and verdict.failed_keys == ["b"] and verdict.keys == 2


def test_a_long_concurrent_history_checks_quickly() -> None:
    """A real register run by 6 clients: 3,000 overlapping operations."""
    rng = random.Random(7)
    value: object = None
    history = []
    t = 0.0
    pending: list[tuple[float, Op]] = []
    for i in range(3000):
        t += rng.random()
        client = i % 6
        kind = rng.choice(["write", "read", "cas"])
        # Effect at time t; call a little before and return a little after.
        call, ret = t - rng.random() * 2, t + rng.random() * 2
        if kind == "write":
            value = i
            op = Op(client, "write", "k", i, None, call, ret)
        elif kind == "read":
            op = Op(client, "read", "k", None, value, call, ret)
        else:
            ok = value == i - 1
            op = Op(client, "cas", "k", (i - 1, i), ok, call, ret)
            if ok:
                value = i
        pending.append((t, op))
    history = [op for _, op in pending]
    assert check_register(history)
    broken = list(history)
    index = next(i for i, op in enumerate(broken) if op.kind == "read" and op.result is not None and i > 2000)
    bad = broken[index]
    broken[index] = Op(bad.client, "read", "k", None, -1, bad.call, bad.ret)
    assert not check_register(broken)
