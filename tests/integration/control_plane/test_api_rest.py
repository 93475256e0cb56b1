"""The REST API of a real 3-master cluster, over TLS as the admin: Kubernetes
semantics (resourceVersion, generation, selectors, paging, watch, graceful
deletion, finalizers) and bad input answered as Kubernetes answers it,
storing nothing."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from control_plane.local_cluster import LocalCluster
from tests.support.rest import Api
from tests.support.waiting import wait_until

Body = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.running(str(tmp_path_factory.mktemp("rest"))) as c:
        yield c


@pytest.fixture
def api(cluster: LocalCluster) -> Api:
    follower = next(m for m in cluster.masters if m.id != cluster.leader())
    return Api(f"https://{follower.api_address}", cluster.admin_credentials)


@pytest.fixture
def ns(api: Api, request: pytest.FixtureRequest) -> str:
    # Parametrized cases share an originalname, so a short hash of the full
    # node id keeps their namespaces apart.
    base = request.node.originalname.removeprefix("test_").replace("_", "-")[:40].strip("-")
    name = f"{base}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"
    api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    return name


def pod(name: str, **spec: Any) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


def test_resource_versions_conflicts_and_generation(api: Api, ns: str) -> None:
    created = api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    assert created["spec"]["restartPolicy"] == "Always"  # defaulted
    code, body = api.call("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    assert (code, body["reason"]) == (409, "AlreadyExists")

    stale = dict(created)
    relabeled = api.ok(
        "PUT", f"/api/v1/namespaces/{ns}/pods/p", {**created, "metadata": {**created["metadata"], "labels": {"a": "b"}}}
    )
    assert relabeled["metadata"]["generation"] == 1  # metadata only: no new generation
    assert int(relabeled["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    code, body = api.call("PUT", f"/api/v1/namespaces/{ns}/pods/p", stale)
    assert (code, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    respec = api.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/p",
        {"spec": {"activeDeadlineSeconds": 30}},
        content_type="application/merge-patch+json",
    )
    assert respec["metadata"]["generation"] == 2


def test_selectors_paging_and_resource_version_0(api: Api, ns: str) -> None:
    for i in range(7):
        body = pod(f"p{i}")
        body["metadata"]["labels"] = {"app": "x", "parity": "even" if i % 2 == 0 else "odd"}
        api.ok("POST", f"/api/v1/namespaces/{ns}/pods", body)
    even = api.ok("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=parity%3Deven")
    assert [p["metadata"]["name"] for p in even["items"]] == ["p0", "p2", "p4", "p6"]
    not_in = api.ok("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=parity%20notin%20(even)")
    assert len(not_in["items"]) == 3
    by_name = api.ok("GET", f"/api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%3Dp3")
    assert [p["metadata"]["name"] for p in by_name["items"]] == ["p3"]
    page = api.ok("GET", f"/api/v1/namespaces/{ns}/pods?limit=3")
    names = [p["metadata"]["name"] for p in page["items"]]
    revision = page["metadata"]["resourceVersion"]
    api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("p99"))  # after the first page
    while page["metadata"].get("continue"):
        page = api.ok("GET", f"/api/v1/namespaces/{ns}/pods?limit=3&continue={page['metadata']['continue']}")
        assert page["metadata"]["resourceVersion"] == revision
        names += [p["metadata"]["name"] for p in page["items"]]
    assert names == [f"p{i}" for i in range(7)]  # the pages reflect one revision
    stale_ok = api.ok("GET", f"/api/v1/namespaces/{ns}/pods?resourceVersion=0")
    assert len(stale_ok["items"]) >= 7


def test_watch_from_a_resource_version_with_bookmarks(api: Api, ns: str) -> None:
    start = api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps")["metadata"]["resourceVersion"]
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    api.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/c",
        {"data": {"a": "2"}},
        content_type="application/merge-patch+json",
    )
    api.ok("DELETE", f"/api/v1/namespaces/{ns}/configmaps/c")
    events = api.watch(f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={start}", 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e["object"]["data"]["a"] for e in events] == ["1", "2", "2"]
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(start)
    bookmark = api.watch(
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&allowWatchBookmarks=true&resourceVersion={revisions[-1]}", 1
    )
    assert (
        bookmark[0]["type"] == "BOOKMARK" and int(bookmark[0]["object"]["metadata"]["resourceVersion"]) >= revisions[-1]
    )
    # timeoutSeconds ends the watch: the server closes the stream, as
    # kube-apiserver does, and the client lists or watches again.
    started = time.monotonic()
    with api.open(f"/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=1", timeout=15) as resp:
        events = [json.loads(line) for line in resp.read().splitlines()]
    # From no resourceVersion: what exists, as ADDED events; no change came, then the end.
    assert {e["type"] for e in events} == {"ADDED"}
    assert time.monotonic() - started < 10


def test_graceful_pod_deletion_and_finalizers(api: Api, ns: str) -> None:
    api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("scheduled", nodeName="node-1"))
    terminating = api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/scheduled")
    assert terminating["metadata"]["deletionTimestamp"] and terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    assert api.call("GET", f"/api/v1/namespaces/{ns}/pods/scheduled")[0] == 200  # its node must confirm first
    api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/scheduled", {"gracePeriodSeconds": 0})
    assert api.call("GET", f"/api/v1/namespaces/{ns}/pods/scheduled")[0] == 404

    api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("unscheduled"))
    assert api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/unscheduled")["status"] == "Success"

    cm = {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    created = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", cm)
    code, body = api.call(
        "DELETE", f"/api/v1/namespaces/{ns}/configmaps/held", {"preconditions": {"uid": "not-its-uid"}}
    )
    assert (code, body["reason"]) == (409, "Conflict")
    held = api.ok(
        "DELETE", f"/api/v1/namespaces/{ns}/configmaps/held", {"preconditions": {"uid": created["metadata"]["uid"]}}
    )
    assert held["metadata"]["deletionTimestamp"]
    api.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/held",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert api.call("GET", f"/api/v1/namespaces/{ns}/configmaps/held")[0] == 404


def test_delete_collection_and_propagation_policies(api: Api, ns: str) -> None:
    configmaps = f"/api/v1/namespaces/{ns}/configmaps"
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        api.ok("POST", configmaps, {"metadata": {"name": name, "labels": {"tier": tier}}})
    deleted = api.ok("DELETE", f"{configmaps}?labelSelector=tier%3Dweb")
    assert deleted["kind"] == "ConfigMapList"
    assert sorted(item["metadata"]["name"] for item in deleted["items"]) == ["a", "b"]
    left = api.ok("GET", configmaps)["items"]
    assert [item["metadata"]["name"] for item in left if item["metadata"]["name"] != "kube-root-ca.crt"] == ["c"]

    # Orphan and Foreground leave the object to the garbage collector,
    # marked and held by the finalizer that says how; Background deletes it.
    for policy, finalizer in (("Orphan", "orphan"), ("Foreground", "foregroundDeletion")):
        api.ok("POST", configmaps, {"metadata": {"name": policy.lower()}})
        held = api.ok("DELETE", f"{configmaps}/{policy.lower()}", {"propagationPolicy": policy})
        assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == [finalizer]
    api.ok("DELETE", f"{configmaps}/c?propagationPolicy=Background")
    assert api.call("GET", f"{configmaps}/c")[0] == 404

    api.ok("POST", configmaps, {"metadata": {"name": "kept"}})
    code, body = api.call("DELETE", f"{configmaps}/kept", {"propagationPolicy": "Bogus"})
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "propagationPolicy"
    code, body = api.call("DELETE", f"{configmaps}/kept", {"preconditions": {"resourceVersion": "1"}})
    assert (code, body["reason"]) == (409, "Conflict") and "Precondition failed" in body["message"]
    assert api.call("GET", f"{configmaps}/kept")[0] == 200


def test_dry_run_and_generate_name(api: Api, ns: str) -> None:
    dry = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps?dryRun=All", {"metadata": {"name": "dry"}})
    assert dry["metadata"]["name"] == "dry"
    assert api.call("GET", f"/api/v1/namespaces/{ns}/configmaps/dry")[0] == 404
    generated = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"generateName": "gen-"}})
    assert generated["metadata"]["name"].startswith("gen-") and len(generated["metadata"]["name"]) == 9


def big_configmap() -> bytes:
    return json.dumps({"metadata": {"name": "big"}, "data": {"x": "a" * (3 * 1024 * 1024)}}).encode()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code", "reason", "needle"),
    [
        pytest.param("POST", "pods", {"body": pod("Not_Valid")}, 422, "Invalid", "metadata.name", id="invalid-name"),
        pytest.param(
            "POST",
            "pods",
            {"body": {"metadata": {"name": "p"}, "spec": {"containers": []}}},
            422,
            "Invalid",
            "spec.containers: Required value",
            id="missing-required-field",
        ),
        pytest.param(
            "POST",
            "pods",
            {"body": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}},
            422,
            "Invalid",
            "spec.containers[0].image: Required value",
            id="missing-image",
        ),
        pytest.param(
            "POST",
            "frobnicators",
            {"body": {"metadata": {"name": "f"}}},
            404,
            "NotFound",
            "could not find",
            id="unknown-kind",
        ),
        pytest.param(
            "POST",
            "pods",
            {"body": {**pod("p"), "apiVersion": "v2"}},
            400,
            "BadRequest",
            "API version",
            id="wrong-api-version",
        ),
        pytest.param(
            "POST", "pods", {"body": {**pod("p"), "kind": "Service"}}, 400, "BadRequest", "kind", id="wrong-kind"
        ),
        pytest.param(
            "POST", "pods", {"raw": b'{"metadata": {'}, 400, "BadRequest", "could not be decoded", id="malformed-json"
        ),
        pytest.param(
            "POST",
            "pods",
            {"raw": b"metadata: [unclosed", "content_type": "application/yaml"},
            400,
            "BadRequest",
            "could not be decoded",
            id="malformed-yaml",
        ),
        pytest.param(
            "POST", "configmaps", {"raw": big_configmap()}, 413, "RequestEntityTooLarge", "too large", id="3MiB-object"
        ),
        pytest.param(
            "POST",
            "pods",
            {"body": pod("p"), "content_type": "application/x-frobnicate"},
            415,
            "UnsupportedMediaType",
            "unknown format",
            id="unsupported-media-type",
        ),
        pytest.param("PUT", "pods", {"body": pod("p")}, 405, "MethodNotAllowed", "", id="put-on-a-collection"),
    ],
)
def test_bad_input_gets_the_kubernetes_answer_and_stores_nothing(
    api: Api, ns: str, method: str, path: str, kwargs: dict[str, Any], code: int, reason: str, needle: str
) -> None:
    before = api.ok("GET", "/api/v1/namespaces")["metadata"]["resourceVersion"]
    got, body = api.call(method, f"/api/v1/namespaces/{ns}/{path}", **kwargs)
    assert (got, body.get("kind"), body.get("reason")) == (code, "Status", reason), body
    assert needle in body.get("message", "")
    assert api.ok("GET", "/api/v1/namespaces")["metadata"]["resourceVersion"] == before


def test_invalid_answers_carry_field_causes(api: Api, ns: str) -> None:
    code, body = api.call("POST", f"/api/v1/namespaces/{ns}/pods", {"metadata": {"name": "UPPER"}, "spec": {}})
    assert code == 422
    fields = {c["field"] for c in body["details"]["causes"]}
    assert {"metadata.name", "spec.containers"} <= fields


def test_a_namespace_comes_with_its_default_service_account_and_root_ca(
    api: Api, ns: str, cluster: LocalCluster
) -> None:
    account = api.ok("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")
    assert account["metadata"]["namespace"] == ns and account["metadata"]["uid"]
    assert api.ok("GET", "/api/v1/namespaces/kube-system/serviceaccounts/default")["kind"] == "ServiceAccount"
    root_ca = api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt")
    assert root_ca["data"]["ca.crt"] == Path(cluster.security.ca_paths()[0]).read_text()


def test_creating_in_a_missing_namespace_is_not_found(api: Api) -> None:
    code, body = api.call("POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "c"}})
    assert (code, body["reason"], body["message"]) == (404, "NotFound", 'namespaces "nowhere" not found')


def test_a_terminating_namespace_takes_no_new_content(api: Api, ns: str) -> None:
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "before"}})
    deleted = api.ok("DELETE", f"/api/v1/namespaces/{ns}")
    assert deleted["status"]["phase"] == "Terminating"
    # Admission reads the API server's namespace cache, which follows the
    # store by one watch event, as in Kubernetes: wait for the refusal.
    deadline = time.monotonic() + 20
    i = 0
    while True:
        code, body = api.call("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": f"late-{i}"}})
        if code == 403:
            break
        assert code == 201 and time.monotonic() < deadline, (code, body)
        i += 1
    assert body["reason"] == "Forbidden" and "because it is being terminated" in body["message"]
    names = {c["metadata"]["name"] for c in api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]}
    assert f"late-{i}" not in names and "before" in names
    # It stays until the namespace controller empties it and clears
    # spec.finalizers through /finalize; deleting it again says so.
    code, body = api.call("DELETE", f"/api/v1/namespaces/{ns}")
    assert (code, body["reason"]) == (409, "Conflict") and "ensuring all content is removed" in body["message"]
    api.ok("PUT", f"/api/v1/namespaces/{ns}", {**deleted, "spec": {"finalizers": []}})  # not through an update
    current = api.ok("GET", f"/api/v1/namespaces/{ns}")
    assert current["spec"]["finalizers"] == ["kubernetes"]
    finalized = api.ok("PUT", f"/api/v1/namespaces/{ns}/finalize", {**current, "spec": {"finalizers": []}})
    assert finalized["spec"] == {"finalizers": []} and finalized["metadata"]["deletionTimestamp"]
    assert api.call("GET", f"/api/v1/namespaces/{ns}")[0] == 404  # finalized and empty: gone


def test_pod_logs_name_a_container_and_are_empty_before_scheduling(api: Api, ns: str) -> None:
    two = pod("two")
    two["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    api.ok("POST", f"/api/v1/namespaces/{ns}/pods", two)
    code, body = api.call("GET", f"/api/v1/namespaces/{ns}/pods/two/log")
    assert (code, body["message"]) == (
        400,
        "a container name must be specified for pod two, choose one of: [c sidecar]",
    )
    code, body = api.call("GET", f"/api/v1/namespaces/{ns}/pods/two/log?container=nope")
    assert (code, body["message"]) == (400, "container nope is not valid for pod two")
    with api.open(f"/api/v1/namespaces/{ns}/pods/two/log?container=c", timeout=10) as resp:
        assert (resp.status, resp.read()) == (200, b"")  # not scheduled: nothing logged yet
    api.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/pods/two/binding",
        {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "two"}, "target": {"kind": "Node", "name": "n1"}},
    )
    code, body = api.call("GET", f"/api/v1/namespaces/{ns}/pods/two/log?container=sidecar")
    assert code == 503 and 'container "sidecar" of pod "two" on node "n1"' in body["message"]


def test_a_watch_from_a_compacted_revision_is_gone(api: Api, ns: str, cluster: LocalCluster) -> None:
    first = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c1"}})
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c2"}})
    latest = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c3"}})
    with cluster.client() as client:
        client.compact(int(latest["metadata"]["resourceVersion"]))
    [event] = api.watch(
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={first['metadata']['resourceVersion']}", 1
    )
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    code, body = api.call(
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps?limit=1&resourceVersion={first['metadata']['resourceVersion']}&resourceVersionMatch=Exact",
    )
    assert (code, body["reason"]) == (410, "Expired")


def test_health_and_version_endpoints(api: Api) -> None:
    version = api.ok("GET", "/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.33")
    with api.open("/readyz?verbose", timeout=10) as resp:
        text = resp.read().decode()
    assert "[+]store-quorum ok" in text and "[+]informer-sync ok" in text and "readyz check passed" in text
    with api.open("/livez", timeout=10) as resp:
        assert resp.read() == b"ok"


def service(name: str, **spec: Any) -> Body:
    return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}


def test_services_get_cluster_ips_and_node_ports_that_stay_unique(api: Api, ns: str, cluster: LocalCluster) -> None:
    path = f"/api/v1/namespaces/{ns}/services"
    web = api.ok("POST", path, service("web"))["spec"]
    ip = ipaddress.ip_address(web["clusterIP"])
    assert ip in ipaddress.ip_network("10.96.0.0/12") and web["clusterIPs"] == [web["clusterIP"]]
    assert (web["ipFamilies"], web["ipFamilyPolicy"], web["internalTrafficPolicy"]) == (
        ["IPv4"],
        "SingleStack",
        "Cluster",
    )
    assert api.ok("POST", path, service("headless", clusterIP="None"))["spec"]["clusterIPs"] == ["None"]

    code, body = api.call("POST", path, service("copy", clusterIP=web["clusterIP"]))
    assert code == 422 and "provided IP is already allocated" in body["message"]
    code, body = api.call("POST", path, service("outside", clusterIP="192.168.0.10"))
    assert code == 422 and "The range of valid IPs is 10.96.0.0/12" in body["message"]
    assert api.call("GET", f"{path}/copy")[0] == 404  # nothing stored

    # An update that leaves the address out keeps it; one that changes it is refused.
    current = api.ok("GET", f"{path}/web")
    del current["spec"]["clusterIP"], current["spec"]["clusterIPs"]
    assert api.ok("PUT", f"{path}/web", current)["spec"]["clusterIP"] == web["clusterIP"]
    code, body = api.call("PATCH", f"{path}/web", {"spec": {"clusterIP": "10.96.0.77"}}, "application/merge-patch+json")
    assert code == 422 and "field is immutable" in body["message"]

    # Deleting a Service frees its address for another.
    api.ok("DELETE", f"{path}/web")
    assert api.ok("POST", path, service("again", clusterIP=web["clusterIP"]))["spec"]["clusterIP"] == web["clusterIP"]

    # Node ports: allocated in range, unique across masters under concurrent creates.
    apis = [Api(f"https://{m.api_address}", cluster.admin_credentials) for m in cluster.masters]
    with ThreadPoolExecutor(12) as pool:
        created = list(pool.map(lambda i: apis[i % 3].ok("POST", path, service(f"np-{i}", type="NodePort")), range(30)))
    ports = [s["spec"]["ports"][0]["nodePort"] for s in created]
    ips = [s["spec"]["clusterIP"] for s in created]
    assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 30 and len(set(ips)) == 30
    assert created[0]["spec"]["externalTrafficPolicy"] == "Cluster"
    code, body = api.call("POST", path, service("taken", type="NodePort", ports=[{"port": 80, "nodePort": ports[0]}]))
    assert code == 422 and "provided port is already allocated" in body["message"]
    code, body = api.call("POST", path, service("plain", ports=[{"port": 80, "nodePort": 30001}]))
    assert code == 422 and "may not be used when `type` is 'ClusterIP'" in body["message"]


def test_requests_watches_and_store_round_trips_are_metered(api: Api, ns: str, cluster: LocalCluster) -> None:
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "m"}})
    api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps")
    api.call("GET", f"/api/v1/namespaces/{ns}/configmaps/absent")
    master = next(m for m in cluster.masters if f"https://{m.api_address}" == api.base)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{master.metrics_address}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    expected = [
        'apiserver_request_total{code="201",resource="configmaps",verb="CREATE"}',
        'apiserver_request_total{code="404",resource="configmaps",verb="GET"}',
        'apiserver_request_duration_seconds_count{resource="configmaps",verb="LIST"}',
        'apiserver_store_request_duration_seconds_count{operation="create"}',
        'apiserver_create_batch_size_bucket{le="1.0"}',
    ]
    # A request is counted once its response is out.
    wait_until(
        lambda: all(line in scrape() for line in expected),
        "the requests in /metrics",
        timeout=10,
        detail=lambda: f"missing {[line for line in expected if line not in scrape()]}",
    )
    # A watch open on this master counts while it lasts.
    watching = 'apiserver_registered_watchers{resource="secrets"} 1.0'
    assert watching not in scrape()
    with api.open(f"/api/v1/namespaces/{ns}/secrets?watch=1&timeoutSeconds=30", timeout=30):
        wait_until(lambda: watching in scrape(), "the open watch to be counted", timeout=10)


def test_a_write_without_quorum_is_a_503_that_clients_retry_by_themselves(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    lonely = make_cluster()
    leader = lonely.wait_ready(60)
    survivor = next(m for m in lonely.masters if m.id != leader)
    for m in lonely.masters:
        if m.id != survivor.id:
            lonely.kill(m.id)
    with lonely.client(timeout=2.0) as client:

        def alone() -> bool:
            status = client.status(survivor.grpc_address)
            return not status.has_quorum and not status.leader_id

        wait_until(alone, "the survivor to know it is alone", timeout=20)
    req = urllib.request.Request(
        f"https://{survivor.api_address}/api/v1/namespaces/default/configmaps",
        data=json.dumps({"metadata": {"name": "c"}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30, context=lonely.admin_credentials.ssl_context())
    body = json.loads(refused.value.read())
    assert (refused.value.code, body["reason"], refused.value.headers["Retry-After"]) == (
        503,
        "ServiceUnavailable",
        "1",
    )
    assert body["details"]["retryAfterSeconds"] == 1 and "not committed" in body["message"]
