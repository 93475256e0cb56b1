"""Counters and histograms for the metrics a master updates on every request,
from its event loop's thread.

prometheus_client's Counter and Histogram take a lock on every update (a
histogram: one per bucket it counts and one for the sum), so that any thread
may update them: ~1 us per observation here, several per request, more
than a raw store put's own Python work between two of them. A master updates
these from its event loop only, so they need no lock: an update is a list
element and a float added to. Prometheus' scrape thread copies them; a
scrape may see an observation counted in a bucket and not yet in the sum,
which the next scrape corrects, as any scrape of a moving count does.

They are exposed with the same names, types and labels as
prometheus_client's own would be.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class HistogramSeries:
    """One series of a LoopHistogram (one set of label values)."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]):
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count `value` `times` times (a batch of requests that took as long)."""
        self.counts[bisect.bisect_left(self._bounds, value)] += times
        self.total += value * times


class CounterSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


S = TypeVar("S", HistogramSeries, CounterSeries)


class _LoopMetric(Collector, Generic[S]):
    """A metric's series by label values, each made on first use."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str], registry: CollectorRegistry | None):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        if not self.labelnames:
            self.labels()  # exposed from the start, as prometheus_client's
        if registry is not None:
            registry.register(self)

    def _new_series(self) -> S:
        raise NotImplementedError

    def labels(self, *values: str) -> S:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.kind} {self.name}: labels {self.labelnames}, given {values}")
            series = self._series[values] = self._new_series()
        return series

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class LoopHistogram(_LoopMetric[HistogramSeries]):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        buckets: Sequence[float] = (),
        registry: CollectorRegistry | None = None,
    ):
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds:
            raise ValueError(f"histogram {name}: no buckets")
        self._bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self._bounds)

    def observe(self, value: float, times: int = 1) -> None:
        self.labels().observe(value, times)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        bounds = [*(str(b) for b in self._bounds), "+Inf"]
        for values, series in list(self._series.items()):
            counts, total = list(series.counts), series.total
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric(list(values), cumulative, total)
        yield family


class LoopCounter(_LoopMetric[CounterSeries]):
    kind = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
    ):
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _new_series(self) -> CounterSeries:
        return CounterSeries()

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value)
        yield family
