"""Where a benchmark keeps its clusters: a fresh directory under the system's
temporary one, removed when the benchmark ends, since a run leaves gigabytes
of Raft journals and snapshots behind (an api_bench run: 3-4 GB), or kept
with --keep, for the masters' logs."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator


def add_keep_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep", action="store_true", help="keep the clusters' directory (logs, journals) after the run"
    )


@contextlib.contextmanager
def work_dir(prefix: str, keep: bool) -> Iterator[str]:
    """A new directory, removed on the way out unless `keep`."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", flush=True)
        else:
            shutil.rmtree(path, onerror=_report)


def _report(function: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
    print(f"could not remove {path}: {exc_info[1]}", file=sys.stderr)
