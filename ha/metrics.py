"""Prometheus metrics of the store, declared next to the code they measure
(as etcd does per package).

Counters and histograms are updated where things happen; gauges are read at
scrape time from the live objects by `StoreCollector`, so they are never
stale and cost nothing between scrapes. Each master registers them in its
own registry, so several masters can live in one process (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ha.loop_metrics import LoopCounter, LoopHistogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class StoreMetrics:
    """What counts every command is updated from the master's event loop
    only (ha.loop_metrics: no lock per update)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.proposals_committed = LoopCounter(
            "raftkube_store_proposals_committed_total",
            "Commands this master proposed that were committed and applied.",
            registry=registry,
        )
        self.proposals_failed = Counter(
            "raftkube_store_proposals_failed_total",
            "Commands this master proposed that failed, by why.",
            ["reason"],
            registry=registry,
        )
        self.proposals_retried = Counter(
            "raftkube_store_proposals_retried_total",
            "Commands this master proposed again because no Raft log held them (not the leader, no leader).",
            registry=registry,
        )
        self.batch_size = LoopHistogram(
            "raftkube_store_batch_commands",
            "Commands per Raft log entry this master proposed (group commit).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.apply_duration = LoopHistogram(
            "raftkube_store_apply_duration_seconds",
            "Time to apply one log entry (a batch of commands) to the state machine.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.proposal_duration = LoopHistogram(
            "raftkube_store_proposal_duration_seconds",
            "Time from proposing a command to its result on this master.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.read_barriers = Counter(
            "raftkube_store_read_barriers_total",
            "Read barriers sent through the log (each shared by every read waiting on it).",
            registry=registry,
        )


Gauges = Callable[[], dict[str, tuple[str, float]]]


class StoreCollector(Collector):
    """Values read at scrape time: `read()` returns name -> (help, value);
    names ending in _total are counters, the rest gauges."""

    def __init__(self, read: Gauges):
        self._read = read

    def collect(self) -> Iterator[Any]:
        for name, (text, value) in self._read().items():
            if name.endswith("_total"):
                yield CounterMetricFamily(name.removesuffix("_total"), text, value=value)
            else:
                yield GaugeMetricFamily(name, text, value=value)
