"""Shared fixtures. A test that starts processes stops them, whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pluggy
import pytest

from control_plane.local_cluster import LocalCluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _log_tails(cluster: LocalCluster, lines: int = 40) -> str:
    out = []
    for m in cluster.masters:
        try:
            text = Path(m.log_path).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        out.append(f"--- {m.id} ({m.log_path})\n" + "\n".join(text))
    return "\n".join(out)


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start a cluster of real master processes on loopback; all are
    stopped (SIGCONT, SIGTERM, then SIGKILL) when the test ends."""
    clusters: list[LocalCluster] = []

    def make(masters: int = 3, server_args: list[str] | None = None, ready: bool = True) -> LocalCluster:
        cluster = LocalCluster.create(str(tmp_path / f"cluster{len(clusters)}"), masters, server_args=server_args)
        clusters.append(cluster)
        cluster.start()
        if ready:
            cluster.wait_ready(60)
        return cluster

    yield make
    failed = getattr(request.node, "report_call", None)
    for cluster in clusters:
        if failed is not None and failed.failed:
            print(_log_tails(cluster))
        cluster.stop()


@pytest.fixture
def cluster(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    return make_cluster()
