"""Compaction visits only the keys written since the last compaction; after
any mix of puts, deletes and compactions it keeps exactly what a scan of
every key would keep: for each key, the versions after the compacted
revision and the one live at it."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from ha.keyspace import TUPLE_VERSIONS, KeySpace, Version

KEYS = [b"/a", b"/b", b"/c", b"/d"]

step = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("compact"), st.floats(0, 1)),
)


def kept_by_full_scan(history: dict[bytes, list[Version]], revision: int) -> dict[bytes, list[Version]]:
    kept = {}
    for key, versions in history.items():
        at = [v for v in versions if v[0] <= revision]
        later = [v for v in versions if v[0] > revision]
        live_at = [at[-1]] if at and at[-1][2] is not None else []
        if live_at + later:
            kept[key] = live_at + later
    return kept


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_compaction_keeps_what_a_full_scan_keeps(steps: list[tuple[str, object]]) -> None:
    ks = KeySpace()
    everything: dict[bytes, list[Version]] = {}  # every version ever written
    compacted = 0
    for kind, arg in steps:
        if kind == "compact":
            assert isinstance(arg, float)
            target = compacted + round(arg * (ks.revision - compacted))
            ks.compact(target)
            compacted = max(compacted, target)
            continue
        assert isinstance(arg, bytes)
        revision = ks.revision + 1
        if kind == "put":
            ks.put(arg, b"v%d" % revision, 0, revision, 0, ks.get(arg))
            everything.setdefault(arg, []).append(dict(ks.items())[arg][-1])  # as stored
        elif ks.delete(arg, revision, 0) is not None:
            everything[arg].append((revision, 0, None))
        else:
            continue  # deleting a missing key changes nothing
        ks.revision = revision
        assert stored(ks) == kept_by_full_scan(everything, compacted)
    assert stored(ks) == kept_by_full_scan(everything, compacted)


def stored(ks: KeySpace) -> dict[bytes, list[Version]]:
    return {key: list(versions) for key, versions in ks.items()}


def test_what_is_kept_is_no_work_for_the_cyclic_collector() -> None:
    """Versions, values and events are untracked once the collector has
    seen them, and so is a key's version tuple; only a key with more than
    TUPLE_VERSIONS versions keeps a (tracked) list."""
    ks = KeySpace()
    revision = 0
    for i in range(100):
        revision += 1
        ks.put(b"/k/%d" % i, b"v", 0, revision, 0, None)
    for _ in range(TUPLE_VERSIONS + 1):
        revision += 1
        ks.put(b"/hot", b"v", 0, revision, 0, ks.get(b"/hot"))
    # The collector untracks a tuple it finds with nothing tracked inside:
    # a tuple of tuples may be seen before its items, and wait a pass.
    gc.collect()
    gc.collect()
    histories = dict(ks.items())
    assert not gc.is_tracked(histories[b"/k/7"]) and not gc.is_tracked(histories[b"/k/7"][0])
    assert isinstance(histories[b"/hot"], list) and not gc.is_tracked(histories[b"/hot"][0])
    assert not any(gc.is_tracked(e) for e in ks.events_since(1, b"/", b"0"))
    ks.compact(revision)  # /hot is down to its last version: a tuple again
    (hot,) = dict(ks.items())[b"/hot"]
    assert hot[0] == revision and isinstance(dict(ks.items())[b"/hot"], tuple)
