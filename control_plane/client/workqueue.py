"""A rate-limited work queue, as client-go's workqueue: controllers put
keys in, workers take them out.

- An item is queued at most once, however often it is added.
- An item is processed by one worker at a time: added while it is being
  processed, it is queued again when the worker calls done().
- add_after() queues an item later; add_rate_limited() queues it after a
  delay that doubles with each retry of that item (forget() resets it)
  and that an overall token bucket also bounds, so a storm of failures
  cannot spin the workers.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down; the worker should exit."""


class ItemExponentialBackoff(Generic[T]):
    """base * 2^failures per item, capped (client-go: 5 ms to 1000 s)."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0):
        self.base = base
        self.cap = cap
        self.failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        n = self.failures.get(item, 0)
        self.failures[item] = n + 1
        return min(self.base * (2**n), self.cap)

    def forget(self, item: T) -> None:
        self.failures.pop(item, None)

    def retries(self, item: T) -> int:
        return self.failures.get(item, 0)


class TokenBucket:
    """Overall retry rate: `qps` tokens a second, `burst` at most. when()
    reserves a token and says how long until it is there."""

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Callable[[], float] = time.monotonic):
        self.qps = qps
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def when(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.qps)
        self.last = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.qps


class QueueMetrics:
    """client-go's workqueue metrics, by queue name."""

    def __init__(self, registry: CollectorRegistry):
        self.depth = Gauge("workqueue_depth", "Current depth of workqueue", ["name"], registry=registry)
        self.adds = Counter(
            "workqueue_adds_total", "Total number of adds handled by workqueue", ["name"], registry=registry
        )
        self.retries = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue", ["name"], registry=registry
        )


class RateLimitingQueue(Generic[T]):
    def __init__(
        self,
        name: str = "",
        backoff: ItemExponentialBackoff[T] | None = None,
        bucket: TokenBucket | None = None,
        metrics: QueueMetrics | None = None,
    ):
        self.name = name
        self.backoff: ItemExponentialBackoff[T] = backoff or ItemExponentialBackoff()
        self.bucket = bucket or TokenBucket()
        self.metrics = metrics
        self._queue: collections.deque[T] = collections.deque()
        self._dirty: set[T] = set()  # queued, or to be queued again when done
        self._processing: set[T] = set()
        self._waiting: dict[T, asyncio.TimerHandle] = {}
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shut_down = False

    def __len__(self) -> int:
        return len(self._queue)

    # -- adding ---------------------------------------------------------------------------

    def add(self, item: T) -> None:
        if self._shut_down or item in self._dirty:
            return
        if self.metrics is not None:
            self.metrics.adds.labels(self.name).inc()
        self._dirty.add(item)
        if item in self._processing:
            return  # queued again by done()
        self._queue.append(item)
        self._depth()
        self._wake()

    def add_after(self, item: T, delay: float) -> None:
        if self._shut_down:
            return
        if delay <= 0:
            self.add(item)
            return
        loop = asyncio.get_running_loop()
        pending = self._waiting.get(item)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return  # already due sooner
            pending.cancel()
        self._waiting[item] = loop.call_later(delay, self._due, item)

    def add_rate_limited(self, item: T) -> None:
        if self.metrics is not None:
            self.metrics.retries.labels(self.name).inc()
        self.add_after(item, max(self.backoff.when(item), self.bucket.when()))

    def forget(self, item: T) -> None:
        """The item succeeded: its next failure starts from the base delay."""
        self.backoff.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.backoff.retries(item)

    def _due(self, item: T) -> None:
        self._waiting.pop(item, None)
        self.add(item)

    # -- taking -----------------------------------------------------------------------------

    async def get(self) -> T:
        """The next item; call done(item) when finished with it."""
        while not self._queue:
            if self._shut_down:
                raise ShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: pass the wake-up on
                raise
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        self._depth()
        return item

    def done(self, item: T) -> None:
        self._processing.discard(item)
        if item in self._dirty and not self._shut_down:
            self._queue.append(item)
            self._depth()
            self._wake()

    def shut_down(self) -> None:
        self._shut_down = True
        for handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        while self._getters:
            self._wake()

    def _wake(self) -> None:
        """Wake one waiting get()."""
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _depth(self) -> None:
        if self.metrics is not None:
            self.metrics.depth.labels(self.name).set(len(self._queue))
