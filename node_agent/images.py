"""The node's image store, where the runc runtime finds root filesystems.

There is no registry client: images come in as OCI image layout tarballs
(`raftkube agent images import FILE`, what `skopeo copy ... oci-archive:`
or `docker buildx --output type=oci` write), and a `busybox` image is built
from Debian's busybox-static when it is installed. A pod naming an image
the store does not hold gets ErrImagePull, as a kubelet whose pull failed.

Layout under the store's root:

    index.json              {"docker.io/library/busybox:latest": "sha256:..."}
    images/<hex>/config.json  the image's runtime config (Env, Entrypoint, Cmd, WorkingDir)
    images/<hex>/rootfs/      its layers applied in order (whiteouts honoured)

Writers (an import, the busybox build) hold a lock on the index; readers
read index.json whole, as it is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

BUSYBOX = "/bin/busybox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


class ImageError(Exception):
    """An image could not be imported (a bad or unsupported tarball)."""


def normalize(reference: str) -> str:
    """An image reference as Docker spells it in full: `busybox` is
    `docker.io/library/busybox:latest`, `me/app:1` is `docker.io/me/app:1`."""
    ref = reference.strip()
    if not ref:
        raise ImageError("an empty image reference")
    name, at, digest = ref.partition("@")
    first, slash, _ = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if slash else f"docker.io/library/{name}"
    if name.startswith("docker.io/") and name.count("/") == 1:
        name = "docker.io/library/" + name.removeprefix("docker.io/")
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if at else name


@dataclass(frozen=True)
class Image:
    id: str  # sha256:... of the image config
    rootfs: str
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""


class ImageStore:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        os.makedirs(os.path.join(self.root, "images"), exist_ok=True)
        # Resolved references, valid while index.json is the same file (stored images never change).
        self._resolved: dict[str, Image] = {}
        self._resolved_for: tuple[int, int] = (0, 0)

    # -- reading ----------------------------------------------------------------------------

    def _index(self) -> dict[str, str]:
        try:
            with open(os.path.join(self.root, "index.json"), encoding="utf-8") as f:
                index: dict[str, str] = json.load(f)
                return index
        except FileNotFoundError:
            return {}

    def references(self) -> dict[str, str]:
        """Every reference the store holds, with its image id."""
        return dict(sorted(self._index().items()))

    def resolve(self, reference: str) -> Image | None:
        try:
            info = os.stat(os.path.join(self.root, "index.json"))
        except FileNotFoundError:
            return None
        if (info.st_ino, info.st_mtime_ns) != self._resolved_for:
            self._resolved, self._resolved_for = {}, (info.st_ino, info.st_mtime_ns)
        image = self._resolved.get(reference)
        if image is None:
            image = self._resolve(reference)
            if image is not None:
                self._resolved[reference] = image
        return image

    def _resolve(self, reference: str) -> Image | None:
        try:
            ref = normalize(reference)
        except ImageError:
            return None
        index = self._index()
        image_id = index.get(ref) or next((i for i in index.values() if i == reference), None)
        if image_id is None:
            return None
        directory = self._dir(image_id)
        try:
            with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
                config = json.load(f).get("config") or {}
        except (OSError, ValueError):
            return None
        return Image(
            id=image_id,
            rootfs=os.path.join(directory, "rootfs"),
            env=list(config.get("Env") or []),
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )

    def _dir(self, image_id: str) -> str:
        return os.path.join(self.root, "images", image_id.removeprefix("sha256:"))

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        """The index, to change in place; written back atomically on exit."""
        with open(os.path.join(self.root, "index.lock"), "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._index()
            yield index
            tmp = os.path.join(self.root, "index.json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(index, f, indent=1, sort_keys=True)
            os.replace(tmp, os.path.join(self.root, "index.json"))

    def _add(self, image_id: str, config: bytes, build: Any, references: list[str]) -> None:
        """Store an image (unless held already) and point `references` at it."""
        with self._locked() as index:
            directory = self._dir(image_id)
            if not os.path.isdir(os.path.join(directory, "rootfs")):
                staging = tempfile.mkdtemp(prefix=".import-", dir=os.path.join(self.root, "images"))
                try:
                    os.makedirs(os.path.join(staging, "rootfs"))
                    build(os.path.join(staging, "rootfs"))
                    with open(os.path.join(staging, "config.json"), "wb") as f:
                        f.write(config)
                    shutil.rmtree(directory, ignore_errors=True)
                    os.rename(staging, directory)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
            for ref in references:
                index[normalize(ref)] = image_id

    def import_oci(self, path: str, name: str = "") -> list[str]:
        """Import an OCI image layout tarball; the references it stored.
        `name` names the image when the layout gives no reference (or
        overrides the one it gives)."""
        try:
            archive = tarfile.open(path)  # noqa: SIM115 - closed below, after the layers are read
        except OSError as e:
            raise ImageError(f"{path}: {e.strerror or e}") from None
        except tarfile.TarError:
            raise ImageError(f"{path}: not a tar archive (an OCI image layout tarball is one)") from None
        with archive:
            blobs = _Blobs(archive)
            index = blobs.json("index.json")
            manifest, ref = _pick_manifest(blobs, index)
            config_digest = str(manifest["config"]["digest"])
            config = blobs.read_blob(config_digest)
            references = [name] if name else ([ref] if ref else [])
            if not references:
                raise ImageError(f"{path}: the layout names no image (org.opencontainers.image.ref.name): give --name")
            if ref and ":" not in ref and "/" not in ref and not name:
                raise ImageError(f"{path}: the layout names only the tag {ref!r}: give --name REPOSITORY:{ref}")

            def build(rootfs: str) -> None:
                for layer in manifest.get("layers") or ():
                    blobs.verify(str(layer["digest"]))
                    with blobs.open_blob(str(layer["digest"])) as raw:
                        apply_layer(raw, str(layer.get("mediaType", "")), rootfs)

            self._add(config_digest, config, build, references)
            return [normalize(r) for r in references]

    def ensure_busybox(self, busybox: str = BUSYBOX, reference: str = "busybox:latest") -> str | None:
        """A `busybox` image from the host's static busybox, when there is
        one and the store has no busybox yet; the image id, or None."""
        existing = self.resolve(reference)
        if existing is not None:
            return existing.id
        if not _is_static(busybox):
            return None
        with open(busybox, "rb") as f:
            binary_digest = hashlib.sha256(f.read()).hexdigest()
        config = json.dumps(
            {
                "architecture": _ARCH.get(platform.machine(), platform.machine()),
                "os": "linux",
                "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{binary_digest}"]},
                "history": [{"created_by": f"raftkube: {busybox} (busybox-static) and its applet links"}],
            },
            sort_keys=True,
        ).encode()
        image_id = "sha256:" + hashlib.sha256(config).hexdigest()

        def build(rootfs: str) -> None:
            applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
            for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "var/tmp"):
                os.makedirs(os.path.join(rootfs, d), exist_ok=True)
            os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
            shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
            for applet in applets.split():
                link = os.path.join(rootfs, applet)
                if applet != "bin/busybox" and not os.path.lexists(link):
                    os.makedirs(os.path.dirname(link), exist_ok=True)
                    os.symlink("/bin/busybox", link)
            with open(os.path.join(rootfs, "etc", "passwd"), "w", encoding="ascii") as f:
                f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
            with open(os.path.join(rootfs, "etc", "group"), "w", encoding="ascii") as f:
                f.write("root:x:0:\nnobody:x:65534:\n")

        self._add(image_id, config, build, [reference])
        return image_id


def _is_static(path: str) -> bool:
    """A statically linked ELF (what runs inside an empty root filesystem)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    # A dynamically linked ELF names its interpreter (PT_INTERP) near the start.
    return head.startswith(b"\x7fELF") and b"/lib64/ld-linux" not in head and b"/lib/ld-" not in head


class _Blobs:
    """The files of an OCI layout inside a tar archive."""

    def __init__(self, archive: tarfile.TarFile):
        self.archive = archive
        self.members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        if member is None:
            raise ImageError(f"not an OCI image layout: {name} is missing")
        f = self.archive.extractfile(member)
        assert f is not None
        return f

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.open(name).read())
        except ValueError as e:
            raise ImageError(f"{name}: {e}") from None

    def open_blob(self, digest: str) -> IO[bytes]:
        algorithm, _, hex_digest = digest.partition(":")
        return self.open(f"blobs/{algorithm}/{hex_digest}")

    def verify(self, digest: str) -> None:
        """A blob read whole in chunks, against its digest (layers are too big to hold)."""
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise ImageError(f"unsupported digest algorithm in {digest}")
        h = hashlib.sha256()
        with self.open_blob(digest) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != expected:
            raise ImageError(f"blob {digest} does not match its digest")

    def read_blob(self, digest: str) -> bytes:
        data = self.open_blob(digest).read()
        algorithm, _, expected = digest.partition(":")
        if algorithm == "sha256" and hashlib.sha256(data).hexdigest() != expected:
            raise ImageError(f"blob {digest} does not match its digest")
        return data


def _pick_manifest(blobs: _Blobs, index: Any) -> tuple[Any, str]:
    """The manifest for this machine's platform, and the reference the index gives it."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    for _ in range(4):  # an index may point at an index (a multi-platform image)
        entries = list(index.get("manifests") or ())
        if not entries:
            raise ImageError("the image index lists no manifests")
        matching = [e for e in entries if (e.get("platform") or {}).get("architecture") in (None, arch)]
        if not matching:
            raise ImageError(f"the image has no manifest for linux/{arch}")
        entry = matching[0]
        ref = str((entry.get("annotations") or {}).get("org.opencontainers.image.ref.name", "")) or str(
            (index.get("annotations") or {}).get("org.opencontainers.image.ref.name", "")
        )
        document = json.loads(blobs.read_blob(str(entry["digest"])))
        media_type = entry.get("mediaType") or document.get("mediaType", "")
        if media_type in _INDEX_TYPES or "manifests" in document:
            index = {**document, "annotations": {"org.opencontainers.image.ref.name": ref}} if ref else document
            continue
        if media_type and media_type not in _MANIFEST_TYPES:
            raise ImageError(f"unsupported manifest type {media_type}")
        return document, ref
    raise ImageError("image indexes nested too deep")


def apply_layer(raw: IO[bytes], media_type: str, rootfs: str) -> None:
    """Unpack one layer onto `rootfs`, honouring OCI whiteouts (`.wh.NAME`
    deletes NAME, `.wh..wh..opq` empties its directory) and refusing any
    entry that would land outside the root filesystem."""
    if "zstd" in media_type:
        raise ImageError("zstd-compressed layers are not supported: export the image with gzip layers")
    root = os.path.realpath(rootfs)
    try:
        layer = tarfile.open(fileobj=raw, mode="r:*")  # noqa: SIM115 - gzip or plain, told by its first bytes
    except tarfile.TarError as e:
        raise ImageError(f"a layer is not a tar archive: {e}") from None
    with layer:
        for member in layer:
            name = os.path.normpath(member.name.lstrip("/"))
            if name == "." or name.startswith(".."):
                continue
            parent, base = os.path.split(name)
            target_dir = os.path.realpath(os.path.join(root, parent))
            if target_dir != root and not target_dir.startswith(root + os.sep):
                raise ImageError(f"layer entry {member.name} escapes the root filesystem")
            if base == ".wh..wh..opq":
                for entry in os.listdir(target_dir) if os.path.isdir(target_dir) else ():
                    _remove(os.path.join(target_dir, entry))
                continue
            if base.startswith(".wh."):
                _remove(os.path.join(target_dir, base.removeprefix(".wh.")))
                continue
            if member.islnk():
                link = os.path.normpath(member.linkname.lstrip("/"))
                if link.startswith(".."):
                    raise ImageError(f"hard link {member.name} points outside the root filesystem")
                member.linkname = link
            path = os.path.join(target_dir, base)
            if os.path.lexists(path) and not (member.isdir() and os.path.isdir(path) and not os.path.islink(path)):
                _remove(path)
            member.name = os.path.relpath(path, root)
            layer.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
