"""Node agents with the process runtime on a real 3-master cluster: pods
run, probe, restart, back off, stop within their grace period and log, as
kubectl shows them; agents survive their master's death and their own
restart without losing or doubling a pod."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.local_cluster import LocalCluster
from tests.support.kubectl import kubectl_path
from tests.support.rest import Api
from tests.support.waiting import holds_for, wait_until

HTTP_SERVER = (
    "import http.server, os, sys\n"
    "print('serving on', os.environ['POD_IP'], flush=True)\n"
    "http.server.HTTPServer((os.environ['POD_IP'], 8080), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory = str(tmp_path_factory.mktemp("agents"))
    with LocalCluster.running(directory, 3, agents=2, agent_args=["--heartbeat-interval", "1"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Api:
    return Api(cluster.api_endpoints[1], cluster.admin_credentials)


def kubectl(cluster: LocalCluster, *args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [kubectl_path(), "--kubeconfig", cluster.kubeconfig_path, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def pod(name: str, node: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeName": node, "containers": list(containers), **spec}}


def container(name: str, *command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": list(command), **extra}


def status_of(api: Api, name: str) -> dict[str, Any]:
    return dict(api.ok("GET", f"/api/v1/namespaces/default/pods/{name}").get("status") or {})


def condition(status: dict[str, Any], kind: str) -> str:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == kind), "")


def test_a_server_becomes_ready_through_its_readiness_probe_and_logs(cluster: LocalCluster, api: Api) -> None:
    probe = {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1}
    server = container("web", sys.executable, "-c", HTTP_SERVER, readinessProbe=probe)
    # Two pods on one node listen on the same port: each has an address of its own.
    for name in ("web-a", "web-b"):
        api.ok("POST", "/api/v1/namespaces/default/pods", pod(name, "n1", server))
    for name in ("web-a", "web-b"):
        wait_until(lambda name=name: condition(status_of(api, name), "Ready") == "True", f"{name} ready", timeout=30)  # type: ignore[misc]
    a, b = status_of(api, "web-a"), status_of(api, "web-b")
    assert a["phase"] == "Running" and a["podIP"] != b["podIP"] and a["podIP"].startswith("127.")
    assert a["containerStatuses"][0]["ready"] and a["containerStatuses"][0]["restartCount"] == 0
    wide = kubectl(cluster, "get", "pod", "web-a", "-o", "wide")
    assert "Running" in wide and "n1" in wide and a["podIP"] in wide
    logs = kubectl(cluster, "logs", "web-a")
    assert f"serving on {a['podIP']}" in logs and '"GET / HTTP/1.1" 200' in logs


def test_logs_follow_streams_as_the_container_writes(cluster: LocalCluster, api: Api) -> None:
    ticker = container("t", "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("ticker", "n2", ticker))
    wait_until(lambda: status_of(api, "ticker").get("phase") == "Running", "ticker running", timeout=30)
    follow = subprocess.Popen(
        [kubectl_path(), "--kubeconfig", cluster.kubeconfig_path, "logs", "-f", "ticker"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        lines = [follow.stdout.readline().strip() for _ in range(8)]
    finally:
        follow.kill()
        follow.wait(10)
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 8))  # in order, none lost, as they were written
    tail = kubectl(cluster, "logs", "ticker", "--tail", "2").splitlines()
    assert len(tail) == 2
    with urllib.request.urlopen(f"http://{cluster.agent('n2').metrics_address}/metrics", timeout=10) as resp:
        scrape = resp.read().decode()
    running = next(line for line in scrape.splitlines() if line.startswith("kubelet_running_pods "))
    assert float(running.split()[1]) >= 1
    assert (
        "kubelet_pod_start_duration_seconds_count" in scrape and "raftkube_agent_heartbeat_duration_seconds" in scrape
    )


def test_logs_since_and_timestamps(cluster: LocalCluster, api: Api) -> None:
    clock = container("c", "sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done")
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("clock", "n1", clock))
    wait_until(lambda: len(kubectl(cluster, "logs", "clock").splitlines()) >= 30, "6 s of output", timeout=40)
    everything = kubectl(cluster, "logs", "clock").splitlines()
    recent = kubectl(cluster, "logs", "clock", "--since=2s").splitlines()
    # The last two seconds (about 10 lines), and at most a second more (the agent notes growth each second).
    assert 3 <= len(recent) <= 20 < len(everything), (len(recent), len(everything))
    numbers = [int(line.split()[1]) for line in recent]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[0] > 5
    stamped = kubectl(cluster, "logs", "clock", "--timestamps", "--tail", "5").splitlines()
    times = [time.mktime(time.strptime(line.split()[0].split(".")[0], "%Y-%m-%dT%H:%M:%S")) for line in stamped]
    assert all(line.split(maxsplit=1)[1].startswith("line ") for line in stamped)
    assert times == sorted(times) and abs(times[-1] - time.mktime(time.gmtime())) < 10
    api.ok("DELETE", "/api/v1/namespaces/default/pods/clock?gracePeriodSeconds=0")


def test_a_failing_liveness_probe_restarts_the_container(api: Api, tmp_path: Path) -> None:
    marker = str(tmp_path / "liveness-dead")  # the process runtime's containers share the host's files
    alive = {"exec": {"command": ["test", "!", "-e", marker]}, "periodSeconds": 1, "failureThreshold": 2}
    script = f"rm -f {marker}; sleep 1; touch {marker}; sleep 1000"
    body = pod("liveness", "n1", container("c", "sh", "-c", script, livenessProbe=alive))
    api.ok("POST", "/api/v1/namespaces/default/pods", body)

    def restarted() -> bool:
        statuses = status_of(api, "liveness").get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) >= 1

    wait_until(restarted, "a restart by the liveness probe", timeout=30)
    last = status_of(api, "liveness")["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 143  # SIGTERM, as Kubernetes reports it


def test_a_crashing_container_backs_off(cluster: LocalCluster, api: Api) -> None:
    api.ok(
        "POST", "/api/v1/namespaces/default/pods", pod("crasher", "n2", container("c", "sh", "-c", "echo bye; exit 3"))
    )

    def backing_off() -> bool:
        state = (status_of(api, "crasher").get("containerStatuses") or [{}])[0].get("state", {})
        return state.get("waiting", {}).get("reason") == "CrashLoopBackOff"

    wait_until(backing_off, "CrashLoopBackOff", timeout=30)
    statuses = status_of(api, "crasher")["containerStatuses"][0]
    assert statuses["lastState"]["terminated"]["exitCode"] == 3 and statuses["restartCount"] >= 1
    assert "back-off 10s restarting failed container" in statuses["state"]["waiting"]["message"]
    assert "CrashLoopBackOff" in kubectl(cluster, "get", "pod", "crasher")
    assert "bye" in kubectl(cluster, "logs", "crasher", "--previous")


@pytest.mark.parametrize("policy, code, phase", [("Never", 3, "Failed"), ("OnFailure", 0, "Succeeded")])
def test_a_container_that_is_done_stays_done(api: Api, policy: str, code: int, phase: str) -> None:
    name = f"once-{policy.lower()}"
    init = [container("setup", "true")]
    api.ok(
        "POST",
        "/api/v1/namespaces/default/pods",
        pod(name, "n1", container("c", "sh", "-c", f"exit {code}"), restartPolicy=policy, initContainers=init),
    )
    wait_until(lambda: status_of(api, name).get("phase") == phase, f"{name} {phase}", timeout=30)

    def ended_once() -> bool:
        [c] = status_of(api, name)["containerStatuses"]
        return c["state"]["terminated"]["exitCode"] == code and c["restartCount"] == 0

    # The worker resyncs every 5 s: a done container must not run again.
    holds_for(ended_once, f"{name} ended once", seconds=6)


def test_a_failed_init_container_stops_the_pod(api: Api) -> None:
    spec = pod(
        "init-fails",
        "n1",
        container("c", "sleep", "100"),
        restartPolicy="Never",
        initContainers=[container("setup", "false")],
    )
    api.ok("POST", "/api/v1/namespaces/default/pods", spec)
    wait_until(lambda: status_of(api, "init-fails").get("phase") == "Failed", "init-fails Failed", timeout=30)

    def main_never_ran() -> bool:
        [c] = status_of(api, "init-fails")["containerStatuses"]
        return "waiting" in c["state"] and not c.get("lastState")

    holds_for(main_never_ran, "the main container not running", seconds=6)


def test_deleting_a_pod_stops_it_within_its_grace_period(api: Api) -> None:
    # It ignores SIGTERM: only the end of the 2 s grace period (SIGKILL) stops it.
    stubborn = container("c", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("stubborn", "n1", stubborn, terminationGracePeriodSeconds=2))
    wait_until(lambda: status_of(api, "stubborn").get("phase") == "Running", "stubborn running", timeout=30)
    started = time.monotonic()
    api.ok("DELETE", "/api/v1/namespaces/default/pods/stubborn")
    wait_until(
        lambda: api.call("GET", "/api/v1/namespaces/default/pods/stubborn")[0] == 404, "the pod gone", timeout=15
    )
    took = time.monotonic() - started
    assert 1.5 < took < 8, took


@pytest.mark.parametrize(
    "spec, reason",
    [
        pytest.param(container("c", "no-such-program-here"), "RunContainerError", id="command-not-found"),
        pytest.param(
            container("c", "sleep", "100", env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent",
                                                                                            "key": "k"}}}]),
            "CreateContainerConfigError",
            id="missing-configmap",
        ),
    ],
)  # fmt: skip
def test_bad_pods_end_in_the_kubernetes_reasons_and_the_node_serves_on(
    api: Api, spec: dict[str, Any], reason: str, request: pytest.FixtureRequest
) -> None:
    name = f"bad-{request.node.callspec.id}"
    api.ok("POST", "/api/v1/namespaces/default/pods", pod(name, "n2", spec))

    def waiting_reason() -> str:
        state = (status_of(api, name).get("containerStatuses") or [{}])[0].get("state", {})
        return str(state.get("waiting", {}).get("reason", ""))

    wait_until(lambda: waiting_reason() == reason, reason, timeout=30, detail=lambda: json.dumps(status_of(api, name)))
    good = f"good-after-{request.node.callspec.id}"
    api.ok("POST", "/api/v1/namespaces/default/pods", pod(good, "n2", container("c", "sleep", "100")))
    wait_until(lambda: status_of(api, good).get("phase") == "Running", "the node to go on serving", timeout=30)


def failed_probes(cluster: LocalCluster, node: str, kind: str) -> float:
    with urllib.request.urlopen(f"http://{cluster.agent(node).metrics_address}/metrics", timeout=10) as resp:
        scrape = resp.read().decode()
    prefix = f'prober_probe_total{{probe_type="{kind}",result="failed"}} '
    return sum(float(line[len(prefix) :]) for line in scrape.splitlines() if line.startswith(prefix))


def test_an_invalid_probe_is_refused_and_an_unanswerable_one_keeps_the_pod_unready(
    cluster: LocalCluster, api: Api
) -> None:
    no_handler = container("c", "sleep", "100", livenessProbe={"periodSeconds": 1})
    code, body = api.call("POST", "/api/v1/namespaces/default/pods", pod("no-handler", "n2", no_handler))
    assert code == 422 and "livenessProbe: Required value: must specify a handler type" in body["message"], body
    # Valid, but the container declares no port named "metrics": the probe fails, the pod stays unready.
    unanswerable = container("c", "sleep", "100", readinessProbe={"httpGet": {"port": "metrics"}, "periodSeconds": 1})
    before = failed_probes(cluster, "n2", "Readiness")
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("unready", "n2", unanswerable))
    wait_until(lambda: failed_probes(cluster, "n2", "Readiness") >= before + 2, "two failed readiness probes")
    status = status_of(api, "unready")
    assert status["phase"] == "Running" and condition(status, "Ready") == "False"
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("good-after-probe", "n2", container("c", "sleep", "100")))
    wait_until(lambda: status_of(api, "good-after-probe").get("phase") == "Running", "the node to serve on")


def test_agents_outlive_their_master_and_their_own_restart(cluster: LocalCluster, api: Api) -> None:
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("steady", "n1", container("c", "sleep", "7777")))
    wait_until(lambda: status_of(api, "steady").get("phase") == "Running", "steady running", timeout=30)
    first_id = status_of(api, "steady")["containerStatuses"][0]["containerID"]

    lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
    survivor = Api(cluster.api_endpoints[0], cluster.admin_credentials)
    renewals: list[str] = []

    def renewed() -> bool:
        code, lease = survivor.call("GET", lease_path)
        if code == 200 and (not renewals or lease["spec"]["renewTime"] != renewals[-1]):
            renewals.append(lease["spec"]["renewTime"])
        return len(renewals) >= 3

    # Kill the master every agent is talking to first (the agents start on the first endpoint).
    victim = cluster.masters[0].id
    survivor = Api(cluster.api_endpoints[1], cluster.admin_credentials)
    cluster.kill(victim)
    wait_until(renewed, "lease renewals through another master", timeout=20)
    cluster.start(victim)
    cluster.wait_ready(60)

    cluster.kill("n1")  # kill -9: its containers live on
    cluster.start_agents("n1")
    cluster.wait_agents(30)
    wait_until(lambda: len(renewals) >= 5 or not renewed(), "renewals after the agent restart", timeout=20)
    assert status_of(api, "steady")["containerStatuses"][0]["containerID"] == first_id  # adopted, not restarted
    steady = subprocess.run(["pgrep", "-f", "^sleep 7777$"], capture_output=True, text=True).stdout.split()
    assert len(steady) == 1, steady  # one process, not two


def test_hollow_nodes_register_heartbeat_and_run_pods(cluster: LocalCluster, api: Api, tmp_path: Any) -> None:
    cluster.security.init_hollow("hollow", 3)
    command = [
        sys.executable, "-m", "node_agent", "--name", "hollow", "--hollow", "3",
        "--server", ",".join(cluster.endpoints), "--data-dir", str(tmp_path),
        "--cluster-dir", cluster.directory, "--heartbeat-interval", "1",
    ]  # fmt: skip
    fleet = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def hollow_nodes() -> list[str]:
            nodes = api.ok("GET", "/api/v1/nodes?labelSelector=raftkube.io%2Fhollow%3Dtrue")["items"]
            return sorted(n["metadata"]["name"] for n in nodes)

        wait_until(lambda: hollow_nodes() == ["hollow-0", "hollow-1", "hollow-2"], "3 hollow nodes", timeout=30)
        lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hollow-2"
        first = api.ok("GET", lease)["spec"]["renewTime"]
        wait_until(lambda: api.ok("GET", lease)["spec"]["renewTime"] != first, "a renewal", timeout=10)
        probe = {"exec": {"command": ["false"]}, "periodSeconds": 1}  # not run: nothing is behind a hollow pod
        body = pod("on-hollow", "hollow-1", container("c", "anything", readinessProbe=probe))
        api.ok("POST", "/api/v1/namespaces/default/pods", body)
        ready = lambda: condition(status_of(api, "on-hollow"), "Ready") == "True"  # noqa: E731
        wait_until(ready, "the hollow pod ready", timeout=30)
        api.ok("DELETE", "/api/v1/namespaces/default/pods/on-hollow")
        gone = lambda: api.call("GET", "/api/v1/namespaces/default/pods/on-hollow")[0] == 404  # noqa: E731
        wait_until(gone, "the hollow pod deleted", timeout=30)
    finally:
        fleet.terminate()
        fleet.wait(30)
