"""A pod's volumes on the host, as the kubelet's volume manager prepares
them before a container starts: emptyDir (a directory, or tmpfs for
medium Memory), hostPath (with its type checks), and configMap, secret,
downwardAPI and projected volumes (serviceAccountToken included), whose
files are written the way Kubernetes' atomic writer writes them: into a
timestamped directory that the `..data` link is swapped to, so a reader
never sees half an update.

Each volume lives in PODDIR/volumes/NAME; the runtime bind-mounts it at
each volumeMount's mountPath. Anything that cannot be set up is a
VolumeError, shown as the container's ContainerCreating message (as
Kubernetes shows FailedMount) and tried again.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any

from control_plane.apis.quantity import parse_quantity
from node_agent.environment import ConfigError, Lookup, field_value
from node_agent.runtime import Mount

Object = dict[str, Any]
# (namespace, service account, pod name, pod uid, audience, seconds) -> (token, expires at)
TokenRequest = Callable[[str, str, str, str, str, int], Awaitable[tuple[str, float]]]
DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """MountVolume.SetUp failed: the container cannot start yet."""


class Volumes:
    def __init__(self, pod_dir: str, lookup: Lookup, request_token: TokenRequest):
        self.root = os.path.join(pod_dir, "volumes")
        self.lookup = lookup
        self.request_token = request_token
        self._tokens: dict[tuple[str, int], tuple[str, float, float]] = {}  # -> (token, issued, expires)
        self._tmpfs: set[str] = set()

    async def prepare(self, pod: Object) -> dict[str, str]:
        """Set up (or bring up to date) every volume of the pod: name -> host path."""
        paths: dict[str, str] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or ():
            name = str(volume.get("name", ""))
            try:
                paths[name] = await self._prepare(pod, name, volume)
            except (OSError, ConfigError, ValueError) as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None
        return paths

    async def _prepare(self, pod: Object, name: str, volume: Object) -> str:
        path = os.path.join(self.root, name)
        namespace = str((pod.get("metadata") or {}).get("namespace", ""))
        if "emptyDir" in volume:
            return self._empty_dir(path, volume["emptyDir"] or {})
        if "hostPath" in volume:
            return _host_path(volume["hostPath"] or {})
        if "configMap" in volume:
            source = volume["configMap"] or {}
            files = await self._config_map(namespace, source, int(source.get("defaultMode", DEFAULT_MODE)))
        elif "secret" in volume:
            source = volume["secret"] or {}
            files = await self._secret(namespace, source, int(source.get("defaultMode", DEFAULT_MODE)))
        elif "downwardAPI" in volume:
            source = volume["downwardAPI"] or {}
            files = _downward_api(pod, source, int(source.get("defaultMode", DEFAULT_MODE)))
        elif "projected" in volume:
            files = await self._projected(pod, volume["projected"] or {})
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise ValueError(f"volume type {', '.join(kinds) or '(none)'} is not supported by this node")
        write_atomically(path, files)
        return path

    # -- sources ------------------------------------------------------------------------------

    def _empty_dir(self, path: str, source: Object) -> str:
        os.makedirs(path, exist_ok=True)
        if source.get("medium") == "Memory" and path not in self._tmpfs and os.geteuid() == 0:
            options = "mode=0777"
            if source.get("sizeLimit"):
                options += f",size={int(parse_quantity(source['sizeLimit']))}"
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True, capture_output=True)
            self._tmpfs.add(path)
        else:
            os.chmod(path, 0o777)  # as Kubernetes makes it: writable by whatever user the container runs as
        return path

    async def _object_data(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = await self.lookup(kind, namespace, name)
        if obj is None:
            if optional:
                return None
            raise ValueError(f'{"configmap" if kind == "configmaps" else "secret"} "{name}" not found')
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    async def _config_map(self, namespace: str, source: Object, mode: int) -> dict[str, tuple[bytes, int]]:
        data = await self._object_data("configmaps", namespace, str(source.get("name")), bool(source.get("optional")))
        return _items(data, source, mode, f"configMap {source.get('name')}")

    async def _secret(self, namespace: str, source: Object, mode: int) -> dict[str, tuple[bytes, int]]:
        name = str(source.get("secretName") or source.get("name"))
        data = await self._object_data("secrets", namespace, name, bool(source.get("optional")))
        return _items(data, source, mode, f"secret {name}")

    async def _projected(self, pod: Object, projected: Object) -> dict[str, tuple[bytes, int]]:
        mode = int(projected.get("defaultMode", DEFAULT_MODE))
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        files: dict[str, tuple[bytes, int]] = {}
        for source in projected.get("sources") or ():
            if "configMap" in source:
                files.update(await self._config_map(namespace, source["configMap"] or {}, mode))
            elif "secret" in source:
                files.update(await self._secret(namespace, source["secret"] or {}, mode))
            elif "downwardAPI" in source:
                files.update(_downward_api(pod, source["downwardAPI"] or {}, mode))
            elif "serviceAccountToken" in source:
                spec = source["serviceAccountToken"] or {}
                seconds = int(spec.get("expirationSeconds", 3600))
                token = await self._token(pod, str(spec.get("audience") or ""), seconds)
                files[_relative(str(spec.get("path", "token")))] = (token.encode(), mode)
            else:
                raise ValueError(f"projected source {sorted(source)} is not supported by this node")
        return files

    async def _token(self, pod: Object, audience: str, seconds: int) -> str:
        """A token bound to the pod, asked for again once 80% of its life
        has passed (as the kubelet's token manager does)."""
        key = (audience, seconds)
        now = time.time()
        held = self._tokens.get(key)
        if held is not None and now < held[1] + 0.8 * (held[2] - held[1]):
            return held[0]
        meta = pod.get("metadata") or {}
        account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        token, expires = await self.request_token(
            str(meta.get("namespace")), account, str(meta.get("name")), str(meta.get("uid")), audience, seconds
        )
        self._tokens[key] = (token, now, expires)
        return token

    def refresh_due(self) -> float:
        """When the first held token should be renewed (0: none is held)."""
        return min((issued + 0.8 * (expires - issued) for _, issued, expires in self._tokens.values()), default=0.0)

    def clean_up(self) -> None:
        for path in self._tmpfs:
            subprocess.run(["umount", "-l", path], check=False, capture_output=True)
        self._tmpfs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def mounts_for(container: Object, paths: dict[str, str]) -> list[Mount]:
    """The container's volumeMounts as host paths (subPath included)."""
    mounts = []
    for m in container.get("volumeMounts") or ():
        name = str(m.get("name", ""))
        if name not in paths:
            raise VolumeError(f'volumeMount "{name}" names no volume of the pod')
        host = paths[name]
        sub = str(m.get("subPath") or "")
        if sub:
            try:
                host = os.path.join(host, _relative(sub))
            except ValueError as e:
                raise VolumeError(f'volumeMount "{name}": subPath: {e}') from None
            if not os.path.lexists(host):
                os.makedirs(host, exist_ok=True)
        mounts.append(Mount(host, str(m.get("mountPath")), bool(m.get("readOnly"))))
    return mounts


def _relative(path: str) -> str:
    normal = os.path.normpath(path)
    if os.path.isabs(path) or normal.startswith(".."):
        raise ValueError(f"path {path!r} must be relative and may not contain '..'")
    return normal


def _items(data: dict[str, bytes] | None, source: Object, mode: int, what: str) -> dict[str, tuple[bytes, int]]:
    if data is None:  # optional and missing: an empty volume
        return {}
    items = source.get("items")
    if not items:
        return {_relative(k): (v, mode) for k, v in data.items()}
    files = {}
    for item in items:
        key = str(item.get("key"))
        if key not in data:
            if source.get("optional"):
                continue
            raise ValueError(f"couldn't find key {key} in {what}")
        files[_relative(str(item.get("path") or key))] = (data[key], int(item.get("mode", mode)))
    return files


def _downward_api(pod: Object, source: Object, mode: int) -> dict[str, tuple[bytes, int]]:
    files = {}
    meta = pod.get("metadata") or {}
    for item in source.get("items") or ():
        path = _relative(str(item.get("path")))
        item_mode = int(item.get("mode", mode))
        if "fieldRef" in item:
            field = str((item["fieldRef"] or {}).get("fieldPath"))
            if field in ("metadata.labels", "metadata.annotations"):
                values = meta.get(field.split(".")[1]) or {}
                text = "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
            else:
                text = field_value(pod, field)
            files[path] = (text.encode(), item_mode)
        elif "resourceFieldRef" in item:
            files[path] = (_resource_field(pod, item["resourceFieldRef"] or {}).encode(), item_mode)
    return files


def _resource_field(pod: Object, ref: Object) -> str:
    """limits.cpu / requests.memory ... of a container, in units of the divisor (rounded up)."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ValueError(f"unsupported resourceFieldRef resource {resource!r}")
    containers = (pod.get("spec") or {}).get("containers") or []
    wanted = ref.get("containerName")
    container = next((c for c in containers if not wanted or c.get("name") == wanted), None)
    if container is None:
        raise ValueError(f"resourceFieldRef names no container {wanted!r}")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        # No limit: the node's allocatable, as Kubernetes gives it.
        value = (os.cpu_count() or 1) if name == "cpu" else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    divisor = parse_quantity(ref.get("divisor") or "1")
    result = (parse_quantity(value) / divisor).to_integral_value(rounding=ROUND_CEILING)
    return str(max(result, Decimal(1)) if name == "cpu" else result)


def write_atomically(target: str, files: dict[str, tuple[bytes, int]]) -> None:
    """Kubernetes' atomic writer: the payload goes into a fresh `..TIMESTAMP`
    directory, `..data` is swapped to it in one rename, and each top-level
    name is a link through `..data`. Unchanged content is not rewritten."""
    os.makedirs(target, exist_ok=True)
    data_link = os.path.join(target, "..data")
    current = os.readlink(data_link) if os.path.islink(data_link) else None
    if current is not None and _same(os.path.join(target, current), files):
        return
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.time_ns() % 10**9:09d}"
    staging = os.path.join(target, stamp)
    os.makedirs(staging)
    for path, (content, mode) in files.items():
        full = os.path.join(staging, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
        os.chmod(full, mode & 0o7777)
    os.chmod(staging, 0o755)
    tmp_link = os.path.join(target, "..data_tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp_link)
    os.symlink(stamp, tmp_link)
    os.rename(tmp_link, data_link)
    top = {p.split(os.sep, 1)[0] for p in files}
    for name in top:
        link = os.path.join(target, name)
        if not os.path.islink(link):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(link) if os.path.isdir(link) else os.unlink(link)
            os.symlink(os.path.join("..data", name), link)
    for entry in os.listdir(target):
        full = os.path.join(target, entry)
        if entry.startswith("..") and entry not in ("..data", stamp):
            shutil.rmtree(full, ignore_errors=True)
        elif not entry.startswith("..") and entry not in top and os.path.islink(full):
            os.unlink(full)


def _same(directory: str, files: dict[str, tuple[bytes, int]]) -> bool:
    try:
        present = {os.path.relpath(os.path.join(d, f), directory) for d, _, names in os.walk(directory) for f in names}
        if present != set(files):
            return False
        for path, (content, mode) in files.items():
            full = os.path.join(directory, path)
            if stat.S_IMODE(os.stat(full).st_mode) != mode & 0o7777:
                return False
            with open(full, "rb") as f:
                if f.read() != content:
                    return False
        return True
    except OSError:
        return False


_HOST_PATH_CHECKS: dict[str, tuple[Callable[[int], bool], str]] = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def _host_path(source: Object) -> str:
    path = str(source.get("path", ""))
    kind = str(source.get("type") or "")
    if not os.path.isabs(path):
        raise ValueError(f"hostPath {path!r} is not absolute")
    if kind == "DirectoryOrCreate" and not os.path.exists(path):
        os.makedirs(path, mode=0o755)
    elif kind == "FileOrCreate" and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
    check = _HOST_PATH_CHECKS.get(kind.removesuffix("OrCreate"))
    if check is not None:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise ValueError(f"hostPath type check failed: {path} does not exist") from None
        if not check[0](mode):
            raise ValueError(f"hostPath type check failed: {path} is not {check[1]}")
    elif kind not in ("", "DirectoryOrCreate", "FileOrCreate"):
        raise ValueError(f"hostPath type {kind!r} is not known")
    return path
