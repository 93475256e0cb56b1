"""The API server's Prometheus metrics, with Kubernetes' names."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, resource, and HTTP response code.",
            ["verb", "resource", "code"],
            registry=registry,
        )
        self.duration = Histogram(
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

        self.store_duration = Histogram(
            "apiserver_store_request_duration_seconds",
            "Round trips from the API server to the replicated store, in seconds, by operation "
            "(as Kubernetes' etcd_request_duration_seconds).",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        # Each request's labelled series, found once: labels() checks and
        # joins its values under a lock, which every request paid twice.
        self._series: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def observe_store(self, operation: str, seconds: float) -> None:
        self._child(self.store_duration, operation).observe(seconds)

    def observe(self, verb: str, resource: str, code: int, seconds: float) -> None:
        self._child(self.requests, verb, resource, str(code)).inc()
        if verb != "WATCH":
            self._child(self.duration, verb, resource).observe(seconds)
