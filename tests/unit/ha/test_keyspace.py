"""Compaction visits only the keys written since the last compaction; after
any mix of puts, deletes and compactions it keeps exactly what a scan of
every key would keep: for each key, the versions after the compacted
revision and the one live at it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ha.keyspace import KeySpace, Version

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
        assert dict(ks.items()) == kept_by_full_scan(everything, compacted)
    assert dict(ks.items()) == kept_by_full_scan(everything, compacted)
