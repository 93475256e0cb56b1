"""`raftkube agent`: run a node agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import click
import grpc
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from control_plane.client import INSECURE, ClientCredentials
from control_plane.nodepb import node_pb2_grpc
from node_agent.agent import Agent, AgentConfig
from node_agent.hollow import hollow_agents
from node_agent.images import ImageError, ImageStore
from node_agent.log_service import LogService
from node_agent.metrics import AgentMetrics
from node_agent.runtime import Runtime
from node_agent.runtime.process import ProcessRuntime
from node_agent.runtime.runc import RuncRuntime, runc_usable

log = logging.getLogger(__name__)


def _endpoints(values: tuple[str, ...]) -> list[str]:
    out = [e.strip() for v in values for e in v.split(",") if e.strip()]
    if not out:
        raise click.UsageError("--server HOST:PORT (a master's gRPC address) is required, once or more")
    return out


@click.group(invoke_without_command=True)
@click.option("--name", help="The node's name (its certificate must be system:node:NAME).  [required]")
@click.option("--server", "servers", multiple=True, help="A master's gRPC address, HOST:PORT (repeat, or commas).")
@click.option(
    "--runtime",
    type=click.Choice(["process", "runc"]),
    default="process",
    show_default=True,
    help="process: child processes on the host; runc: OCI containers from the node's image store.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Pods' logs, state and images.  [required]")
@click.option("--cluster-dir", type=click.Path(file_okay=False), help="A `raftkube init` directory (CA, node certs).")
@click.option("--ca-file", default="", help="The cluster CA (PEM).")
@click.option("--cert-file", default="", help="The node's client certificate (CN=system:node:NAME).")
@click.option("--key-file", default="", help="Its key.")
@click.option("--serving-cert-file", default="", help="The certificate the agent serves logs with.")
@click.option("--serving-key-file", default="", help="Its key.")
@click.option("--listen-address", default="127.0.0.1:0", show_default=True, help="Where the agent serves logs.")
@click.option("--node-ip", default="127.0.0.1", show_default=True, help="The node's InternalIP.")
@click.option("--heartbeat-interval", default=10.0, show_default=True, help="Seconds between lease renewals.")
@click.option("--lease-duration", default=40, show_default=True, help="Seconds a renewal lasts.")
@click.option("--metrics-address", default="", help="HOST:PORT to serve Prometheus /metrics on.")
@click.option(
    "--hollow",
    default=0,
    show_default=True,
    help="Simulate this many nodes (NAME-0 ...) in this process: real registration, heartbeats and pod "
    "status, no containers (as kubemark and KWOK). Needs --cluster-dir with their certificates "
    "(raftkube init --hollow-nodes N --hollow-prefix NAME).",
)
@click.option("--insecure", is_flag=True, help="Plaintext, no certificates (masters started with --insecure).")
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def agent(
    ctx: click.Context,
    name: str | None,
    servers: tuple[str, ...],
    runtime: str,
    data_dir: str | None,
    cluster_dir: str | None,
    ca_file: str,
    cert_file: str,
    key_file: str,
    serving_cert_file: str,
    serving_key_file: str,
    listen_address: str,
    node_ip: str,
    heartbeat_interval: float,
    lease_duration: int,
    metrics_address: str,
    hollow: int,
    insecure: bool,
    log_level: str,
) -> None:
    """Run a node agent: register NAME, renew its lease, run its pods.
    `raftkube agent images ...` manages the node's images (runc runtime)."""
    if ctx.invoked_subcommand is not None:
        return
    if not name or not data_dir:
        raise click.UsageError("--name and --data-dir are required")
    if runtime == "runc" and hollow:
        raise click.UsageError("--hollow runs no containers: it takes no --runtime runc")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cluster_dir:
        pki = os.path.join(cluster_dir, "pki")
        ca_file = ca_file or os.path.join(pki, "ca.crt")
        cert_file = cert_file or os.path.join(pki, "nodes", f"{name}.crt")
        key_file = key_file or os.path.join(pki, "nodes", f"{name}.key")
        serving_cert_file = serving_cert_file or os.path.join(pki, "nodes", f"{name}-serving.crt")
        serving_key_file = serving_key_file or os.path.join(pki, "nodes", f"{name}-serving.key")
    if hollow and not insecure and not cluster_dir:
        raise click.UsageError("--hollow needs --cluster-dir (its nodes' certificates are read from there)")
    if (
        not hollow
        and not insecure
        and not (ca_file and cert_file and key_file and serving_cert_file and serving_key_file)
    ):
        raise click.UsageError(
            "the agent speaks mTLS: give --cluster-dir, or --ca-file, --cert-file, --key-file, "
            "--serving-cert-file and --serving-key-file (or --insecure for a plaintext cluster)"
        )
    try:
        credentials = INSECURE if insecure or hollow else ClientCredentials.from_files(ca_file, cert_file, key_file)
    except OSError as e:
        click.echo(f"raftkube agent: {e}", err=True)
        sys.exit(2)
    config = AgentConfig(
        name=name,
        endpoints=_endpoints(servers),
        credentials=credentials,
        data_dir=os.path.abspath(data_dir),
        node_ip=node_ip,
        heartbeat_interval=heartbeat_interval,
        lease_duration=lease_duration,
    )
    if hollow:
        uvloop.run(run_hollow(config, hollow, cluster_dir, insecure, metrics_address))
        return
    serving = None if insecure else (serving_cert_file, serving_key_file, ca_file)
    if runtime == "runc":
        why = runc_usable()
        if why:
            click.echo(f"raftkube agent: --runtime runc: {why}", err=True)
            sys.exit(2)
    uvloop.run(run_agent(config, listen_address, serving, metrics_address, runtime))


def make_runtime(kind: str, data_dir: str) -> Runtime:
    if kind == "runc":
        images = ImageStore(os.path.join(data_dir, "images"))
        if images.ensure_busybox() is None:
            log.info("no static busybox on this host (Debian's busybox-static): no busybox image")
        return RuncRuntime(os.path.join(data_dir, "runc"), images)
    return ProcessRuntime(os.path.join(data_dir, "containers"))


async def run_agent(
    config: AgentConfig,
    listen_address: str,
    serving: tuple[str, str, str] | None,
    metrics_address: str = "",
    runtime_kind: str = "process",
) -> None:
    os.makedirs(config.data_dir, exist_ok=True)
    runtime = make_runtime(runtime_kind, config.data_dir)
    server = grpc.aio.server()
    if serving is None:
        port = server.add_insecure_port(listen_address)
    else:
        cert, key, ca = (open(path, "rb").read() for path in serving)  # noqa: SIM115 - read whole, closed at once
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        port = server.add_secure_port(listen_address, credentials)
    config.port = port
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    if metrics_address:
        host, _, metrics_port = metrics_address.rpartition(":")
        start_http_server(int(metrics_port), addr=host or "0.0.0.0", registry=registry)
    agent = Agent(config, runtime, metrics)
    node_pb2_grpc.add_AgentServicer_to_server(LogService(lambda: [w for w, _ in agent.workers.values()]), server)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while True:
        try:
            await agent.start()
            break
        except grpc.aio.AioRpcError as e:
            log.warning("cannot register yet (%s): trying again", e.details())
            await asyncio.sleep(1.0)
    log.info("node agent %s running (logs on port %d, masters %s)", config.name, port, ",".join(config.endpoints))
    await stop.wait()
    log.info("node agent %s stopping; its containers keep running", config.name)
    await agent.stop()
    with contextlib.suppress(Exception):
        await server.stop(grace=1.0)


async def run_hollow(config: AgentConfig, count: int, cluster_dir: str | None, insecure: bool, metrics: str) -> None:
    """`count` hollow nodes named NAME-i in this process (node_agent/hollow.py)."""

    def credentials_for(name: str) -> ClientCredentials:
        if insecure or not cluster_dir:
            return INSECURE
        pki = os.path.join(cluster_dir, "pki")
        nodes = os.path.join(pki, "nodes")
        return ClientCredentials.from_files(
            os.path.join(pki, "ca.crt"), os.path.join(nodes, f"{name}.crt"), os.path.join(nodes, f"{name}.key")
        )

    registry = CollectorRegistry()
    if metrics:
        host, _, port = metrics.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    fleet = hollow_agents(
        config.name,
        count,
        config.endpoints,
        credentials_for,
        config.data_dir,
        config.heartbeat_interval,
        config.lease_duration,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for start in range(0, count, 50):  # registrations in waves, not a thousand TLS handshakes at once
        await asyncio.gather(*(a.start() for a in fleet[start : start + 50]))
    log.info("%d hollow nodes %s-0..%d running", count, config.name, count - 1)
    await stop.wait()
    await asyncio.gather(*(a.stop() for a in fleet))


@agent.group()
def images() -> None:
    """The node's image store, where the runc runtime finds images."""


_IMAGE_DIR = click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="The agent's --data-dir.")


@images.command("import")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default="", help="The image's reference, when the layout names none (or to rename it).")
@_IMAGE_DIR
def images_import(archive: str, name: str, data_dir: str) -> None:
    """Import ARCHIVE, an OCI image layout tarball (skopeo copy ... oci-archive:FILE)."""
    try:
        references = ImageStore(os.path.join(data_dir, "images")).import_oci(archive, name)
    except ImageError as e:
        raise click.ClickException(str(e)) from None
    for ref in references:
        click.echo(f"imported {ref}")


@images.command("list")
@_IMAGE_DIR
def images_list(data_dir: str) -> None:
    """The references the store holds, and their image ids."""
    store = ImageStore(os.path.join(data_dir, "images"))
    store.ensure_busybox()
    for ref, image_id in store.references().items():
        click.echo(f"{ref}\t{image_id[:19]}")
