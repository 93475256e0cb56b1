"""Closed-loop load on the KV gRPC service: N concurrent writers putting
1 KiB values for a fixed time, from one asyncio process. Shared by the
store benchmark for raftkube and for its baselines (any server speaking the
KV service)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from ha.storepb import kv_pb2, kv_pb2_grpc

T = TypeVar("T")


@dataclass
class LoadResult:
    concurrency: int
    ops: int
    seconds: float
    latencies: list[float]
    # What the failures were (a gRPC code, an HTTP status), and how many of each.
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self, label: str) -> str:
        return (
            f"{label:34} c={self.concurrency:<3} {self.rate:8.0f} puts/s  "
            f"p50 {self.percentile(50) * 1000:6.1f} ms  p99 {self.percentile(99) * 1000:6.1f} ms  "
            f"errors {self.errors}{self._failure_kinds()}"
        )

    def _failure_kinds(self) -> str:
        if not self.failures:
            return ""
        return " (" + ", ".join(f"{kind} {n}" for kind, n in self.failures.most_common()) + ")"


async def closed_loop(
    concurrency: int, seconds: float, warmup: float, op: Callable[[int, int], Awaitable[str | None]]
) -> LoadResult:
    """`concurrency` workers each calling op(worker, i) back to back; what
    completes after `warmup` and before `seconds` more is measured. `op`
    returns None when it succeeded, else what failed (reported by kind)."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    ops = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker(w: int) -> None:
        nonlocal ops
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            failure = await op(w, i)
            t1 = time.perf_counter()
            if t0 >= measure_from:
                if failure is None:
                    ops += 1
                    latencies.append(t1 - t0)
                else:
                    failures[failure] += 1
            i += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return LoadResult(concurrency, ops, seconds, latencies, failures)


async def _run(
    endpoints: list[str], concurrency: int, seconds: float, values: list[bytes], warmup: float
) -> LoadResult:
    channels = [grpc.aio.insecure_channel(e) for e in endpoints]
    try:
        stubs = [kv_pb2_grpc.KVStub(ch) for ch in channels]

        async def put(w: int, i: int) -> str | None:
            stub = stubs[w % len(stubs)]  # workers spread over the endpoints
            request = kv_pb2.PutRequest(key=b"/bench/%d/%d" % (w, i % 1000), value=values[i % len(values)])
            try:
                await stub.Put(request, timeout=10)
                return None
            except grpc.aio.AioRpcError as e:
                return e.code().name

        return await closed_loop(concurrency, seconds, warmup, put)
    finally:
        for ch in channels:
            await ch.close()


def run_load(
    endpoint: str | list[str],
    concurrency: int,
    seconds: float = 5.0,
    value_size: int = 1024,
    warmup: float = 1.0,
    values: list[bytes] | None = None,
) -> LoadResult:
    """Closed-loop puts for `seconds` after `warmup`; workers spread over the
    endpoints when several are given."""
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    values = values or [os.urandom(value_size) for _ in range(64)]  # random: incompressible
    return asyncio.run(_run(endpoints, concurrency, seconds, values, warmup))


def turn_order(items: Iterable[T], round_number: int) -> list[T]:
    """`items` in order on even rounds, reversed on odd ones: side-by-side
    runs on a VM whose speed drifts, where neither always goes first."""
    ordered = list(items)
    return ordered if round_number % 2 == 0 else ordered[::-1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_result(results: list[LoadResult]) -> LoadResult:
    """The run with the median rate."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def paired_ratio(numerators: list[LoadResult], denominators: list[LoadResult]) -> float:
    """The median, over rounds, of one system's rate over another's in the
    same round. Rounds run back to back, so each pair saw about the same
    machine; on a shared VM whose speed drifts by tens of percent from
    minute to minute, a ratio of two medians can pair a fast minute with a
    slow one."""
    ratios = [n.rate / d.rate for n, d in zip(numerators, denominators, strict=True) if d.rate]
    return statistics.median(ratios) if ratios else float("nan")
