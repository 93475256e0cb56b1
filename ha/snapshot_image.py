"""A snapshot of the state machine in two steps: `capture`, cheap, taken
under the state lock at exactly the applied index (the key index's version
lists copied, O(keys): versions and their KeyValues are never changed once
stored), and `encode`, the expensive part, done wherever the caller likes
(the Raft node's snapshot writer thread), while the state moves on.

`encode` writes the Snapshot message of ha/storepb/internal.proto by hand:
the same bytes as `Snapshot.SerializeToString(deterministic=True)` (checked
by the tests), without first copying every version into a message of its
own. Before this split, log compaction encoded the state on the Raft
thread, stalling it for the whole encoding (0.26 s for 50 MiB of history
here, seconds for the API server's state); as every member compacts at
about the same index, the whole cluster paused together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ha.keyspace import Version
from ha.storepb import cluster_pb2

_SMALL = [bytes((i,)) for i in range(128)]


def _varint(value: int) -> bytes:
    # Lengths and revisions: almost all under 2^21, written without a loop.
    if 0 <= value < 0x80:
        return _SMALL[value]
    if 0 < value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if 0 < value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if value < 0:
        value += 1 << 64  # int64, two's complement, as protobuf encodes it
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return bytes((tag << 3 | 2,)) + _varint(len(payload)) + payload


def _int(tag: int, value: int) -> bytes:
    """A varint field, omitted at its default (proto3)."""
    return bytes((tag << 3,)) + _varint(value) if value else b""


_KEY_HISTORY = bytes((4 << 3 | 2,))  # Snapshot.keys
_KEY = bytes((1 << 3 | 2,))  # KeyHistory.key
_VERSION = bytes((2 << 3 | 2,))  # KeyHistory.versions
_KV = bytes((3 << 3 | 2,))  # Version.kv
_TOMBSTONE = b"\x20\x01"  # Version.tombstone = true


def _first(item: tuple[bytes, tuple[Version, ...]]) -> bytes:
    return item[0]


@dataclass(frozen=True)
class SnapshotImage:
    format: int
    revision: int
    compact_revision: int
    lease_clock_ms: int
    next_lease_id: int
    histories: list[tuple[bytes, tuple[Version, ...]]]  # in any order; encoded by key
    leases: list[tuple[int, int, int]]  # (id, ttl, deadline_ms), by id
    members: list[cluster_pb2.Member]  # copies, by id

    def encode(self) -> bytes:
        return b"".join(self.encode_chunks())

    def encode_chunks(self, chunk_bytes: int = 256 << 10) -> Iterator[bytes]:
        """The encoding in pieces of about chunk_bytes, to write one after
        the other: a writer can let other threads run between them. Every
        KeyValue is copied once, as the key space keeps it encoded, into its
        chunk: lengths are added up, not found by joining what they measure,
        since a master's history is hundreds of megabytes."""
        parts = [_int(1, self.format), _int(2, self.revision), _int(3, self.compact_revision)]
        pending = 0
        append, varint = parts.append, _varint
        for key, versions in sorted(self.histories, key=_first):
            if pending >= chunk_bytes:
                yield b"".join(parts)
                parts.clear()
                pending = 0
            head = _KEY + varint(len(key)) + key if key else b""
            body = [head]
            size = len(head)
            for revision, sub, kv in versions:
                fields = (b"\x08" + varint(revision) if revision else b"") + (b"\x10" + varint(sub) if sub else b"")
                if kv is None:
                    fields += _TOMBSTONE
                    item = _VERSION + varint(len(fields)) + fields
                    body.append(item)
                    size += len(item)
                else:
                    # Kept encoded (ha.keyspace); a KeyValue has no maps, so
                    # its encoding is the deterministic one.
                    fields += _KV + varint(len(kv))
                    item = _VERSION + varint(len(fields) + len(kv)) + fields
                    body += (item, kv)
                    size += len(item) + len(kv)
            append(_KEY_HISTORY + varint(size))
            parts += body
            pending += size
        for lease_id, ttl, deadline_ms in self.leases:
            append(_field(5, _int(1, lease_id) + _int(2, ttl) + _int(3, deadline_ms)))
        for member in self.members:
            append(_field(6, member.SerializeToString(deterministic=True)))
        parts += [_int(7, self.lease_clock_ms), _int(8, self.next_lease_id)]
        yield b"".join(parts)
