"""The gRPC resource API and the client library (ApiClient, Informer,
Lister) against a real 3-master cluster: the same objects and errors as
the REST API, and an informer that keeps its cache exact across a kill -9
of the master it watches through."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from control_plane.apipb import resources_pb2 as pb
from control_plane.apipb import resources_pb2_grpc
from control_plane.apis.errors import ApiError
from control_plane.apis.grpc_errors import from_rpc_error
from control_plane.client import ApiClient, Informer, resource
from control_plane.local_cluster import LocalCluster
from tests.support.rest import Api

PODS = resource("pods")
CONFIGMAPS = resource("configmaps")
DEPLOYMENTS = resource("deployments", "apps")
NAMESPACES = resource("namespaces")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.running(str(tmp_path_factory.mktemp("grpc-api"))) as c:
        yield c


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[ApiClient]:
    async with ApiClient(cluster.endpoints, user_agent="grpc-test/1.0", credentials=cluster.admin_credentials) as c:
        yield c


@pytest.fixture
async def ns(client: ApiClient, request: pytest.FixtureRequest) -> str:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:50].strip("-")
    await client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def rest_get(cluster: LocalCluster, path: str) -> dict[str, Any]:
    return Api(cluster.api_endpoints[1], cluster.admin_credentials).ok("GET", path)


async def test_objects_are_the_ones_rest_serves(client: ApiClient, ns: str, cluster: LocalCluster) -> None:
    created = await client.create(PODS, pod("p"), ns)
    assert created["metadata"]["managedFields"][0]["manager"] == "grpc-test"
    via_rest = rest_get(cluster, f"/api/v1/namespaces/{ns}/pods/p")
    assert via_rest == created

    relabeled = await client.patch(PODS, "p", {"metadata": {"labels": {"tier": "db"}}}, ns)
    assert relabeled["metadata"]["labels"] == {"app": "x", "tier": "db"}
    with pytest.raises(ApiError) as stale:
        await client.update(PODS, created)
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")
    strategic = await client.patch(
        PODS, "p", {"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}, ns, "strategic"
    )
    assert [c["image"] for c in strategic["spec"]["containers"]] == ["busybox:1.36"]

    deleted = await client.delete(PODS, "p", ns)
    assert deleted["status"] == "Success"
    with pytest.raises(ApiError) as missing:
        await client.get(PODS, "p", ns)
    assert (missing.value.code, missing.value.message) == (404, 'pods "p" not found')


async def test_server_side_apply_and_scale(client: ApiClient, ns: str) -> None:
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
        },
    }
    await client.apply(DEPLOYMENTS, deployment, "team-a")
    with pytest.raises(ApiError) as conflict:
        await client.apply(DEPLOYMENTS, {**deployment, "spec": {**deployment["spec"], "replicas": 3}}, "team-b")
    assert conflict.value.code == 409
    assert [(c.field, c.reason) for c in conflict.value.causes] == [(".spec.replicas", "FieldManagerConflict")]
    scale = await client.patch(DEPLOYMENTS, "d", {"spec": {"replicas": 4}}, ns, subresource="scale")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 4)


async def test_errors_are_the_kubernetes_statuses(client: ApiClient, ns: str, cluster: LocalCluster) -> None:
    with pytest.raises(ApiError) as invalid:
        await client.create(PODS, {"metadata": {"name": "Bad_Name"}, "spec": {}}, ns)
    assert invalid.value.code == 422 and {"metadata.name", "spec.containers"} <= {c.field for c in invalid.value.causes}
    with pytest.raises(ApiError) as exists:
        await client.create(NAMESPACES, {"metadata": {"name": ns}})
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")

    # What the client library cannot send: raw stubs.
    credentials = cluster.admin_credentials.grpc()
    assert credentials is not None
    async with grpc.aio.secure_channel(cluster.endpoints[0], credentials) as channel:
        stub = resources_pb2_grpc.ResourcesStub(channel)
        cases = [
            (
                pb.ResourceRef(version="v1", resource="frobnicators", namespace=ns),
                b"{}",
                grpc.StatusCode.NOT_FOUND,
                404,
            ),
            (
                pb.ResourceRef(version="v1", resource="configmaps", namespace=ns),
                b'{"metadata": {',
                grpc.StatusCode.INVALID_ARGUMENT,
                400,
            ),
            (
                pb.ResourceRef(version="v1", resource="configmaps", namespace=ns),
                json.dumps({"metadata": {"name": "big"}, "data": {"x": "a" * (3 << 20)}}).encode(),
                grpc.StatusCode.INVALID_ARGUMENT,
                413,
            ),
        ]
        for ref, body, code, http in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Create(pb.CreateRequest(ref=ref, object=body))
            status = from_rpc_error(err.value)
            assert err.value.code() == code and status is not None and status.code == http, (ref, status)
    names = [c["metadata"]["name"] for c in (await client.list(CONFIGMAPS, ns))["items"]]
    assert names == ["kube-root-ca.crt"]  # nothing stored (but what every namespace has)


async def test_creates_sent_together_each_get_their_own_answer(client: ApiClient, ns: str) -> None:
    """Creates that arrive together are prepared in one batch
    (apiserver/stage_batches.py): an invalid one or a duplicate fails alone."""
    bodies = [pod(f"p{i}") for i in range(30)]
    bodies += [pod(f"Bad_{i}") for i in range(5)]  # invalid names: 422
    bodies += [pod(f"p{i}") for i in range(5)]  # the first five again: one of each pair is a 409
    bodies.append({"metadata": {"name": "no-spec"}})  # a required field missing: 422
    results = await asyncio.gather(*(client.create(PODS, body, ns) for body in bodies), return_exceptions=True)
    created = [r for r in results if isinstance(r, dict)]
    codes = sorted(r.code for r in results if isinstance(r, ApiError))
    assert not [r for r in results if not isinstance(r, dict | ApiError)], results
    assert codes == [409] * 5 + [422] * 6
    assert len(created) == 30 and len({c["metadata"]["uid"] for c in created}) == 30
    invalid = [r for r in results if isinstance(r, ApiError) and r.code == 422]
    assert all(e.causes for e in invalid)
    stored = (await client.list(PODS, ns))["items"]
    assert sorted(p["metadata"]["name"] for p in stored) == sorted(f"p{i}" for i in range(30))
    for p in stored:  # defaulted and admitted as a create alone would be
        assert p["spec"]["serviceAccountName"] == "default" and p["status"]["qosClass"] == "BestEffort"


async def test_list_pages_and_watch_from_a_revision(client: ApiClient, ns: str, cluster: LocalCluster) -> None:
    for i in range(5):
        await client.create(CONFIGMAPS, {"metadata": {"name": f"c{i}"}}, ns)
    first = await client.list(CONFIGMAPS, ns, limit=2)
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    everything = await client.list_all(CONFIGMAPS, ns, page=2)
    # Every namespace also holds the cluster CA (kube-root-ca.crt), as in Kubernetes.
    assert [c["metadata"]["name"] for c in everything["items"]] == [*(f"c{i}" for i in range(5)), "kube-root-ca.crt"]

    start = everything["metadata"]["resourceVersion"]
    await client.patch(CONFIGMAPS, "c1", {"data": {"k": "v"}}, ns)
    await client.delete(CONFIGMAPS, "c2", ns)
    seen = []
    async for event in client.watch(CONFIGMAPS, ns, resource_version=start):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 2:
            break
    assert seen == [("MODIFIED", "c1"), ("DELETED", "c2")]

    with cluster.client() as store:
        store.compact(int((await client.get(CONFIGMAPS, "c1", ns))["metadata"]["resourceVersion"]))
    with pytest.raises(ApiError) as gone:
        async for _ in client.watch(CONFIGMAPS, ns, resource_version=start, timeout_seconds=10):
            pass
    assert gone.value.code == 410


async def test_informer_cache_handlers_and_indexes(client: ApiClient, ns: str) -> None:
    await client.create(PODS, {**pod("early"), "spec": {**pod("early")["spec"], "nodeName": "n1"}}, ns)
    informer = Informer(client, PODS, ns)
    informer.add_index("node", lambda p: [p["spec"].get("nodeName", "")])
    events: list[tuple[str, str]] = []
    informer.add_handler(
        on_add=lambda p: events.append(("add", p["metadata"]["name"])),
        on_update=lambda old, new: events.append(("update", new["metadata"]["name"])),
        on_delete=lambda p: events.append(("delete", p["metadata"]["name"])),
    )
    informer.start()
    try:
        await informer.wait_for_sync(10)
        assert events == [("add", "early")]
        await client.create(PODS, pod("late"), ns)
        await client.bind(ns, "late", "n2")
        await client.delete(PODS, "early", ns, grace_period_seconds=0)
        await wait_until(lambda: len(events) >= 4, "informer events")
        assert events == [("add", "early"), ("add", "late"), ("update", "late"), ("delete", "early")]
        assert informer.lister.get("late", ns)["spec"]["nodeName"] == "n2"  # type: ignore[index]
        assert [p["metadata"]["name"] for p in informer.lister.by_index("node", "n2")] == ["late"]
        assert informer.lister.by_index("node", "n1") == []
        assert [p["metadata"]["name"] for p in informer.lister.list(ns, "app=x")] == ["late"]
    finally:
        await informer.stop()


async def wait_until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_informer_sees_every_change_once_across_a_kill_of_its_master(
    client: ApiClient, ns: str, cluster: LocalCluster
) -> None:
    informer = Informer(client, CONFIGMAPS, ns)
    seen: list[str] = []
    informer.add_handler(on_add=lambda c: seen.append(c["metadata"]["name"]))
    informer.start()
    acked: list[str] = []
    stop = asyncio.Event()

    async def write() -> None:
        # A writer with its own client, failing over like any other.
        async with ApiClient(
            cluster.endpoints, timeout=3.0, retry_for=30.0, credentials=cluster.admin_credentials
        ) as writer:
            i = 0
            while not stop.is_set():
                name = f"cm-{i}"
                try:
                    await writer.create(CONFIGMAPS, {"metadata": {"name": name}}, ns)
                    acked.append(name)
                except ApiError as e:
                    if e.reason == "AlreadyExists":  # an unknown outcome retried
                        acked.append(name)
                    elif e.code not in (503, 504):
                        raise
                i += 1

    writer = asyncio.create_task(write())
    victim = next(m for m in cluster.masters if m.grpc_address == client.endpoint)
    try:
        await informer.wait_for_sync(10)
        await wait_until(lambda: len(seen) >= 20, "events before the kill")
        cluster.kill(victim.id)
        before = len(acked)
        await wait_until(lambda: len(acked) >= before + 20, "writes after the kill", timeout=30)
        stop.set()
        await writer
        await wait_until(lambda: set(acked) <= set(seen), "the informer to catch up", timeout=30)
    finally:
        stop.set()
        await writer
        await informer.stop()
        cluster.start(victim.id)
        cluster.wait_ready(30)
    assert client.endpoint != victim.grpc_address
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert set(acked) <= set(seen)
    assert informer.rewatches >= 2 and informer.relists == 1
