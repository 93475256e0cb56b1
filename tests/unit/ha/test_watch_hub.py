"""WatchHub: a waiting watch wakes for changes in its range only."""

from __future__ import annotations

import asyncio

from ha.state_machine import StateMachine
from ha.storepb import kv_pb2
from ha.watch_hub import WatchHub, in_range
from tests.support.commands import command, delete, put

LONG = 30.0  # a wait that must end by a wake-up, never by its timeout


async def _woken(wait: asyncio.Task[None]) -> bool:
    """Whether `wait` finished once the loop had a few passes."""
    for _ in range(5):
        await asyncio.sleep(0)
    return wait.done()


def test_in_range_follows_etcd() -> None:
    assert in_range(b"/a", b"/a", b"")
    assert not in_range(b"/ab", b"/a", b"")
    assert in_range(b"/pods/x", b"/pods/", b"/pods0")
    assert not in_range(b"/pods0", b"/pods/", b"/pods0")
    assert in_range(b"/zzz", b"/b", b"\0") and not in_range(b"/a", b"/b", b"\0")


def test_wakes_only_the_waits_whose_range_changed() -> None:
    async def main() -> None:
        sm = StateMachine()
        sm.apply(put(b"/nodes/n1"))
        hub = WatchHub(sm, asyncio.get_running_loop())
        pods = asyncio.create_task(hub.wait(b"/pods/", b"/pods0", LONG))
        one = asyncio.create_task(hub.wait(b"/nodes/n1", b"", LONG))
        await asyncio.sleep(0)
        assert hub.waiting() == 2

        sm.apply(put(b"/nodes/n2"))
        sm.apply(put(b"/services/s"))
        hub.notify()
        assert not await _woken(pods) and not await _woken(one)

        sm.apply(put(b"/pods/a"))
        hub.notify()
        assert await _woken(pods) and not await _woken(one)

        sm.apply(delete(b"/nodes/n1"))  # a deletion is an event too
        hub.notify()
        assert await _woken(one)
        assert hub.waiting() == 0

    asyncio.run(main())


def test_an_open_ended_range_wakes_for_keys_after_its_start() -> None:
    async def main() -> None:
        sm = StateMachine()
        hub = WatchHub(sm, asyncio.get_running_loop())
        wait = asyncio.create_task(hub.wait(b"/m", b"\0", LONG))
        await asyncio.sleep(0)
        sm.apply(put(b"/a"))
        hub.notify()
        assert not await _woken(wait)
        sm.apply(put(b"/z"))
        hub.notify()
        assert await _woken(wait)

    asyncio.run(main())


def test_a_batch_of_several_revisions_is_read_once() -> None:
    async def main() -> None:
        sm = StateMachine()
        hub = WatchHub(sm, asyncio.get_running_loop())
        wait = asyncio.create_task(hub.wait(b"/b", b"", LONG))
        await asyncio.sleep(0)
        for key in (b"/a", b"/b", b"/c"):  # one log entry, three commands
            sm.apply(put(key))
        hub.notify()
        assert await _woken(wait)

    asyncio.run(main())


def test_no_new_revision_wakes_nobody() -> None:
    async def main() -> None:
        sm = StateMachine()
        sm.apply(put(b"/a"))
        hub = WatchHub(sm, asyncio.get_running_loop())
        wait = asyncio.create_task(hub.wait(b"/a", b"", LONG))
        await asyncio.sleep(0)
        sm.apply(command(barrier={}))  # applied, changes nothing
        hub.notify()
        assert not await _woken(wait)
        hub.close()
        assert await _woken(wait)

    asyncio.run(main())


def test_a_timed_out_wait_leaves_nothing_behind() -> None:
    async def main() -> None:
        sm = StateMachine()
        hub = WatchHub(sm, asyncio.get_running_loop())
        for _ in range(3):  # a quiet range, watched with progress notifications
            await hub.wait(b"/quiet", b"", 0.001)
        assert hub.waiting() == 0
        sm.apply(put(b"/quiet"))
        hub.notify()  # nobody left to wake; must not fail

    asyncio.run(main())


def test_history_gone_wakes_everyone() -> None:
    """After a snapshot install the hub cannot tell what changed: every
    watch looks for itself (and learns of the compaction there)."""

    async def main() -> None:
        sm = StateMachine()
        hub = WatchHub(sm, asyncio.get_running_loop())
        wait = asyncio.create_task(hub.wait(b"/elsewhere", b"", LONG))
        await asyncio.sleep(0)
        sm.apply(put(b"/a"))
        sm.apply(put(b"/a"))
        sm.apply(command(compaction=kv_pb2.CompactionRequest(revision=2)))
        hub.notify()
        assert await _woken(wait)

    asyncio.run(main())
