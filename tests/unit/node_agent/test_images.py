"""The image store: references in Docker's full spelling, OCI image layout
imports (layers in order, whiteouts, nothing written outside the root
filesystem), and the busybox image built from a static busybox."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from node_agent.images import ImageError, ImageStore, normalize
from tests.support.oci import layer as _tar
from tests.support.oci import layout as _layout


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


def test_a_layer_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    archive = _layout(tmp_path, [_tar([("f", b"original", "")])])
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.startswith("blobs/") and data[:2] == b"\x1f\x8b":
                data = _tar([("f", b"replaced", "")])  # a layer swapped for another
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    store = ImageStore(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="does not match its digest"):
        store.import_oci(str(tampered))
    assert store.references() == {}
