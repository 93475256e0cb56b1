"""The multi-version key space of the store (etcd's mvcc): every retained
version of every key, the global revision, and the event history watches
read from.

It is pure data structure: no clock, no I/O, no locking (the state machine
serialises access). It trusts its caller to have validated requests; it never
raises on input the state machine let through.

Layout: `_index` maps each key, in sorted order, to its versions oldest
first. A version is a value or a tombstone left by a deletion. A key whose
only retained version is a tombstone lingers until compaction removes it.
`_events` holds one record per version newer than the compact revision, in
(revision, sub) order, so a watch from revision R is a bisect and a scan.

Versions and events are plain tuples of ints and bytes, values as their
KeyValue wire encoding. Python's cyclic collector stops tracking such a
tuple the first time it sees it, but never a protobuf message or an
instance of a tuple subclass such as a NamedTuple, and a full collection
walks every tracked object. Kept as KeyValue messages in NamedTuples, each
key was four tracked objects (its version list, a Version, a KeyValue, an
event): with 200,000 keys a full collection took 107-124 ms (now ~16), and
masters under api_bench paused up to 261 ms. A key's versions are a tuple too
while there are few of them (a write makes a new one), and a list, the
one thing tracked, only past TUPLE_VERSIONS: a tuple for a hot key would
copy its whole history on every write. Reads decode what they return: a
2.5 KB KeyValue in ~0.6 us, less than copying a message into a response
costs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from sortedcontainers import SortedDict

from ha.keys import ALL_KEYS_FROM
from ha.storepb.kv_pb2 import KeyValue

# (revision, sub, the KeyValue encoded, or None for a tombstone)
Version = tuple[int, int, bytes | None]
# A key's versions, oldest first: a tuple, or past TUPLE_VERSIONS a list.
Versions = tuple[Version, ...] | list[Version]
TUPLE_VERSIONS = 8
# (revision, sub, key, the KeyValue encoded or None for a deletion, the
# previous live one encoded or None)
EventRecord = tuple[int, int, bytes, bytes | None, bytes | None]


def _revision(record: Version | EventRecord) -> int:
    return record[0]


def _decoded(data: bytes | None) -> KeyValue | None:
    return None if data is None else KeyValue.FromString(data)


class KeySpace:
    def __init__(self) -> None:
        self._index: SortedDict = SortedDict()  # bytes -> Versions
        self._events: list[EventRecord] = []
        self.revision = 0
        self.compact_revision = 0

    # -- reads -------------------------------------------------------------

    def _keys_in(self, key: bytes, range_end: bytes) -> Iterator[bytes]:
        if not range_end:
            if key in self._index:
                yield key
            return
        if range_end == ALL_KEYS_FROM:
            yield from self._index.irange(minimum=key)
            return
        yield from self._index.irange(minimum=key, maximum=range_end, inclusive=(True, False))

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The live value of `key` at `revision` (0: now), or None."""
        versions = self._index.get(key)
        if not versions:
            return None
        return _decoded(self._at(versions, revision))

    @staticmethod
    def _at(versions: Versions, revision: int) -> bytes | None:
        if revision <= 0:
            return versions[-1][2]
        i = bisect.bisect_right(versions, revision, key=_revision)
        return versions[i - 1][2] if i else None

    def range(
        self, key: bytes, range_end: bytes, revision: int = 0, limit: int = 0, count_only: bool = False
    ) -> tuple[list[bytes], int]:
        """Live pairs in [key, range_end) at `revision` (KeyValues, encoded),
        at most `limit` of them (0: all), and how many the whole range holds."""
        kvs: list[bytes] = []
        count = 0
        index = self._index
        for k in self._keys_in(key, range_end):
            kv = self._at(index[k], revision)
            if kv is None:
                continue
            count += 1
            if not count_only and (limit <= 0 or len(kvs) < limit):
                kvs.append(kv)
        return kvs, count

    def events_since(
        self, start_revision: int, key: bytes, range_end: bytes, max_events: int = 1000
    ) -> list[EventRecord]:
        """Events at revisions >= start_revision touching [key, range_end),
        in order. Stops after max_events, but never inside one revision."""
        events = self._events
        i = bisect.bisect_left(events, start_revision, key=_revision)
        out: list[EventRecord] = []
        single = not range_end
        all_from = range_end == ALL_KEYS_FROM
        n = len(events)
        while i < n:
            e = events[i]
            if len(out) >= max_events and e[0] != out[-1][0]:
                break
            k = e[2]
            if (k == key) if single else (k >= key and (all_from or k < range_end)):
                out.append(e)
            i += 1
        return out

    def keys_changed_since(self, start_revision: int) -> set[bytes]:
        """The keys of every event at revisions >= start_revision."""
        events = self._events
        i = bisect.bisect_left(events, start_revision, key=_revision)
        return {e[2] for e in events[i:]}

    def keys_count(self) -> int:
        return len(self._index)

    # -- writes ------------------------------------------------------------

    def put(self, key: bytes, value: bytes, lease: int, revision: int, sub: int, prev: KeyValue | None) -> None:
        """Write `key` at (revision, sub); `prev` is what get(key) returns
        now (the caller has read it already)."""
        if prev is None:
            kv = KeyValue(key=key, value=value, create_revision=revision, mod_revision=revision, version=1, lease=lease)
        else:
            kv = KeyValue(
                key=key,
                value=value,
                create_revision=prev.create_revision,
                mod_revision=revision,
                version=prev.version + 1,
                lease=lease,
            )
        data = kv.SerializeToString()
        versions = self._index.get(key)
        self._events.append((revision, sub, key, data, versions[-1][2] if versions else None))
        self._add_version(key, versions, (revision, sub, data))

    def delete(self, key: bytes, revision: int, sub: int) -> KeyValue | None:
        """Delete `key` at (revision, sub) if it is live; returns what it held."""
        versions = self._index.get(key)
        if not versions or versions[-1][2] is None:
            return None
        prev = versions[-1][2]
        self._add_version(key, versions, (revision, sub, None))
        self._events.append((revision, sub, key, None, prev))
        return _decoded(prev)

    def _add_version(self, key: bytes, versions: Versions | None, version: Version) -> None:
        if versions is None:
            self._index[key] = (version,)
        elif isinstance(versions, list):
            versions.append(version)
        elif len(versions) < TUPLE_VERSIONS:
            self._index[key] = (*versions, version)
        else:
            self._index[key] = [*versions, version]

    def live_keys_in(self, key: bytes, range_end: bytes) -> list[bytes]:
        index = self._index
        # Most ranges asked about are empty (a txn's "no quota changed"
        # compare): two bisections answer that without an iterator.
        if range_end and range_end != ALL_KEYS_FROM and index.bisect_left(key) == index.bisect_left(range_end):
            return []
        return [k for k in self._keys_in(key, range_end) if index[k][-1][2] is not None]

    def compact(self, revision: int) -> None:
        """Forget every version superseded at or before `revision`, and the
        events up to it. Reads and watches before it become impossible."""
        if revision <= self.compact_revision:
            return
        cut = bisect.bisect_right(self._events, revision, key=_revision)
        # Only a key written or deleted since the last compaction can hold a
        # version superseded since then (every older one is gone already):
        # visiting those keys, not all of them, keeps a compaction's cost
        # (paid on every master at once) to the history it forgets.
        touched = {e[2] for e in self._events[:cut]}
        gone: list[bytes] = []
        index = self._index
        for k in touched:
            versions = index.get(k)
            if not versions or versions[0][0] > revision:
                continue
            i = bisect.bisect_right(versions, revision, key=_revision)
            # versions[i-1] is the state of k at `revision`: keep it if live.
            keep_from = i - 1 if versions[i - 1][2] is not None else i
            if keep_from == 0:
                continue
            kept = versions[keep_from:]
            if not kept:
                gone.append(k)
            else:
                index[k] = tuple(kept) if len(kept) <= TUPLE_VERSIONS else kept
        for k in gone:
            del index[k]
        del self._events[:cut]
        self.compact_revision = revision

    # -- snapshots ----------------------------------------------------------

    def items(self) -> Iterator[tuple[bytes, Versions]]:
        """Every key and its retained versions, in key order."""
        return iter(self._index.items())

    def copied_histories(self) -> list[tuple[bytes, tuple[Version, ...]]]:
        """Every key and a copy of its version list, in no order: a
        snapshot's capture, on every master's loop at once. SortedDict is a
        dict; iterating it as one (in C) takes 15 ms for 64k keys where its
        sorted iteration takes 80 ms. Sort the result where time is cheap."""
        index = self._index
        return list(zip(dict.keys(index), map(tuple, dict.values(index)), strict=True))

    def load(self, revision: int, compact_revision: int, histories: list[tuple[bytes, list[Version]]]) -> None:
        """Replace everything with the given histories (from a snapshot)."""
        self._index = SortedDict(
            (key, tuple(versions) if len(versions) <= TUPLE_VERSIONS else versions) for key, versions in histories
        )
        self.revision = revision
        self.compact_revision = compact_revision
        events: list[EventRecord] = []
        for key, versions in histories:
            prev: bytes | None = None
            for v_revision, v_sub, data in versions:
                if v_revision > compact_revision:
                    events.append((v_revision, v_sub, key, data, prev))
                prev = data
        events.sort(key=lambda e: (e[0], e[1]))
        self._events = events
