"""A 60-second run of the fault campaign (make chaos runs it for minutes)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos.campaign import run_campaign


def test_sixty_seconds_of_faults(tmp_path: Path) -> None:
    seconds = float(os.environ.get("RAFTKUBE_CHAOS_SECONDS", "60"))
    seed = int(os.environ.get("RAFTKUBE_CHAOS_SEED", "1"))
    report = run_campaign(seconds, str(tmp_path / "cluster"), seed=seed)
    print(report.text())
    assert report.verdict.operations > 1000, "the clients barely ran"
    assert report.faults, "the nemesis never struck"
    assert report.ok, report.text()
