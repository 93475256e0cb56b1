"""Waiting for a condition with a deadline, never a blind sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 30.0,
    detail: Callable[[], str] = str,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = 0.05,
) -> None:
    """Poll `condition` until it holds; fail naming `what` (and `detail()`)
    after `timeout` seconds. Exceptions in `ignore` count as not yet (a
    master that does not answer yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except ignore:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what} {detail()}".rstrip()
        time.sleep(interval)


def holds_for(condition: Callable[[], bool], what: str, seconds: float, interval: float = 0.1) -> None:
    """Check that `condition` keeps holding for `seconds` (something that
    must not happen, such as a restart, has a chance to); fail the moment
    it does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), f"{what} stopped holding"
        time.sleep(interval)
