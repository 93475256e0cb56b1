"""When a container's log lines were written, for `kubectl logs --since`
and `--timestamps`.

A container writes its log file directly (so that it outlives the agent,
which is not in the way of its output). The agent notes, every second,
how long each running container's log has grown: a `LOG.times` file of
"<unix time> <size>" lines, one per change. A byte's time is that of the
first note that counted it, so a line's timestamp is when the agent saw it
(at most a second late) and `--since` may include up to a second more
than asked. Output written while no agent ran is dated when the next one
saw it.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time

SAMPLE_EVERY = 1.0


def times_path(log_path: str) -> str:
    return log_path + ".times"


class LogClock:
    """The agent's notes of how each log grew."""

    def __init__(self) -> None:
        self._sizes: dict[str, int] = {}

    def sample(self, log_path: str, now: float | None = None) -> None:
        try:
            size = os.stat(log_path).st_size
        except OSError:
            return
        known = self._sizes.get(log_path)
        if known is None:
            noted = read_times(log_path)
            known = noted[-1][1] if noted else 0
        if size > known:
            with open(times_path(log_path), "a", encoding="ascii") as f:
                f.write(f"{time.time() if now is None else now:.6f} {size}\n")
        self._sizes[log_path] = max(size, known)

    def forget(self, log_path: str) -> None:
        self._sizes.pop(log_path, None)


def read_times(log_path: str) -> list[tuple[float, int]]:
    """The notes of a log: (time, size it had grown to), oldest first."""
    notes: list[tuple[float, int]] = []
    with contextlib.suppress(OSError), open(times_path(log_path), encoding="ascii") as f:
        for line in f:
            parts = line.split()
            with contextlib.suppress(ValueError, IndexError):
                notes.append((float(parts[0]), int(parts[1])))
    return notes


def offset_since(notes: list[tuple[float, int]], since: float) -> int:
    """Where the output newer than `since` starts: after everything the
    notes saw by then."""
    i = bisect.bisect_right([t for t, _ in notes], since)
    return notes[i - 1][1] if i else 0


def rfc3339_nano(t: float) -> str:
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1e9):09d}Z"


class Stamper:
    """Prefixes each line with its time, as `kubectl logs --timestamps`
    shows it, across chunks that may split lines."""

    def __init__(self, notes: list[tuple[float, int]], offset: int):
        self.notes = notes
        self.sizes = [size for _, size in notes]
        self.offset = offset
        self.at_line_start = True

    def _time_of(self, offset: int) -> float:
        i = bisect.bisect_right(self.sizes, offset)  # the first note that counted this byte
        return self.notes[i][0] if i < len(self.notes) else time.time()

    def stamp(self, data: bytes) -> bytes:
        out = bytearray()
        for line in data.splitlines(keepends=True):
            if self.at_line_start:
                out += rfc3339_nano(self._time_of(self.offset)).encode() + b" "
            out += line
            self.offset += len(line)
            self.at_line_start = line.endswith(b"\n")
        return bytes(out)
