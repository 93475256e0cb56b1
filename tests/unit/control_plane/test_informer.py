"""The informer's reactions to what a server can do to it, scripted: a watch
that ends, a 410 that forces a relist (handlers learn what changed in
between), and resyncs. The real-cluster behaviour is in
tests/integration/control_plane/test_grpc_api.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from control_plane.apis import errors
from control_plane.client import Informer, resource

Object = dict[str, Any]


def cm(name: str, rv: int, **data: str) -> Object:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}, "data": data}


class ScriptedClient:
    """Answers lists and watches from a script: lists[i] is the i-th list;
    watches[i] the events (or an exception) of the i-th watch."""

    def __init__(self, lists: list[Object], watches: list[list[Object | Exception]]):
        self.lists = lists
        self.watches = watches
        self.endpoints = ["a", "b"]
        self.endpoint = "a"
        self.watched_from: list[str] = []

    def move_on(self, failed: str) -> None:
        self.endpoint = "b" if failed == "a" else "a"

    async def list_all(self, r: Any, namespace: str = "", **kw: str) -> Object:
        return self.lists.pop(0)

    async def watch(self, r: Any, namespace: str = "", resource_version: str = "", **kw: Any) -> AsyncGenerator[Object]:
        self.watched_from.append(resource_version)
        script = self.watches.pop(0) if self.watches else []
        for step in script:
            if isinstance(step, Exception):
                raise step
            yield step
        if not self.watches:
            await asyncio.Event().wait()  # the script is over: a quiet watch


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


def recorder(informer: Informer) -> list[tuple[str, str, str]]:
    events: list[tuple[str, str, str]] = []

    def rv(o: Object) -> str:
        return str(o["metadata"]["resourceVersion"])

    informer.add_handler(
        on_add=lambda o: events.append(("add", o["metadata"]["name"], rv(o))),
        on_update=lambda old, new: events.append(("update", new["metadata"]["name"], rv(new))),
        on_delete=lambda o: events.append(("delete", o["metadata"]["name"], rv(o))),
    )
    return events


async def test_a_broken_watch_resumes_from_the_last_revision_seen() -> None:
    client = ScriptedClient(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": [cm("a", 5)]}],
        watches=[
            [{"type": "ADDED", "object": cm("b", 11)}, errors.unavailable("master went away")],
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}, errors.unavailable("again")],
            [{"type": "MODIFIED", "object": cm("a", 16, k="v")}],
        ],
    )
    informer = Informer(client, resource("configmaps"))  # type: ignore[arg-type]
    events = recorder(informer)
    informer.start()
    try:
        await until(lambda: len(events) == 3)
    finally:
        await informer.stop()
    assert events == [("add", "a", "5"), ("add", "b", "11"), ("update", "a", "16")]
    assert client.watched_from == ["10", "11", "15"]
    assert informer.relists == 1


async def test_a_compacted_revision_relists_and_reports_the_difference() -> None:
    client = ScriptedClient(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [cm("kept", 3), cm("changed", 4), cm("removed", 5)]},
            {"metadata": {"resourceVersion": "90"}, "items": [cm("kept", 3), cm("changed", 40), cm("new", 80)]},
        ],
        watches=[[errors.gone("too old resource version: 10 (50)")]],
    )
    informer = Informer(client, resource("configmaps"))  # type: ignore[arg-type]
    events = recorder(informer)
    informer.start()
    try:
        await until(lambda: informer.relists == 2 and len(events) == 6)
    finally:
        await informer.stop()
    assert events[3:] == [("delete", "removed", "5"), ("update", "changed", "40"), ("add", "new", "80")]
    assert sorted(o["metadata"]["name"] for o in informer.lister.list()) == ["changed", "kept", "new"]
    assert client.watched_from == ["10", "90"]


async def test_resync_revisits_every_cached_object() -> None:
    client = ScriptedClient(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": [cm("a", 1), cm("b", 1)]}], watches=[]
    )
    informer = Informer(client, resource("configmaps"), resync_period=0.05)  # type: ignore[arg-type]
    events = recorder(informer)
    informer.start()
    try:
        await until(lambda: sum(1 for e in events if e[0] == "update") >= 4)
    finally:
        await informer.stop()
    assert {e[1] for e in events if e[0] == "update"} == {"a", "b"}


async def test_a_late_handler_is_told_about_the_cache() -> None:
    client = ScriptedClient(lists=[{"metadata": {"resourceVersion": "1"}, "items": [cm("a", 1)]}], watches=[])
    informer = Informer(client, resource("configmaps"))  # type: ignore[arg-type]
    informer.start()
    try:
        await informer.wait_for_sync(5)
        events = recorder(informer)
        assert events == [("add", "a", "1")]
    finally:
        await informer.stop()
