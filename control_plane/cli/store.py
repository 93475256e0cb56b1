"""`raftkube store ...`: an etcdctl-like client of the replicated store."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
import grpc
from google.protobuf import json_format

from control_plane.client.credentials import INSECURE, ClientCredentials
from control_plane.local_cluster import LocalCluster
from ha.client import StoreClient
from ha.keys import prefix_end
from ha.storepb import kv_pb2


def _target(
    directory: str | None, endpoints: str | None, tls: tuple[str | None, str | None, str | None]
) -> tuple[list[str], ClientCredentials]:
    """The masters' gRPC addresses and the credentials to reach them: a
    cluster directory's admin certificate, or the --cacert/--cert/--key given
    (as etcdctl takes them); no TLS files, no TLS."""
    given = ClientCredentials.from_files(*tls) if any(tls) else None
    if endpoints:
        return [e for e in endpoints.split(",") if e], given or INSECURE
    from_env = os.environ.get("RAFTKUBE_ENDPOINTS", "")
    if not directory and from_env:
        return [e for e in from_env.split(",") if e], given or INSECURE
    if not directory and os.path.exists(os.path.join(".raftkube", "cluster.json")):
        directory = ".raftkube"
    if directory:
        cluster = LocalCluster.load(directory)
        return cluster.endpoints, given or cluster.admin_credentials
    raise click.UsageError("say where the masters are: --endpoints, --dir, or RAFTKUBE_ENDPOINTS")


def _print(message: Any) -> None:
    click.echo(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _run(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except grpc.RpcError as e:
        click.echo(f"error: {e.code().name}: {e.details()}", err=True)
        sys.exit(1)


def _range_end(key: str, prefix: bool) -> bytes:
    return prefix_end(key.encode()) if prefix else b""


@click.group()
@click.option("--endpoints", help="Comma-separated gRPC addresses of masters.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="A cluster started by `raftkube up`.")
@click.option("--cacert", type=click.Path(dir_okay=False), help="The cluster CA (PEM), to verify masters.")
@click.option("--cert", type=click.Path(dir_okay=False), help="A client certificate in system:masters.")
@click.option("--key", type=click.Path(dir_okay=False), help="Its private key.")
@click.option("--timeout", default=5.0, show_default=True)
@click.pass_context
def store(
    ctx: click.Context,
    endpoints: str | None,
    directory: str | None,
    cacert: str | None,
    cert: str | None,
    key: str | None,
    timeout: float,
) -> None:
    """Talk to the replicated store (the KV and Cluster gRPC services; they
    are for cluster administrators only)."""
    addresses, credentials = _target(directory, endpoints, (cacert, cert, key))
    ctx.obj = StoreClient(addresses, timeout=timeout, credentials=credentials.grpc())
    ctx.call_on_close(ctx.obj.close)


@store.command()
@click.pass_obj
def status(client: StoreClient) -> None:
    """Each master's view: role, term, leader, commit and applied index."""

    def show() -> None:
        for endpoint in client.endpoints:
            try:
                s = client.status(endpoint)
            except grpc.RpcError as e:
                click.echo(f"{endpoint:22} unreachable: {e.code().name}")
                continue
            click.echo(
                f"{endpoint:22} {s.id:6} {s.role:9} term={s.term} leader={s.leader_id or '-'} "
                f"commit={s.commit_index} applied={s.applied_index} revision={s.header.revision} "
                f"quorum={'yes' if s.has_quorum else 'NO'}"
            )

    _run(show)


@store.command()
@click.pass_obj
def members(client: StoreClient) -> None:
    """The replicated member list."""

    def show() -> None:
        for m in client.member_list().members:
            click.echo(f"{m.id:8} raft={m.raft_address} grpc={m.grpc_address}")

    _run(show)


@store.command()
@click.argument("key")
@click.argument("value")
@click.option("--lease", default=0, help="Attach the key to this lease.")
@click.pass_obj
def put(client: StoreClient, key: str, value: str, lease: int) -> None:
    """Write KEY=VALUE."""
    _run(lambda: click.echo(f"OK revision={client.put(key.encode(), value.encode(), lease=lease).header.revision}"))


@store.command()
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--serializable", is_flag=True, help="Read local state, without a read barrier.")
@click.option("--rev", default=0, help="Read at this revision.")
@click.option("--limit", default=0)
@click.option("-o", "--output", type=click.Choice(["simple", "json"]), default="simple")
@click.pass_obj
def get(client: StoreClient, key: str, prefix: bool, serializable: bool, rev: int, limit: int, output: str) -> None:
    """Read KEY (or a prefix)."""
    request = kv_pb2.RangeRequest(
        key=key.encode(), range_end=_range_end(key, prefix), serializable=serializable, revision=rev, limit=limit
    )

    def show() -> None:
        resp = client.range(request)
        if output == "json":
            _print(resp)
            return
        for kv in resp.kvs:
            click.echo(kv.key.decode(errors="replace"))
            click.echo(kv.value.decode(errors="replace"))

    _run(show)


@store.command(name="del")
@click.argument("key")
@click.option("--prefix", is_flag=True)
@click.pass_obj
def delete(client: StoreClient, key: str, prefix: bool) -> None:
    """Delete KEY (or a prefix)."""
    _run(lambda: click.echo(client.delete(key.encode(), _range_end(key, prefix)).deleted))


@store.command()
@click.argument("key")
@click.option("--prefix", is_flag=True)
@click.option("--rev", default=0, help="Start from this revision.")
@click.option("--prev-kv", is_flag=True)
@click.pass_obj
def watch(client: StoreClient, key: str, prefix: bool, rev: int, prev_kv: bool) -> None:
    """Print events on KEY (or a prefix) until interrupted."""
    request = kv_pb2.WatchRequest(
        key=key.encode(), range_end=_range_end(key, prefix), start_revision=rev, prev_kv=prev_kv
    )

    def follow() -> None:
        for resp in client.watch(request):
            for ev in resp.events:
                kind = kv_pb2.Event.EventType.Name(ev.type)
                click.echo(f"{kind} {ev.kv.key.decode(errors='replace')} rev={ev.kv.mod_revision}")
                if ev.type == kv_pb2.Event.PUT:
                    click.echo(ev.kv.value.decode(errors="replace"))

    try:
        _run(follow)
    except KeyboardInterrupt:
        pass


@store.command(name="member-add")
@click.argument("member_id")
@click.argument("raft_address")
@click.argument("grpc_address", default="")
@click.pass_obj
def member_add(client: StoreClient, member_id: str, raft_address: str, grpc_address: str) -> None:
    """Add a master (start it with --peer for every member)."""
    _run(lambda: _print(client.member_add(member_id, raft_address, grpc_address)))


@store.command(name="member-remove")
@click.argument("member_id")
@click.pass_obj
def member_remove(client: StoreClient, member_id: str) -> None:
    """Remove a master (leadership moves away first if it leads)."""
    _run(lambda: _print(client.member_remove(member_id)))


@store.command(name="transfer-leadership")
@click.argument("target_id", default="")
@click.pass_obj
def transfer_leadership(client: StoreClient, target_id: str) -> None:
    """Hand leadership to TARGET_ID (or the most caught-up master)."""
    _run(lambda: click.echo(f"leader: {client.transfer_leadership(target_id).leader_id}"))


@store.command()
@click.pass_obj
def hash(client: StoreClient) -> None:
    """Each master's state hash, to compare replicas."""

    def show() -> None:
        for endpoint in client.endpoints:
            h = client.hash_kv(endpoint)
            click.echo(f"{endpoint:22} revision={h.header.revision} applied={h.applied_index} hash={h.hash}")

    _run(show)
