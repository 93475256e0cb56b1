"""The KV and Cluster gRPC services of a real 3-master cluster: semantics
through any master, and bad input answered with a clear status while nothing
is stored."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from control_plane.local_cluster import LocalCluster
from ha import limits
from ha.client import StoreClient
from ha.keys import prefix_end
from ha.storepb import kv_pb2
from tests.integration.ha.conftest import INSECURE


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    args = [*INSECURE, "--history-revisions", "1000000"]
    with LocalCluster.running(str(tmp_path_factory.mktemp("kv")), server_args=args) as c:
        yield c


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[StoreClient]:
    with cluster.client() as c:
        yield c


def follower_endpoint(cluster: LocalCluster) -> str:
    leader = cluster.leader()
    return next(m.grpc_address for m in cluster.masters if m.id != leader)


def test_writes_through_a_follower_are_read_everywhere(cluster: LocalCluster) -> None:
    with StoreClient([follower_endpoint(cluster)]) as via_follower:
        rev = via_follower.put(b"/t/f", b"1").header.revision
    for endpoint in cluster.endpoints:
        with StoreClient([endpoint]) as c:
            kv = c.get(b"/t/f")  # linearizable: sees the write on every master
            assert kv is not None and (kv.value, kv.mod_revision) == (b"1", rev)


def test_paging_with_continue_tokens_is_consistent(client: StoreClient) -> None:
    for i in range(25):
        client.put(b"/t/page/%02d" % i, b"v")
    first = client.range(kv_pb2.RangeRequest(key=b"/t/page/", range_end=prefix_end(b"/t/page/"), limit=10))
    client.put(b"/t/page/00", b"changed after the first page")
    pages = [first]
    while pages[-1].more:
        pages.append(
            client.range(kv_pb2.RangeRequest(key=b"/t/page/", limit=10, continue_token=pages[-1].continue_token))
        )
    keys = [kv.key for p in pages for kv in p.kvs]
    assert keys == [b"/t/page/%02d" % i for i in range(25)]
    assert {p.header.revision for p in pages[1:]} == {pages[1].header.revision}
    assert all(kv.mod_revision <= first.header.revision for p in pages for kv in p.kvs)


def test_txn_compare_and_swap(client: StoreClient) -> None:
    rev = client.put(b"/t/cas", b"a").header.revision
    cas = kv_pb2.TxnRequest(
        compare=[kv_pb2.Compare(key=b"/t/cas", target=kv_pb2.Compare.MOD, mod_revision=rev)],
        success=[kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=b"/t/cas", value=b"b"))],
    )
    assert client.txn(cas).succeeded
    assert not client.txn(cas).succeeded
    assert client.get(b"/t/cas").value == b"b"  # type: ignore[union-attr]


def test_watch_from_a_past_revision_and_prev_kv(client: StoreClient) -> None:
    first = client.put(b"/t/w/a", b"1").header.revision
    client.put(b"/t/w/a", b"2")
    client.delete(b"/t/w/a")
    stream = client.watch(
        kv_pb2.WatchRequest(key=b"/t/w/", range_end=prefix_end(b"/t/w/"), start_revision=first, prev_kv=True)
    )
    created = next(stream)
    assert created.created
    events: list[kv_pb2.Event] = []
    while len(events) < 3:
        events.extend(next(stream).events)
    stream.cancel()
    assert [(e.type, e.kv.mod_revision) for e in events] == [
        (kv_pb2.Event.PUT, first),
        (kv_pb2.Event.PUT, first + 1),
        (kv_pb2.Event.DELETE, first + 2),
    ]
    assert events[1].prev_kv.value == b"1" and events[2].prev_kv.value == b"2"


def test_leases_keep_alive_and_expire(client: StoreClient) -> None:
    lease = client.lease_grant(ttl=1).id
    client.put(b"/t/lease", b"v", lease=lease)
    for _ in range(4):  # kept alive well past its TTL
        time.sleep(0.5)
        assert client.lease_keep_alive_once(lease).ttl == 1
    assert client.get(b"/t/lease") is not None
    deadline = time.monotonic() + 10
    while client.get(b"/t/lease") is not None:
        assert time.monotonic() < deadline, "the key outlived its lease"
        time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as e:
        client.lease_keep_alive_once(lease)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        pytest.param(lambda c: c.put(b"", b"v"), grpc.StatusCode.INVALID_ARGUMENT, "key is empty", id="empty-key"),
        pytest.param(
            lambda c: c.put(b"k" * (limits.MAX_KEY_BYTES + 1), b"v"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit is",
            id="oversized-key",
        ),
        pytest.param(
            lambda c: c.put(b"/t/big", b"v" * (limits.MAX_VALUE_BYTES + 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "value is",
            id="value-over-1.5MiB",
        ),
        pytest.param(
            lambda c: c.txn(
                kv_pb2.TxnRequest(
                    success=[kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=b"/t/x%d" % i)) for i in range(129)]
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the limit is 128",
            id="txn-too-many-ops",
        ),
        pytest.param(
            lambda c: c.put(b"/t/l", b"v", lease=424242), grpc.StatusCode.NOT_FOUND, "lease 424242", id="missing-lease"
        ),
        pytest.param(
            lambda c: c.lease_revoke(424242), grpc.StatusCode.NOT_FOUND, "lease 424242", id="revoke-missing-lease"
        ),
        pytest.param(
            lambda c: c.range(kv_pb2.RangeRequest(key=b"/t/", continue_token="!!not-a-token")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "continue token",
            id="bad-continue-token",
        ),
        pytest.param(
            lambda c: c.get(b"/t/x", revision=1 << 40), grpc.StatusCode.OUT_OF_RANGE, "ahead of", id="future-revision"
        ),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(client: StoreClient, call, code, message) -> None:  # type: ignore[no-untyped-def]
    before = client.range(kv_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)).header.revision
    with pytest.raises(grpc.RpcError) as e:
        call(client)
    assert e.value.code() == code
    assert message in str(e.value.details())
    after = client.range(kv_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)).header.revision
    assert after == before


def test_a_watch_from_a_compacted_revision_says_where_to_relist(client: StoreClient) -> None:
    for i in range(3):
        client.put(b"/t/c", b"%d" % i)
    current = client.put(b"/t/c", b"last").header.revision
    client.compact(current - 1)
    stream = client.watch(kv_pb2.WatchRequest(key=b"/t/c", start_revision=current - 2))
    with pytest.raises(grpc.RpcError) as e:
        next(stream)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert f"compact_revision={current - 1}" in str(e.value.details())
    with pytest.raises(grpc.RpcError) as e2:
        client.get(b"/t/c", revision=current - 2)
    assert e2.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_health_and_reflection(cluster: LocalCluster) -> None:
    channel = grpc.insecure_channel(cluster.endpoints[0])
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="raftkube.store.v1.KV"), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for s in next(iter(responses)).list_services_response.service}
    assert {"raftkube.store.v1.KV", "raftkube.store.v1.Cluster", "grpc.health.v1.Health"} <= services
    channel.close()


def test_status_and_members_from_every_master(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        statuses = [client.status(e) for e in cluster.endpoints]
        assert {s.leader_id for s in statuses} == {cluster.leader()}
        assert sorted(s.role for s in statuses) == ["follower", "follower", "leader"]
        leader = next(s for s in statuses if s.role == "leader")
        assert all(p.connected and p.match_index > 0 for p in leader.peers)
        deadline = time.monotonic() + 10
        while True:
            members = client.member_list().members
            if all(m.grpc_address for m in members):
                break
            assert time.monotonic() < deadline, "masters did not announce their gRPC addresses"
            time.sleep(0.2)
        assert sorted((m.id, m.grpc_address) for m in members) == sorted(
            (m.id, m.grpc_address) for m in cluster.masters
        )
