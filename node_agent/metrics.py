"""The node agent's Prometheus metrics, under the kubelet's names where it
has them: running pods and containers (read at scrape time), pod start
latency, probe results, runtime operation latencies, and the heartbeat
round trip to the masters."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Running(Collector):
    def __init__(self, count: Callable[[], tuple[int, int]]):
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pods, containers = self.count()
        yield GaugeMetricFamily("kubelet_running_pods", "Pods with at least one running container.", pods)
        yield GaugeMetricFamily("kubelet_running_containers", "Containers running.", containers)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.pod_start = Histogram(
            "kubelet_pod_start_duration_seconds",
            "From the agent seeing a pod to all its containers running.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.probes = Counter("prober_probe_total", "Probe results.", ["probe_type", "result"], registry=registry)
        self.runtime_operations = Histogram(
            "kubelet_runtime_operations_duration_seconds",
            "Container runtime operations.",
            ["operation_type"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.heartbeat = Histogram(
            "raftkube_agent_heartbeat_duration_seconds",
            "Round trip of a lease renewal over the heartbeat stream.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.master_switches = Counter(
            "raftkube_agent_master_switches_total", "Moves to another master after one failed.", registry=registry
        )

    def watch_running(self, count: Callable[[], tuple[int, int]]) -> None:
        self.registry.register(_Running(count))
