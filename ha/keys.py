"""Key-range helpers shared by the store and its clients: prefix ends and the
continue tokens of paged ranges.

A range is etcd's [key, range_end): an empty range_end means the single key
`key`, and b"\\0" means every key from `key` on.
"""

import base64
import binascii
import struct

ALL_KEYS_FROM = b"\0"


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    # The prefix is all 0xff bytes (or empty): everything after it.
    return ALL_KEYS_FROM


def encode_continue(revision: int, next_key: bytes) -> str:
    """A token that resumes a range at `next_key`, read at `revision`."""
    return base64.urlsafe_b64encode(struct.pack(">q", revision) + next_key).decode("ascii")


def decode_continue(token: str) -> tuple[int, bytes]:
    """(revision, next_key) of a continue token; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"malformed continue token: {e}") from None
    if len(raw) < 9:
        raise ValueError("malformed continue token: too short")
    (revision,) = struct.unpack(">q", raw[:8])
    if revision <= 0:
        raise ValueError("malformed continue token: bad revision")
    return revision, raw[8:]
