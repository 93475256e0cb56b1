"""Uids and timestamps stamped on objects: what the standard library would
write, made cheaply."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from control_plane.apis.stamps import new_uid, now_rfc3339, rfc3339


def test_a_uid_is_a_random_uuid_written_as_uuid_writes_it() -> None:
    uids = [new_uid() for _ in range(2000)]
    assert len(set(uids)) == len(uids)
    for text in uids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_threads_sharing_the_pool_each_get_distinct_uids() -> None:
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_uid() for _ in range(1000)], range(8)))
    uids = [u for batch in batches for u in batch]
    assert len(set(uids)) == len(uids) == 8000


def test_a_forked_child_does_not_hand_out_its_parents_unused_uids() -> None:
    new_uid()  # the parent now holds random bytes for uids it has not made yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next uids, to the parent
        os.close(read)
        os.write(write, " ".join(new_uid() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_uid() for _ in range(10)}
    assert len(child) == 10
    assert not child & parent


@pytest.mark.parametrize(
    ("second", "text"),
    [
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param(1_700_000_000, "2023-11-14T22:13:20Z", id="recent"),
        pytest.param(951_782_400, "2000-02-29T00:00:00Z", id="leap-day"),
    ],
)
def test_rfc3339(second: int, text: str) -> None:
    assert rfc3339(second) == text


def test_now_reads_the_clock_given_and_drops_the_fraction() -> None:
    assert now_rfc3339(lambda: 1_700_000_000.999) == "2023-11-14T22:13:20Z"
    before = time.time()
    now = now_rfc3339()
    after = time.time()
    assert now in {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (before, after)}
