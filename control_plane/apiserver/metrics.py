"""The API server's Prometheus metrics, with Kubernetes' names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from ha.loop_metrics import LoopCounter, LoopHistogram

REQUEST_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ApiMetrics:
    """Updated from the master's event loop only: the per-request counters
    and histograms take no lock (ha.loop_metrics)."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = LoopCounter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, resource, and HTTP response code.",
            ["verb", "resource", "code"],
            registry=registry,
        )
        self.duration = LoopHistogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource.",
            ["verb", "resource"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.watchers = Gauge(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resource.",
            ["resource"],
            registry=registry,
        )

        self.store_duration = LoopHistogram(
            "apiserver_store_request_duration_seconds",
            "Round trips from the API server to the replicated store, in seconds, by operation "
            "(as Kubernetes' etcd_request_duration_seconds).",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )

        self.create_batches = LoopHistogram(
            "apiserver_create_batch_size",
            "Creates prepared together, one stage at a time, in one batch (apiserver/stage_batches.py).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    def observe_store(self, operation: str, seconds: float) -> None:
        self.store_duration.labels(operation).observe(seconds)

    def observe(self, verb: str, resource: str, code: int, seconds: float) -> None:
        self.requests.labels(verb, resource, str(code)).inc()
        if verb != "WATCH":
            self.duration.labels(verb, resource).observe(seconds)
