"""Informers and listers, as client-go has them: an Informer keeps a local
cache of one resource (list, then watch from the list's resourceVersion),
tells handlers about every change, and a Lister reads the cache.

The watch survives its master: when the stream breaks, the informer
watches again from the last resourceVersion it saw, through the next
master, so no event is lost or repeated. When that revision has been
compacted (410 Gone) it lists again and tells handlers what changed in
between. A watch that goes silent longer than three bookmark intervals is
taken for a master that stopped answering.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from control_plane.apis.errors import ApiError
from control_plane.apis.resources import Resource
from control_plane.apis.selectors import label_matcher
from control_plane.client.api import ApiClient

log = logging.getLogger(__name__)

Object = dict[str, Any]
IndexFunc = Callable[[Object], Iterable[str]]
# The server sends a bookmark at least this often on a quiet watch.
BOOKMARK_INTERVAL = 5.0


def key_of(obj: Object) -> str:
    """The cache key of an object: "namespace/name", or "name"."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


@dataclass
class Handler:
    on_add: Callable[[Object], None] | None = None
    on_update: Callable[[Object, Object], None] | None = None
    on_delete: Callable[[Object], None] | None = None


class Lister:
    """Reads of an informer's cache. The objects are shared: do not change
    them; copy first."""

    def __init__(self, items: dict[str, Object], indexes: dict[str, dict[str, set[str]]]):
        self._items = items
        self._indexes = indexes

    def get(self, name: str, namespace: str = "") -> Object | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str = "", label_selector: str = "") -> list[Object]:
        matches = label_matcher(label_selector)
        return [
            obj
            for obj in self._items.values()
            if (not namespace or (obj.get("metadata") or {}).get("namespace") == namespace) and matches(obj)
        ]

    def by_index(self, index: str, value: str) -> builtins.list[Object]:
        return [self._items[k] for k in sorted(self._indexes[index].get(value, ()))]

    def __len__(self) -> int:
        return len(self._items)


class Informer:
    def __init__(
        self,
        client: ApiClient,
        r: Resource,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        resync_period: float = 0.0,
        transform: Callable[[Object], Object] | None = None,
    ):
        self.client = client
        # Applied to each object before it is cached (client-go's
        # SetTransform): keep only what the cache's readers need. It must
        # keep metadata's name, namespace and resourceVersion.
        self.transform = transform
        self.resource = r
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.resource_version = ""
        self.relists = 0
        self.rewatches = 0
        self._items: dict[str, Object] = {}
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.lister = Lister(self._items, self._indexes)

    # -- configuration --------------------------------------------------------------------

    def add_handler(
        self,
        on_add: Callable[[Object], None] | None = None,
        on_update: Callable[[Object, Object], None] | None = None,
        on_delete: Callable[[Object], None] | None = None,
    ) -> None:
        """Handlers run on the event loop, in event order; they should be
        quick (enqueue a key) and must not change the objects."""
        handler = Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if handler.on_add is not None:
            for obj in list(self._items.values()):
                handler.on_add(obj)  # what a late handler missed

    def add_index(self, name: str, func: IndexFunc) -> None:
        self._index_funcs[name] = func
        index = self._indexes[name] = {}
        for key, obj in self._items.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run()))
        if self.resync_period > 0:
            self._tasks.append(loop.create_task(self._resync()))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    # -- list and watch -------------------------------------------------------------------------

    async def _run(self) -> None:
        must_list = True
        failures = 0
        while True:
            try:
                if must_list:
                    await self._relist()
                    must_list = False
                await self._watch()
                failures = 0
            except ApiError as e:
                if e.code == 410:
                    log.info("%s: resourceVersion %s is compacted; listing again", self.resource.plural, e.message)
                    must_list = True
                    continue
                failures += 1
                log.info("%s: watch ended (%s); watching again", self.resource.plural, e)
                # The client has moved on to the next master; back off only
                # once every master has failed.
                if failures >= len(self.client.endpoints):
                    await asyncio.sleep(min(0.1 * failures, 2.0))
            except Exception:
                log.exception("%s: informer failed; listing again", self.resource.plural)
                must_list = True
                await asyncio.sleep(1.0)

    async def _relist(self) -> None:
        listed = await self.client.list_all(
            self.resource, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        self.relists += 1
        fresh = {key_of(obj): obj for obj in listed["items"]}
        for key in [k for k in self._items if k not in fresh]:
            self._delete(key)
        for key, obj in fresh.items():
            self._upsert(key, obj)
        self.resource_version = listed["metadata"]["resourceVersion"]
        self._synced.set()

    async def _watch(self) -> None:
        events = self.client.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            allow_bookmarks=True,
        )
        endpoint = self.client.endpoint
        self.rewatches += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(3 * BOOKMARK_INTERVAL):
                        event = await anext(events)
                except TimeoutError:
                    # Silence longer than the server's bookmarks allow: the
                    # master is not answering. Watch through another.
                    self.client.move_on(endpoint)
                    return
                except StopAsyncIteration:
                    return
                self._handle(event)
        finally:
            await events.aclose()

    def _handle(self, event: Object) -> None:
        obj = event["object"]
        rv = (obj.get("metadata") or {}).get("resourceVersion", "")
        kind = event["type"]
        if kind == "BOOKMARK":
            pass
        elif kind == "DELETED":
            self._delete(key_of(obj), obj)
        else:
            self._upsert(key_of(obj), obj)
        if rv:
            self.resource_version = rv

    # -- the cache ----------------------------------------------------------------------------

    def _upsert(self, key: str, obj: Object) -> None:
        if self.transform is not None:
            obj = self.transform(obj)
        old = self._items.get(key)
        if old is not None and (old.get("metadata") or {}).get("resourceVersion") == (obj.get("metadata") or {}).get(
            "resourceVersion"
        ):
            return  # unchanged (a relist of what the watch showed)
        self._items[key] = obj
        self._reindex(key, old, obj)
        if old is None:
            self._notify("add", obj)
        else:
            self._notify("update", old, obj)

    def _delete(self, key: str, last: Object | None = None) -> None:
        old = self._items.pop(key, None)
        if old is None:
            return
        self._reindex(key, old, None)
        if last is not None and self.transform is not None:
            last = self.transform(last)
        self._notify("delete", last or old)

    def _reindex(self, key: str, old: Object | None, new: Object | None) -> None:
        for name, func in self._index_funcs.items():
            index = self._indexes[name]
            for value in func(old) if old is not None else ():
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in func(new) if new is not None else ():
                index.setdefault(value, set()).add(key)

    def _notify(self, event: str, *objs: Object) -> None:
        for h in self._handlers:
            fn = getattr(h, f"on_{event}")
            if fn is None:
                continue
            try:
                fn(*objs)
            except Exception:
                log.exception("an informer's %s handler failed", event)

    async def _resync(self) -> None:
        """Every resync_period, on_update(obj, obj) for every cached object,
        so a controller revisits what it might have missed."""
        while True:
            await asyncio.sleep(self.resync_period)
            for obj in list(self._items.values()):
                self._notify("update", obj, obj)
