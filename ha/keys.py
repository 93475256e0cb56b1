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


def encode_continue(revision: int, next_key: bytes, range_end: bytes) -> str:
    """A token that resumes a range at `next_key` (up to `range_end`), read
    at `revision`, so every page reflects the same store revision."""
    raw = struct.pack(">qI", revision, len(next_key)) + next_key + range_end
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_continue(token: str) -> tuple[int, bytes, bytes]:
    """(revision, next_key, range_end) of a continue token; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise ValueError(f"malformed continue token: {e}") from None
    header = struct.calcsize(">qI")
    if len(raw) < header:
        raise ValueError("malformed continue token: too short")
    revision, key_length = struct.unpack(">qI", raw[:header])
    if revision <= 0 or key_length == 0 or header + key_length > len(raw):
        raise ValueError("malformed continue token")
    return revision, raw[header : header + key_length], raw[header + key_length :]
