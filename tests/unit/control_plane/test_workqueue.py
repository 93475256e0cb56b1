"""The work queue's contract, as client-go's: one copy of an item queued,
one worker per item, re-queue after done, delays and backoff."""

from __future__ import annotations

import asyncio

import pytest

from control_plane.client.workqueue import ItemExponentialBackoff, RateLimitingQueue, ShutDown, TokenBucket


async def test_an_item_added_twice_is_queued_once() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_an_item_added_while_processed_comes_back_after_done() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue()
    q.add("a")
    item = await q.get()
    q.add("a")  # changed again while a worker has it
    assert len(q) == 0  # not handed to a second worker
    q.done(item)
    assert len(q) == 1 and await q.get() == "a"


async def test_a_waiting_worker_is_woken_by_an_add() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue()
    worker = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not worker.done()
    q.add("x")
    assert await asyncio.wait_for(worker, 1) == "x"


async def test_add_after_queues_later_and_the_sooner_time_wins() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_after("late", 5.0)
    q.add_after("late", 0.05)  # sooner: replaces
    q.add_after("late", 10.0)  # later: ignored
    assert await asyncio.wait_for(q.get(), 2) == "late"
    assert 0.04 <= loop.time() - start < 2


def test_backoff_doubles_per_item_until_forgotten() -> None:
    backoff: ItemExponentialBackoff[str] = ItemExponentialBackoff(base=0.01, cap=0.05)
    assert [backoff.when("a") for _ in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]
    assert backoff.when("b") == 0.01
    assert backoff.retries("a") == 5
    backoff.forget("a")
    assert backoff.when("a") == 0.01


def test_the_token_bucket_bounds_the_overall_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10, burst=2, clock=lambda: now[0])
    assert [bucket.when(), bucket.when()] == [0.0, 0.0]
    assert bucket.when() == pytest.approx(0.1)
    assert bucket.when() == pytest.approx(0.2)
    now[0] = 10.0  # refilled, up to the burst
    assert [bucket.when(), bucket.when()] == [0.0, 0.0]


async def test_rate_limited_adds_back_off_and_count_requeues() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue(backoff=ItemExponentialBackoff(base=0.02, cap=1.0))
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(3):
        start = loop.time()
        q.add_rate_limited("k")
        item = await asyncio.wait_for(q.get(), 2)
        delays.append(loop.time() - start)
        q.done(item)
    assert q.num_requeues("k") == 3
    assert delays[0] >= 0.015 and delays[1] >= 0.035 and delays[2] >= 0.075
    q.forget("k")
    assert q.num_requeues("k") == 0


async def test_shut_down_releases_waiting_workers() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue()
    workers = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shut_down()
    for worker in workers:
        with pytest.raises(ShutDown):
            await asyncio.wait_for(worker, 1)
    q.add("ignored")
    assert len(q) == 0
