"""Pods as real OCI containers: a node agent with the runc runtime on a
3-master cluster runs busybox pods in namespaces of their own, under their
memory limits, reports an OOM kill as OOMKilled and an outside SIGKILL as
an Error, mounts the pod's volumes (the service-account token included),
runs exec probes inside the container, and adopts its containers when it
restarts. Skipped, saying why, only where runc cannot run a container."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from control_plane.local_cluster import LocalCluster
from node_agent.runtime.runc import runc_works
from tests.support.oci import layer, layout
from tests.support.rest import Api
from tests.support.waiting import wait_until

WHY_NOT = runc_works(tempfile.mkdtemp(prefix="runc-probe-"))
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=f"runc cannot run containers here: {WHY_NOT}")
PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory = str(tmp_path_factory.mktemp("runc"))
    with LocalCluster.running(directory, 3, runc_agents=1, agent_args=["--heartbeat-interval", "1"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Api:
    return Api(cluster.api_endpoints[0], cluster.admin_credentials)


def busybox(name: str, script: str, memory: str = "", **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    container.update(spec.pop("container", {}))
    return {"metadata": {"name": name}, "spec": {"nodeName": "r1", "containers": [container], **spec}}


def status_of(api: Api, name: str) -> dict[str, Any]:
    return dict(api.ok("GET", f"{PODS}/{name}").get("status") or {})


def container_state(api: Api, name: str) -> dict[str, Any]:
    statuses = status_of(api, name).get("containerStatuses") or [{}]
    return dict(statuses[0].get("state") or {})


def logs(api: Api, name: str) -> str:
    with api.open(f"{PODS}/{name}/log") as resp:
        return str(resp.read().decode())


def container_dir(cluster: LocalCluster, api: Api, name: str) -> str:
    container_id = status_of(api, name)["containerStatuses"][0]["containerID"]
    assert container_id.startswith("runc://")
    return os.path.join(cluster.agent("r1").data_dir, "runc", container_id.removeprefix("runc://"))


def container_pid(cluster: LocalCluster, api: Api, name: str) -> int:
    with open(os.path.join(container_dir(cluster, api, name), "pid"), encoding="ascii") as f:
        return int(f.read())


def wait_running(api: Api, name: str) -> None:
    wait_until(lambda: "running" in container_state(api, name), f"{name} running", timeout=30)


def test_a_busybox_pod_runs_in_namespaces_of_its_own_under_its_memory_limit(cluster: LocalCluster, api: Api) -> None:
    api.ok("POST", PODS, busybox("box", "echo pid=$$; hostname; ls /; exec sleep 1000", memory="48Mi"))
    wait_running(api, "box")
    wait_until(lambda: "pid=1" in logs(api, "box"), "the container's output")
    output = logs(api, "box")
    assert "pid=1\nbox\n" in output  # pid 1 of its own pid namespace; its own hostname
    assert "linuxrc" in output  # busybox's root filesystem, not the host's
    pid = container_pid(cluster, api, "box")
    for namespace in ("pid", "mnt", "uts", "ipc"):
        assert os.readlink(f"/proc/{pid}/ns/{namespace}") != os.readlink(f"/proc/self/ns/{namespace}"), namespace
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")  # the node's network, as documented
    with open(f"/proc/{pid}/cgroup", encoding="ascii") as f:
        cgroups = f.read()
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path = next(line.split(":", 2)[2] for line in cgroups.splitlines() if line.startswith("0::"))
        limit_file = f"/sys/fs/cgroup{path}/memory.max"
    else:
        path = next(line.split(":", 2)[2] for line in cgroups.splitlines() if ":memory:" in line)
        limit_file = f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
    with open(limit_file, encoding="ascii") as f:
        assert int(f.read()) == 48 << 20
    api.ok("DELETE", f"{PODS}/box?gracePeriodSeconds=1")


def test_exceeding_the_limit_is_oomkilled_and_an_outside_sigkill_is_not(cluster: LocalCluster, api: Api) -> None:
    hog = busybox("hog", "exec dd if=/dev/zero of=/dev/null bs=96M count=1", memory="32Mi", restartPolicy="Never")
    api.ok("POST", PODS, hog)
    api.ok("POST", PODS, busybox("victim", "exec sleep 1000", memory="32Mi", restartPolicy="Never"))
    wait_running(api, "victim")
    os.kill(container_pid(cluster, api, "victim"), signal.SIGKILL)
    for name, reason in (("hog", "OOMKilled"), ("victim", "Error")):
        wait_until(lambda name=name: "terminated" in container_state(api, name), f"{name} ended", timeout=30)  # type: ignore[misc]
        ended = container_state(api, name)["terminated"]
        assert (ended["reason"], ended["exitCode"]) == (reason, 137), name
        assert status_of(api, name)["phase"] == "Failed"


def test_volumes_are_mounted_and_the_token_authenticates(cluster: LocalCluster, api: Api) -> None:
    api.ok("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "conf"}, "data": {"greeting": "hi"}})
    secret = {"metadata": {"name": "creds"}, "data": {"password": base64.b64encode(b"s3cret").decode()}}
    api.ok("POST", "/api/v1/namespaces/default/secrets", secret)
    script = (
        "cat /etc/conf/greeting; echo; cat /etc/creds/password; echo; cat /info/name; echo; "
        "echo scratch > /scratch/f && cat /scratch/f; "
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; "
        "grep -c 'BEGIN CERTIFICATE' /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; "
        "echo token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); exec sleep 1000"
    )
    mounts = [
        {"name": "conf", "mountPath": "/etc/conf"},
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        {"name": "info", "mountPath": "/info"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    volumes = [
        {"name": "conf", "configMap": {"name": "conf"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "scratch", "emptyDir": {}},
    ]
    api.ok("POST", PODS, busybox("vols", script, volumes=volumes, container={"volumeMounts": mounts}))
    wait_running(api, "vols")
    wait_until(lambda: "token=" in logs(api, "vols"), "the pod's output")
    lines = logs(api, "vols").splitlines()
    assert lines[:6] == ["hi", "s3cret", "vols", "scratch", "default", "1"]
    token = lines[6].removeprefix("token=")
    review = api.ok(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
    )
    assert review["status"]["authenticated"], review
    assert review["status"]["user"]["username"] == "system:serviceaccount:default:default"
    api.ok("DELETE", f"{PODS}/vols?gracePeriodSeconds=1")


def test_exec_probes_run_inside_the_container(api: Api) -> None:
    probe = {"exec": {"command": ["cat", "/ready-inside"]}, "periodSeconds": 1}
    pod = busybox("probed", "sleep 2; touch /ready-inside; exec sleep 1000", container={"readinessProbe": probe})
    api.ok("POST", PODS, pod)
    wait_until(lambda: (status_of(api, "probed").get("containerStatuses") or [{}])[0].get("ready"), "probed ready")
    assert not os.path.exists("/ready-inside")  # the file is in the container's root, not the node's
    api.ok("DELETE", f"{PODS}/probed?gracePeriodSeconds=1")


def test_an_unknown_image_backs_off_and_the_node_serves_on(api: Api) -> None:
    pod = busybox("ghost", "true", container={"image": "registry.example/nothing:1"})
    api.ok("POST", PODS, pod)
    seen: set[str] = set()

    def waiting_reasons() -> bool:
        seen.add(str(container_state(api, "ghost").get("waiting", {}).get("reason")))
        return {"ErrImagePull", "ImagePullBackOff"} <= seen

    wait_until(waiting_reasons, "ErrImagePull, then ImagePullBackOff", timeout=30)
    message = container_state(api, "ghost")["waiting"].get("message", "")
    assert "registry.example/nothing:1" in message
    api.ok("POST", PODS, busybox("fine", "exec sleep 1000"))
    wait_running(api, "fine")
    for name in ("ghost", "fine"):
        api.ok("DELETE", f"{PODS}/{name}?gracePeriodSeconds=1")


def test_an_imported_image_runs_with_its_entrypoint_and_env(cluster: LocalCluster, api: Api, tmp_path: Any) -> None:
    with open("/bin/busybox", "rb") as f:
        busybox_binary = f.read()
    script = b'echo "$GREETING $1 from $(pwd)"\n'
    layers = [
        layer([("bin", None, ""), ("bin/busybox", busybox_binary, ""), ("bin/sh", None, "busybox")]),
        layer([("app", None, ""), ("app/hello.sh", script, "")]),
    ]
    config = {"Env": ["PATH=/bin", "GREETING=hello"], "Entrypoint": ["/bin/sh", "/app/hello.sh"], "Cmd": ["image"]}
    archive = layout(tmp_path, layers, "example.com/hello:1", config)
    data_dir = cluster.agent("r1").data_dir
    imported = subprocess.run(
        [sys.executable, "-m", "node_agent", "images", "import", str(archive), "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "imported example.com/hello:1"
    hello = {"name": "main", "image": "example.com/hello:1", "args": ["raftkube"], "workingDir": "/app"}
    api.ok(
        "POST",
        PODS,
        {"metadata": {"name": "hello"}, "spec": {"nodeName": "r1", "restartPolicy": "Never", "containers": [hello]}},
    )
    wait_until(lambda: "terminated" in container_state(api, "hello"), "hello ended", timeout=30)
    assert container_state(api, "hello")["terminated"]["reason"] == "Completed"
    assert logs(api, "hello") == "hello raftkube from /app\n"  # the image's entrypoint and env; the pod's args


def test_a_restarted_agent_adopts_its_containers_and_learns_how_they_end(cluster: LocalCluster, api: Api) -> None:
    script = "while [ ! -e /go ]; do sleep 0.1; done; exit 7"
    api.ok("POST", PODS, busybox("kept", script, restartPolicy="Never"))
    wait_running(api, "kept")
    before = status_of(api, "kept")["containerStatuses"][0]["containerID"]
    rootfs = os.path.join(container_dir(cluster, api, "kept"), "rootfs")
    cluster.kill("r1")  # kill -9: the container lives on
    cluster.start_agents("r1")
    cluster.wait_agents(30)
    # The container ends while the new agent watches a process it did not start: the shim kept its exit code.
    open(os.path.join(rootfs, "go"), "w").close()
    wait_until(lambda: "terminated" in container_state(api, "kept"), "kept ended", timeout=30)
    ended = container_state(api, "kept")["terminated"]
    assert (ended["exitCode"], ended["reason"], ended["containerID"]) == (7, "Error", before)
    assert status_of(api, "kept")["containerStatuses"][0]["restartCount"] == 0  # adopted, not started again
