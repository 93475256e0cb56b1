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

from dataclasses import dataclass

from ha.keyspace import Version
from ha.storepb import cluster_pb2


def _varint(value: int) -> bytes:
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


@dataclass(frozen=True)
class SnapshotImage:
    format: int
    revision: int
    compact_revision: int
    lease_clock_ms: int
    next_lease_id: int
    histories: list[tuple[bytes, tuple[Version, ...]]]
    leases: list[tuple[int, int, int]]  # (id, ttl, deadline_ms), by id
    members: list[cluster_pb2.Member]  # copies, by id

    def encode(self) -> bytes:
        parts = [_int(1, self.format), _int(2, self.revision), _int(3, self.compact_revision)]
        version_tag = bytes((2 << 3 | 2,))
        for key, versions in self.histories:
            body = [_field(1, key) if key else b""]
            for v in versions:
                fields = _int(1, v.revision) + _int(2, v.sub)
                if v.kv is None:
                    fields += b"\x20\x01"  # tombstone = true
                else:
                    fields += _field(3, v.kv.SerializeToString(deterministic=True))
                body.append(version_tag + _varint(len(fields)) + fields)
            parts.append(_field(4, b"".join(body)))
        for lease_id, ttl, deadline_ms in self.leases:
            parts.append(_field(5, _int(1, lease_id) + _int(2, ttl) + _int(3, deadline_ms)))
        for member in self.members:
            parts.append(_field(6, member.SerializeToString(deterministic=True)))
        parts += [_int(7, self.lease_clock_ms), _int(8, self.next_lease_id)]
        return b"".join(parts)
