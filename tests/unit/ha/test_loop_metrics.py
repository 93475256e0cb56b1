"""The lock-free counters and histograms expose what prometheus_client's
own would, for the same updates."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ha.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.005, 0.01, 0.1, 1.0, 10.0)


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but the *_created timestamps (prometheus_client's, which
    these do not keep), sums rounded (a value added n times at once and
    added n times one by one differ in the last bits)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "observations",
    [
        pytest.param([], id="none"),
        pytest.param([0.001, 0.005, 0.0051, 0.5, 3.0, 99.0], id="every-bucket-and-above"),
        pytest.param([0.01] * 7, id="on-a-bound"),
    ],
)
def test_a_histogram_exposes_what_prometheus_client_would(observations: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("req_seconds", "How long.", ["verb"], buckets=BUCKETS, registry=ours)
    reference = Histogram("req_seconds", "How long.", ["verb"], buckets=BUCKETS, registry=theirs)
    for value in observations:
        loop.labels("GET").observe(value)
        reference.labels("GET").observe(value)
    assert samples(ours) == samples(theirs)


def test_observing_a_value_several_times_at_once_counts_each() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    LoopHistogram("batch_seconds", "How long.", buckets=BUCKETS, registry=ours).observe(0.05, 64)
    reference = Histogram("batch_seconds", "How long.", buckets=BUCKETS, registry=theirs)
    for _ in range(64):
        reference.observe(0.05)
    assert samples(ours) == samples(theirs)


def test_a_counter_exposes_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = LoopCounter("commits_total", "Commits.", registry=ours)
    labelled = LoopCounter("requests_total", "Requests.", ["code"], registry=ours)
    plain_ref = Counter("commits_total", "Commits.", registry=theirs)
    labelled_ref = Counter("requests_total", "Requests.", ["code"], registry=theirs)
    plain.inc(3)
    plain_ref.inc(3)
    for code in ("200", "200", "404"):
        labelled.labels(code).inc()
        labelled_ref.labels(code).inc()
    assert samples(ours) == samples(theirs)


def test_wrong_labels_are_refused() -> None:
    histogram = LoopHistogram("x_seconds", "x", ["verb", "resource"], buckets=BUCKETS)
    with pytest.raises(ValueError, match="labels"):
        histogram.labels("GET")
    with pytest.raises(ValueError, match="no buckets"):
        LoopHistogram("y_seconds", "y", buckets=(float("inf"),))
