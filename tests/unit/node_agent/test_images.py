"""The image store: references in Docker's full spelling, OCI image layout
imports (layers in order, whiteouts, nothing written outside the root
filesystem), and the busybox image built from a static busybox."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from node_agent.images import ImageError, ImageStore, normalize


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("me/app", "docker.io/me/app:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("registry.example:5000/team/app:2", "registry.example:5000/team/app:2"),
        ("localhost/app", "localhost/app:latest"),
        ("busybox@sha256:abc", "docker.io/library/busybox@sha256:abc"),
    ],
)
def test_references_are_spelled_in_full(given: str, full: str) -> None:
    assert normalize(given) == full


def _tar(entries: list[tuple[str, bytes | None, str]]) -> bytes:
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


def _layout(path: Path, layers: list[bytes], ref: str = "example.com/app:1") -> Path:
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    config = json.dumps({"config": {"Env": ["PATH=/bin", "MODE=image"], "Cmd": ["/bin/app"], "WorkingDir": "/srv"}})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config.encode())},
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


def test_an_oci_layout_imports_with_its_layers_and_whiteouts(tmp_path: Path) -> None:
    base = _tar(
        [
            ("bin", None, ""),
            ("bin/app", b"#!/bin/sh\necho app\n", ""),
            ("etc", None, ""),
            ("etc/old", b"gone later", ""),
            ("srv", None, ""),
            ("srv/a", b"a", ""),
            ("srv/b", b"b", ""),
            ("bin/sh", None, "/bin/busybox"),
        ]
    )
    top = _tar([("etc/.wh.old", b"", ""), ("srv/.wh..wh..opq", b"", ""), ("srv/c", b"c", "")])
    store = ImageStore(str(tmp_path / "store"))
    assert store.import_oci(str(_layout(tmp_path, [base, top]))) == ["example.com/app:1"]
    image = store.resolve("example.com/app:1")
    assert image is not None
    root = Path(image.rootfs)
    assert (root / "bin/app").read_bytes().startswith(b"#!/bin/sh")
    assert not (root / "etc/old").exists()  # whited out
    assert sorted(os.listdir(root / "srv")) == ["c"]  # made opaque, then given c
    assert os.readlink(root / "bin/sh") == "/bin/busybox"  # absolute links are kept: they resolve inside the container
    assert (image.env, image.cmd, image.working_dir) == (["PATH=/bin", "MODE=image"], ["/bin/app"], "/srv")
    assert store.resolve("example.com/app:2") is None


def test_a_layer_cannot_write_outside_the_root_filesystem(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = _tar([("escape", None, str(outside)), ("escape/planted", b"x", "")])
    store = ImageStore(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="escapes the root filesystem"):
        store.import_oci(str(_layout(tmp_path, [evil])))
    assert not (outside / "planted").exists()
    assert store.references() == {}  # nothing half-imported


def test_a_layout_without_a_name_needs_one(tmp_path: Path) -> None:
    archive = _layout(tmp_path, [_tar([("f", b"x", "")])], ref="")
    store = ImageStore(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="--name"):
        store.import_oci(str(archive))
    assert store.import_oci(str(archive), name="mine") == ["docker.io/library/mine:latest"]


def test_not_a_layout_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(ImageError, match="not a tar archive"):
        ImageStore(str(tmp_path / "store")).import_oci(str(junk))


@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="no busybox (Debian package busybox-static)")
def test_busybox_is_built_from_the_static_busybox(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path / "store"))
    image_id = store.ensure_busybox()
    assert image_id is not None and store.ensure_busybox() == image_id  # built once
    image = store.resolve("busybox")
    assert image is not None and image.cmd == ["sh"]
    assert os.readlink(os.path.join(image.rootfs, "bin/sh")) == "/bin/busybox"
    assert os.path.isfile(os.path.join(image.rootfs, "bin/busybox"))
