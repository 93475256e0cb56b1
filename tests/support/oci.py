"""OCI image layouts built in tests (what `skopeo copy ... oci-archive:` writes)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any


def layer(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """(name, content or None for a directory, symlink target or "") -> a tar."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content, link in entries:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def layout(
    path: Path, layers: list[bytes], ref: str = "example.com/app:1", config: dict[str, Any] | None = None
) -> Path:
    """An OCI image layout tarball of `layers` (gzipped tars), named `ref`."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    runtime = config or {"Env": ["PATH=/bin", "MODE=image"], "Cmd": ["/bin/app"], "WorkingDir": "/srv"}
    image_config = json.dumps({"architecture": "amd64", "os": "linux", "config": runtime})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(image_config.encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(x)} for x in layers],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(json.dumps(manifest).encode()),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    archive = path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode()}
        files.update({f"blobs/sha256/{d.removeprefix('sha256:')}": data for d, data in blobs.items()})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive
