# The client's models type every field Optional; the server fills them in.
# mypy: disable-error-code="union-attr"
"""The official `kubernetes` Python client (from PyPI, unmodified) against a
3-master cluster: list, create, patch, and the list-then-watch loop users
write with it, which must see every change exactly once across a kill -9
of the master it watches through."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from control_plane.local_cluster import LocalCluster
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.running(str(tmp_path_factory.mktemp("pyclient"))) as c:
        yield c


def core(host: str, cluster: LocalCluster) -> k8s.CoreV1Api:
    """The official client on one master, as the admin (TLS, client certificate)."""
    config = k8s.Configuration(host=host)
    config.retries = 0  # a dead master is for the caller to handle, not to retry
    config.ssl_ca_cert = cluster.security.ca_paths()[0]
    config.cert_file, config.key_file = cluster.security.admin_paths()
    return k8s.CoreV1Api(k8s.ApiClient(config))


def test_list_create_and_patch(cluster: LocalCluster) -> None:
    for host in cluster.api_endpoints:
        api = core(host, cluster)
        names = {ns.metadata.name for ns in api.list_namespace().items}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    api = core(cluster.api_endpoints[1], cluster)
    api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="pyclient")))
    created = api.create_namespaced_config_map(
        "pyclient", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings", labels={"app": "py"}), data={"a": "1"})
    )
    assert created.metadata.uid and created.metadata.resource_version
    patched = api.patch_namespaced_config_map("settings", "pyclient", {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    listed = api.list_namespaced_config_map("pyclient", label_selector="app=py")
    assert [c.metadata.name for c in listed.items] == ["settings"]
    with pytest.raises(ApiException) as conflict:
        api.create_namespaced_config_map("pyclient", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings")))
    assert conflict.value.status == 409
    deployment = k8s.AppsV1Api(api.api_client).create_namespaced_deployment(
        "pyclient",
        k8s.V1Deployment(
            metadata=k8s.V1ObjectMeta(name="web"),
            spec=k8s.V1DeploymentSpec(
                replicas=2,
                selector=k8s.V1LabelSelector(match_labels={"app": "web"}),
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels={"app": "web"}),
                    spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="nginx")]),
                ),
            ),
        ),
    )
    assert deployment.spec.strategy.type == "RollingUpdate"  # defaulted, as Kubernetes does


class ListWatchLoop:
    """What a user writes with the client: list, then watch from the
    list's resourceVersion; when the watch breaks, watch again from the last
    resourceVersion seen, through the next master; relist on 410."""

    def __init__(self, hosts: list[str], namespace: str, cluster: LocalCluster):
        self.hosts = hosts
        self.cluster = cluster
        self.namespace = namespace
        self.current = 0
        self.events: list[tuple[str, str]] = []
        self.switches = 0
        self.relists = 0
        self.errors: list[str] = []
        self.resource_version = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __repr__(self) -> str:
        return (
            f"ListWatchLoop(host={self.host}, resource_version={self.resource_version}, "
            f"switches={self.switches}, relists={self.relists}, "
            f"last events={self.events[-3:]}, errors={self.errors[-3:]})"
        )

    @property
    def host(self) -> str:
        return self.hosts[self.current]

    def start(self) -> ListWatchLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            api = core(self.host, self.cluster)
            try:
                if not self.resource_version:
                    listed = api.list_namespaced_config_map(self.namespace, _request_timeout=5)
                    self.relists += 1
                    self.events += [("LISTED", str(c.metadata.name)) for c in listed.items]
                    self.resource_version = str(listed.metadata.resource_version)
                w = k8s_watch.Watch()
                for event in w.stream(
                    api.list_namespaced_config_map,
                    self.namespace,
                    resource_version=self.resource_version,
                    timeout_seconds=2,  # come back regularly to check for stop
                    _request_timeout=(2, 10),  # connect, then read: a silent master is a dead one
                ):
                    obj = event["raw_object"]
                    self.events.append((event["type"], obj["metadata"]["name"]))
                    self.resource_version = obj["metadata"]["resourceVersion"]
            except ApiException as e:
                self.errors.append(f"{e.status} {e.reason}")
                if e.status == 410:
                    self.resource_version = ""  # relist
                else:
                    self._switch()
            except (urllib3.exceptions.HTTPError, OSError) as e:
                self.errors.append(type(e).__name__)
                self._switch()

    def _switch(self) -> None:
        self.current = (self.current + 1) % len(self.hosts)
        self.switches += 1
        time.sleep(0.05)


def test_list_then_watch_sees_every_event_once_across_a_kill_of_its_master(cluster: LocalCluster) -> None:
    namespace = "watched"
    writer_api = core(cluster.api_endpoints[2], cluster)
    writer_api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    for i in range(3):
        writer_api.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=f"pre-{i}")))
    loop = ListWatchLoop(cluster.api_endpoints, namespace, cluster).start()
    acked: list[str] = []
    stop_writing = threading.Event()

    def write() -> None:
        # Through every master in turn, retrying a create whose outcome is
        # unknown under the same name: AlreadyExists then means it happened.
        i = 0
        while not stop_writing.is_set():
            name = f"cm-{i}"
            for attempt in range(60):
                api = core(cluster.api_endpoints[(i + attempt) % 3], cluster)
                try:
                    api.create_namespaced_config_map(
                        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name)), _request_timeout=5
                    )
                    break
                except ApiException as e:
                    if e.status == 409:
                        break
                    time.sleep(0.05)
                except (urllib3.exceptions.HTTPError, OSError):
                    time.sleep(0.05)
            else:
                raise AssertionError(f"could not create {name}")
            acked.append(name)
            i += 1

    # Writes start once the loop has listed: a create racing the list would
    # show up as LISTED, not as an event.
    wait_until(lambda: loop.resource_version != "", "the first list", timeout=45, detail=lambda: repr(loop))
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    watched = next(m for m in cluster.masters if f"https://{m.api_address}" == loop.host)
    try:
        wait_until(lambda: sum(1 for t, _ in loop.events if t == "ADDED") >= 20, "events before the kill", timeout=45)
        cluster.kill(watched.id)
        before = len(acked)
        wait_until(lambda: len(acked) >= before + 30, "writes after the kill", timeout=45)
        stop_writing.set()
        writer.join(30)
        wait_until(
            lambda: set(acked) <= {n for t, n in loop.events if t == "ADDED"},
            "the watch to catch up",
            timeout=45,
            detail=lambda: f"missing {sorted(set(acked) - {n for t, n in loop.events if t == 'ADDED'})[:5]}, {loop}",
        )
    finally:
        stop_writing.set()
        loop.stop()
        cluster.start(watched.id)
        cluster.wait_ready(30)
    added = [n for t, n in loop.events if t == "ADDED"]
    listed = [n for t, n in loop.events if t == "LISTED" and n != "kube-root-ca.crt"]  # every namespace has it
    print(
        f"{len(acked)} creates acknowledged; the loop saw {len(added)} ADDED events, switched masters "
        f"{loop.switches} times, listed {loop.relists} time(s)"
    )
    assert listed == ["pre-0", "pre-1", "pre-2"] and loop.relists == 1
    assert len(added) == len(set(added)), "an event was seen twice"
    assert set(added) == set(acked), f"missed: {sorted(set(acked) - set(added))[:5]}"
    assert loop.switches >= 1
