"""Real kubectl (v1.33, unmodified) against a 3-master cluster, aimed at the
leader and at a follower: the commands a Kubernetes user types, with the
output they would get from Kubernetes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.local_cluster import LocalCluster
from tests.support.kubectl import kubectl_path

APP_V1 = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: frontend
        image: nginx:1.25
        ports:
        - containerPort: 80
        - containerPort: 443
      - name: sidecar
        image: busybox:1.36
        command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.running(str(tmp_path_factory.mktemp("e2e"))) as c:
        yield c


class Kubectl:
    def __init__(self, cluster: LocalCluster, context: str, namespace: str):
        self.binary = kubectl_path()
        self.base = [self.binary, "--kubeconfig", cluster.kubeconfig_path, "--context", context]
        self.namespace = namespace

    def run(self, *args: str, ns: bool = True, env: dict[str, str] | None = None, check: bool = True) -> str:
        cmd = [*self.base, *(["-n", self.namespace] if ns else []), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout + (result.stderr if not check else "")

    def json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.run(*args, "-o", "json"))


@pytest.fixture(params=["leader", "follower"])
def kubectl(request: pytest.FixtureRequest, cluster: LocalCluster) -> Kubectl:
    leader = cluster.wait_ready(30)
    target = leader if request.param == "leader" else next(m.id for m in cluster.masters if m.id != leader)
    test = request.node.originalname.removeprefix("test_").replace("_", "-")[:40].strip("-")
    k = Kubectl(cluster, target, f"{request.param}-{test}")
    k.run("create", "namespace", k.namespace, ns=False)
    return k


def test_discovery_and_componentstatuses(kubectl: Kubectl) -> None:
    assert "Server Version: v1.33" in kubectl.run("version", ns=False)
    versions = kubectl.run("api-versions", ns=False).split()
    assert {"v1", "apps/v1", "batch/v1", "coordination.k8s.io/v1", "rbac.authorization.k8s.io/v1"} <= set(versions)
    resources = kubectl.run("api-resources", ns=False)
    assert "deployments" in resources and "deploy" in resources and "rolebindings" in resources
    cs = kubectl.run("get", "componentstatuses", ns=False).splitlines()
    assert cs[0].split() == ["NAME", "STATUS", "MESSAGE", "ERROR"]
    names = {line.split()[0]: line.split()[1] for line in cs[1:]}
    assert {"store-m1", "store-m2", "store-m3", "scheduler", "controller-manager"} == set(names)
    assert all(names[f"store-m{i}"] == "Healthy" for i in (1, 2, 3))
    # Nothing holds those leases yet, and componentstatuses says so.
    assert names["scheduler"] == "Unhealthy" and names["controller-manager"] == "Unhealthy"


def test_create_get_and_change_a_deployment(kubectl: Kubectl) -> None:
    assert kubectl.run("create", "deployment", "httpd-app", "--image=httpd", "--replicas=2").strip() == (
        "deployment.apps/httpd-app created"
    )
    # What kubectl sent as protobuf was stored as what it would have sent as JSON, plus defaults.
    sent = json.loads(
        kubectl.run(
            "create", "deployment", "httpd-app", "--image=httpd", "--replicas=2", "--dry-run=client", "-o", "json"
        )
    )
    stored = kubectl.json("get", "deployment", "httpd-app")
    assert stored["spec"]["selector"] == sent["spec"]["selector"]
    assert stored["spec"]["template"]["metadata"]["labels"] == sent["spec"]["template"]["metadata"]["labels"]
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "httpd"
    assert stored["spec"]["replicas"] == 2 and stored["spec"]["strategy"]["type"] == "RollingUpdate"

    table = kubectl.run("get", "deployments").splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["httpd-app", "0/2", "0", "0"]
    wide = kubectl.run("get", "deployments", "-o", "wide").splitlines()
    assert wide[0].split()[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[5:] == ["httpd", "httpd", "app=httpd-app"]
    assert yaml.safe_load(kubectl.run("get", "deployment", "httpd-app", "-o", "yaml"))["kind"] == "Deployment"

    kubectl.run("label", "deployment", "httpd-app", "tier=web")
    kubectl.run("annotate", "deployment", "httpd-app", "owner=e2e")
    kubectl.run("scale", "deployment", "httpd-app", "--replicas=3")
    kubectl.run("patch", "deployment", "httpd-app", "-p", '{"spec":{"revisionHistoryLimit":5}}')
    kubectl.run(
        "patch", "deployment", "httpd-app", "--type=json", "-p", '[{"op":"add","path":"/spec/paused","value":true}]'
    )
    columns = kubectl.run(
        "get",
        "deployments",
        "-l",
        "tier=web",
        "-o",
        "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas,HISTORY:.spec.revisionHistoryLimit,PAUSED:.spec.paused,OWNER:.metadata.annotations.owner",
    ).splitlines()
    assert columns[1].split() == ["httpd-app", "3", "5", "true", "e2e"]
    assert "No resources found" in kubectl.run("get", "deployments", "-l", "tier=db", check=False)

    described = kubectl.run("describe", "deployment", "httpd-app")
    assert "Replicas:               3 desired" in described and "tier=web" in described

    kubectl.run(
        "edit",
        "deployment",
        "httpd-app",
        env={"KUBE_EDITOR": "sed -i s/image:\\ httpd/image:\\ httpd:2.4/"},
    )
    assert (
        kubectl.json("get", "deployment", "httpd-app")["spec"]["template"]["spec"]["containers"][0]["image"]
        == "httpd:2.4"
    )

    assert kubectl.run("delete", "deployment", "httpd-app").strip() == 'deployment.apps "httpd-app" deleted'
    assert "NotFound" in kubectl.run("get", "deployment", "httpd-app", check=False)


def test_apply_twice_merges_containers_by_name(kubectl: Kubectl, tmp_path: Path) -> None:
    first = tmp_path / "app.yaml"
    first.write_text(APP_V1)
    out = kubectl.run("apply", "-f", str(first))
    assert "configmap/web-config created" in out and "deployment.apps/web created" in out
    second = tmp_path / "app2.yaml"
    second.write_text(APP_V1.replace("nginx:1.25", "nginx:1.27").replace("        - containerPort: 443\n", ""))
    out = kubectl.run("apply", "-f", str(second))
    assert "configmap/web-config unchanged" in out and "deployment.apps/web configured" in out
    containers = kubectl.json("get", "deployment", "web")["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("frontend", "nginx:1.27"), ("sidecar", "busybox:1.36")]
    assert containers[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert containers[1]["command"] == ["sleep", "3600"]


def test_server_side_apply_creates_updates_and_reports_conflicts(kubectl: Kubectl, tmp_path: Path) -> None:
    first = tmp_path / "app.yaml"
    first.write_text(APP_V1)
    out = kubectl.run("apply", "--server-side", "-f", str(first))
    assert "configmap/web-config serverside-applied" in out and "deployment.apps/web serverside-applied" in out
    second = tmp_path / "app2.yaml"
    second.write_text(APP_V1.replace("nginx:1.25", "nginx:1.27").replace("        - containerPort: 443\n", ""))
    kubectl.run("apply", "--server-side", "-f", str(second))
    applied = kubectl.json("get", "deployment", "web", "--show-managed-fields")
    containers = applied["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("frontend", "nginx:1.27"), ("sidecar", "busybox:1.36")]
    assert containers[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    [entry] = applied["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("kubectl", "Apply", "FieldsV1")

    kubectl.run("scale", "deployment", "web", "--replicas=5")
    conflict = kubectl.run("apply", "--server-side", "-f", str(second), check=False)
    assert "Apply failed with 1 conflict" in conflict and ".spec.replicas" in conflict, conflict
    assert kubectl.json("get", "deployment", "web")["spec"]["replicas"] == 5
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(second))
    assert kubectl.json("get", "deployment", "web")["spec"]["replicas"] == 2


def test_get_watch_prints_events_as_they_happen(kubectl: Kubectl) -> None:
    kubectl.run("create", "configmap", "before", "--from-literal=a=b")
    watch = subprocess.Popen(
        [*kubectl.base, "-n", kubectl.namespace, "get", "configmaps", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert watch.stdout is not None

    def read_until(name: str, count: int) -> None:
        deadline = time.monotonic() + 15
        while sum(1 for line in lines if line.startswith(name)) < count:
            assert time.monotonic() < deadline, f"watch printed: {lines}"
            lines.append(watch.stdout.readline().rstrip())  # type: ignore[union-attr]

    try:
        read_until("before", 1)  # the watch has listed: what follows are events
        kubectl.run("create", "configmap", "watched", "--from-literal=a=b")
        kubectl.run("label", "configmap", "watched", "x=y")
        kubectl.run("delete", "configmap", "watched")
        read_until("watched", 3)
    finally:
        watch.kill()
        watch.wait(5)
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert [line.split()[:2] for line in lines if line.startswith("watched")] == [["watched", "1"]] * 3


def test_expose_gives_a_service_its_cluster_ip_and_node_port(kubectl: Kubectl) -> None:
    kubectl.run("create", "deployment", "api", "--image=httpd")
    assert kubectl.run("expose", "deployment", "api", "--port=80", "--type=NodePort").strip() == ("service/api exposed")
    svc = kubectl.json("get", "service", "api")
    ip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    assert ip.startswith("10.") and 30000 <= node_port <= 32767
    header, row = kubectl.run("get", "service", "api").splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row.split()[:5] == ["api", "NodePort", ip, "<none>", f"80:{node_port}/TCP"]
