"""What the server stamps on every object it creates: a uid and RFC 3339
timestamps (metadata.uid, creationTimestamp, managedFields' times).

Both are made on every write, so they are made cheaply: the standard
library's str(uuid.uuid4()) goes through the UUID class's integer
arithmetic and a getrandom call per uid (here they are cut from one read
of 4 KiB), and time.strftime formats a time that is the same for every
write in the same second.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

_UIDS_PER_READ = 256
# Random bytes for the next uids, 16 each, from the OS's CSPRNG as
# uuid.uuid4 takes them; a forked child starts without its parent's.
_unused: list[bytes] = []
os.register_at_fork(after_in_child=_unused.clear)


def new_uid() -> str:
    """A random (version 4, RFC 4122 variant) UUID, written as
    str(uuid.uuid4()) writes one."""
    try:
        chunk = _unused.pop()  # atomic: threads may share the pool
    except IndexError:
        block = os.urandom(16 * _UIDS_PER_READ)
        chunk = block[:16]  # this caller's own, whoever empties the pool meanwhile
        _unused.extend(block[i : i + 16] for i in range(16, len(block), 16))
    raw = bytearray(chunk)
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=4)
def rfc3339(second: int) -> str:
    """A Unix time in whole seconds as Kubernetes writes it (2024-01-02T03:04:05Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    return rfc3339(int(clock()))
