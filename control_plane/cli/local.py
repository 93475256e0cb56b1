"""`raftkube up` and `raftkube down`: a whole cluster on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading

import click

from control_plane.local_cluster import AgentSpec, LocalCluster, MasterSpec


def _command_name() -> str:
    """How the user can run this command again: `raftkube` when that is on
    PATH, else the path it was started by (e.g. .venv/bin/raftkube)."""
    invoked = sys.argv[0]
    found = shutil.which("raftkube")
    if found and os.path.realpath(found) == os.path.realpath(invoked):
        return "raftkube"
    if os.path.basename(invoked) == "raftkube":
        return os.path.relpath(invoked)
    return "raftkube"


def grpcurl_flags(cluster: LocalCluster) -> str:
    if not cluster.secure:
        return "-plaintext"
    cert, key = cluster.security.admin_paths()
    return f"-cacert {cluster.security.ca_paths()[0]} -cert {cert} -key {key}"


def describe(cluster: LocalCluster, leader: str) -> str:
    lines = [
        f"raftkube: {len(cluster.masters)} masters and {len(cluster.agents)} node agents are up in "
        f"{cluster.directory} (leader: {leader})",
        "",
    ]
    for m in cluster.masters:
        lines.append(
            f"  {m.id}  API {cluster.scheme}://{m.api_address}  gRPC {m.grpc_address}  Raft {m.raft_address}  "
            f"metrics http://{m.metrics_address}/metrics  log {m.log_path}"
        )
    for a in cluster.agents:
        lines.append(
            f"  {a.id}  node agent ({a.runtime} runtime)  metrics http://{a.metrics_address}/metrics  log {a.log_path}"
        )
    raftkube = _command_name()
    lines += [
        "",
        f"Admin kubeconfig (TLS, client certificate): {cluster.kubeconfig_path}"
        if cluster.secure
        else f"Admin kubeconfig (plaintext, no authentication): {cluster.kubeconfig_path}",
        "",
        "Reach it:",
        f"  kubectl --kubeconfig {cluster.kubeconfig_path} get namespaces",
        f"  {raftkube} store --dir {cluster.directory} status",
        f"  {raftkube} store --dir {cluster.directory} put /hello world",
        f"  grpcurl {grpcurl_flags(cluster)} {cluster.endpoints[0]} list",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--dir", "directory", default=".raftkube", show_default=True, type=click.Path(file_okay=False))
@click.option("--masters", type=click.IntRange(1, 7), default=3, show_default=True)
@click.option(
    "--agents", type=click.IntRange(0, 20), default=2, show_default=True, help="Node agents (process runtime)."
)
@click.option(
    "--runc-agents",
    type=click.IntRange(0, 20),
    default=0,
    show_default=True,
    help="Node agents r1... with the runc runtime (root, Debian's runc; busybox-static gives a busybox image).",
)
@click.option("--detach", is_flag=True, help="Return once the cluster is up; stop it with `raftkube down`.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for a leader.")
def up(directory: str, masters: int, agents: int, runc_agents: int, detach: bool, timeout: float) -> None:
    """Start a local HA cluster: masters and node agents as child processes on loopback."""
    cluster = LocalCluster.create(directory, masters, agents=agents, runc_agents=runc_agents)
    if any(cluster.is_running(m) for m in cluster.masters):
        click.echo(f"raftkube up: a cluster is already running in {cluster.directory}", err=True)
        sys.exit(1)
    cluster.start()
    try:
        leader = cluster.wait_ready(timeout)
        cluster.start_agents()
        cluster.wait_agents(timeout)
    except (TimeoutError, RuntimeError) as e:
        cluster.stop()
        click.echo(f"raftkube up: {e}", err=True)
        sys.exit(1)
    click.echo(describe(cluster, leader))
    if detach:
        click.echo(f"\nStop it with: {_command_name()} down --dir {cluster.directory}")
        return
    click.echo("\nRunning in the foreground; Ctrl-C stops every master.")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        processes: list[MasterSpec | AgentSpec] = [*cluster.masters, *cluster.agents]
        for m in processes:
            if m.pid and not cluster.is_running(m):
                click.echo(f"raftkube up: {m.id} exited; see {m.log_path}", err=True)
                m.pid = 0
    click.echo("stopping...")
    cluster.stop()


@click.command()
@click.option("--dir", "directory", default=".raftkube", show_default=True, type=click.Path(file_okay=False))
def down(directory: str) -> None:
    """Stop a cluster started with `raftkube up`."""
    try:
        cluster = LocalCluster.load(directory)
    except FileNotFoundError:
        click.echo(f"raftkube down: no cluster in {directory}", err=True)
        sys.exit(1)
    cluster.stop()
    click.echo(f"stopped {len(cluster.masters)} masters in {cluster.directory}")
