"""Pod volumes on the host: configMap, secret and downwardAPI files written
atomically (a `..data` link swapped to a fresh directory), projected
volumes with a bound token asked for once and again near its expiry, and
hostPath type checks."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest

from node_agent.volumes import VolumeError, Volumes, mounts_for, write_atomically

Object = dict[str, Any]


class Api:
    """What the agent would read through the API server."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Object] = {}
        self.tokens: list[tuple[str, str, int]] = []

    async def lookup(self, kind: str, namespace: str, name: str) -> Object | None:
        return self.objects.get((kind, namespace, name))

    async def token(
        self, namespace: str, account: str, pod: str, uid: str, audience: str, seconds: int
    ) -> tuple[str, float]:
        self.tokens.append((account, pod, seconds))
        return f"token-{len(self.tokens)}", time.time() + seconds


def pod(*volumes: Object) -> Object:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "robot", "volumes": list(volumes), "containers": [{"name": "c"}]},
        "status": {"podIP": "127.0.0.9"},
    }


async def test_config_map_and_secret_files_appear_through_the_data_link(tmp_path: Path) -> None:
    api = Api()
    api.objects["configmaps", "ns", "conf"] = {"data": {"a.conf": "x=1", "b.conf": "y=2"}}
    api.objects["secrets", "ns", "creds"] = {"data": {"pw": base64.b64encode(b"s3cret").decode()}}
    volumes = Volumes(str(tmp_path), api.lookup, api.token)
    paths = await volumes.prepare(
        pod(
            {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "a.conf", "path": "sub/a.conf"}]}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        )
    )
    conf, creds = Path(paths["conf"]), Path(paths["creds"])
    assert (conf / "sub/a.conf").read_text() == "x=1" and not (conf / "b.conf").exists()
    assert os.readlink(conf / "sub") == "..data/sub" and os.path.islink(conf / "..data")
    assert (creds / "pw").read_bytes() == b"s3cret"
    assert oct(os.stat(creds / "pw").st_mode & 0o777) == oct(0o400)


def test_an_update_swaps_the_whole_payload(tmp_path: Path) -> None:
    target = str(tmp_path / "v")
    write_atomically(target, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    first = os.readlink(os.path.join(target, "..data"))
    write_atomically(target, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    assert os.readlink(os.path.join(target, "..data")) == first  # unchanged: not rewritten
    write_atomically(target, {"a": (b"3", 0o644)})
    assert Path(target, "a").read_bytes() == b"3"
    assert not os.path.lexists(os.path.join(target, "b"))  # a key that went away goes
    assert [e for e in os.listdir(target) if e.startswith("..") and e != "..data"] == [
        os.readlink(os.path.join(target, "..data"))
    ]  # the old payload directory is gone


async def test_a_missing_config_map_fails_the_mount_unless_optional(tmp_path: Path) -> None:
    api = Api()
    volumes = Volumes(str(tmp_path), api.lookup, api.token)
    with pytest.raises(VolumeError, match=r'volume "conf".*configmap "conf" not found'):
        await volumes.prepare(pod({"name": "conf", "configMap": {"name": "conf"}}))
    paths = await volumes.prepare(pod({"name": "conf", "configMap": {"name": "conf", "optional": True}}))
    assert [e for e in os.listdir(paths["conf"]) if not e.startswith("..")] == []


async def test_projected_token_is_bound_to_the_pod_and_renewed_near_expiry(tmp_path: Path) -> None:
    api = Api()
    api.objects["configmaps", "ns", "kube-root-ca.crt"] = {"data": {"ca.crt": "PEM"}}
    projected = {
        "name": "access",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3600, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }
    volumes = Volumes(str(tmp_path), api.lookup, api.token)
    path = Path((await volumes.prepare(pod(projected)))["access"])
    await volumes.prepare(pod(projected))
    assert api.tokens == [("robot", "p", 3600)]  # asked for once, reused while fresh
    assert [(path / f).read_text() for f in ("token", "ca.crt", "namespace")] == ["token-1", "PEM", "ns"]
    token, issued, expires = volumes._tokens["", 3600]
    volumes._tokens["", 3600] = (token, issued - 3000, expires - 3000)  # 80% of its life has passed
    await volumes.prepare(pod(projected))
    assert len(api.tokens) == 2 and (path / "token").read_text() == "token-2"


async def test_downward_api_labels_and_resources(tmp_path: Path) -> None:
    api = Api()
    spec = pod(
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
                    {"path": "mem", "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
                ]
            },
        }
    )
    spec["spec"]["containers"][0]["resources"] = {"limits": {"memory": "64Mi"}}
    path = Path((await Volumes(str(tmp_path), api.lookup, api.token).prepare(spec))["info"])
    assert [(path / f).read_text() for f in ("labels", "ip", "mem")] == ['app="web"', "127.0.0.9", "64"]


async def test_host_path_types_are_checked(tmp_path: Path) -> None:
    api = Api()
    volumes = Volumes(str(tmp_path / "pod"), api.lookup, api.token)
    made = tmp_path / "made"
    paths = await volumes.prepare(pod({"name": "h", "hostPath": {"path": str(made), "type": "DirectoryOrCreate"}}))
    assert paths["h"] == str(made) and made.is_dir()
    with pytest.raises(VolumeError, match="is not a file"):
        await volumes.prepare(pod({"name": "h", "hostPath": {"path": str(made), "type": "File"}}))
    with pytest.raises(VolumeError, match="does not exist"):
        await volumes.prepare(pod({"name": "h", "hostPath": {"path": str(tmp_path / "no"), "type": "Directory"}}))
    with pytest.raises(VolumeError, match="not supported"):
        await volumes.prepare(pod({"name": "x", "persistentVolumeClaim": {"claimName": "c"}}))


def test_mounts_name_known_volumes_and_stay_inside_them(tmp_path: Path) -> None:
    container = {"volumeMounts": [{"name": "v", "mountPath": "/data", "subPath": "a/b", "readOnly": True}]}
    [mount] = mounts_for(container, {"v": str(tmp_path)})
    assert (mount.host_path, mount.container_path, mount.read_only) == (str(tmp_path / "a/b"), "/data", True)
    with pytest.raises(VolumeError, match="names no volume"):
        mounts_for({"volumeMounts": [{"name": "w", "mountPath": "/w"}]}, {"v": str(tmp_path)})
    with pytest.raises(VolumeError, match="subPath"):
        mounts_for({"volumeMounts": [{"name": "v", "mountPath": "/w", "subPath": "../up"}]}, {"v": str(tmp_path)})
