"""`raftkube server`: run one master replica."""

from __future__ import annotations

import sys
from typing import Any

import click
import uvloop

from control_plane.logs import setup_logging
from control_plane.master import ConfigError, MasterConfig, SecurityConfig, read_cluster_secret, run_master
from control_plane.security.cluster_dir import ClusterDir


def parse_peers(values: tuple[str, ...]) -> dict[str, str]:
    peers: dict[str, str] = {}
    for value in values:
        member_id, sep, address = value.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not member_id or not colon or not host or not port.isdigit():
            raise click.BadParameter(f"{value!r} is not ID=HOST:PORT", param_hint="--peer")
        peers[member_id] = address
    return peers


@click.command()
@click.option("--id", "member_id", required=True, help="This master's name, unique in the cluster.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="Where the Raft log lives.")
@click.option("--raft-address", required=True, help="HOST:PORT for Raft traffic between masters.")
@click.option("--grpc-address", required=True, help="HOST:PORT for the gRPC APIs.")
@click.option("--peer", "peers", multiple=True, help="ID=HOST:PORT of another master's Raft address (repeat).")
@click.option("--cluster-secret-file", type=click.Path(dir_okay=False), help="The secret all masters share.")
@click.option("--metrics-address", default="", help="HOST:PORT to serve Prometheus /metrics on.")
@click.option("--api-address", default="", help="HOST:PORT to serve the Kubernetes REST API on (HTTPS).")
@click.option("--election-timeout-min", default=0.35, show_default=True, help="Seconds.")
@click.option("--election-timeout-max", default=0.7, show_default=True, help="Seconds.")
@click.option("--heartbeat-interval", default=0.05, show_default=True, help="Seconds.")
@click.option("--history-revisions", default=50_000, show_default=True, help="Revisions kept for watches.")
@click.option(
    "--snapshot-entries",
    default=5000,
    show_default=True,
    help="Snapshot the state and compact the Raft log after this many log entries (etcd's --snapshot-count).",
)
@click.option(
    "--snapshot-interval", default=300.0, show_default=True, help="...or after this many seconds, if shorter."
)
@click.option(
    "--join",
    is_flag=True,
    help="This master is being added to a running cluster (after `store member-add`): "
    "it stands for election only after it has heard from the leader.",
)
@click.option(
    "--cluster-dir",
    type=click.Path(file_okay=False),
    help="A directory `raftkube init` wrote: every security file below defaults to its copy there "
    "(and --cluster-secret-file to its cluster-secret).",
)
@click.option("--tls-cert-file", default="", help="This master's serving certificate (PEM).")
@click.option("--tls-private-key-file", default="", help="Its key.")
@click.option("--client-ca-file", default="", help="The CA client certificates must chain to.")
@click.option("--loopback-cert-file", default="", help="This master's client certificate towards masters.")
@click.option("--loopback-key-file", default="", help="Its key.")
@click.option("--token-auth-file", default="", help='Bearer tokens: token,user,uid,"group,..." per line.')
@click.option("--service-account-key-file", default="", help="Public key that verifies service-account tokens.")
@click.option("--service-account-signing-key-file", default="", help="Private key that signs them.")
@click.option("--audit-policy-file", default="", help="audit.k8s.io/v1 Policy (default: Metadata for all).")
@click.option("--audit-log-path", default="", help="Where audit events go, a JSON line each (- for stdout).")
@click.option("--anonymous-auth", is_flag=True, help="Serve requests without credentials as system:anonymous.")
@click.option(
    "--authorization-mode",
    type=click.Choice(["Node,RBAC", "RBAC", "AlwaysAllow"]),
    default="Node,RBAC",
    show_default=True,
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext HTTP and gRPC, no authentication, everyone a cluster admin: only for experiments "
    "on a trusted machine.",
)
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def server(
    member_id: str,
    data_dir: str,
    raft_address: str,
    grpc_address: str,
    peers: tuple[str, ...],
    cluster_secret_file: str | None,
    metrics_address: str,
    api_address: str,
    election_timeout_min: float,
    election_timeout_max: float,
    heartbeat_interval: float,
    history_revisions: int,
    snapshot_entries: int,
    snapshot_interval: float,
    join: bool,
    cluster_dir: str | None,
    tls_cert_file: str,
    tls_private_key_file: str,
    client_ca_file: str,
    loopback_cert_file: str,
    loopback_key_file: str,
    token_auth_file: str,
    service_account_key_file: str,
    service_account_signing_key_file: str,
    audit_policy_file: str,
    audit_log_path: str,
    anonymous_auth: bool,
    authorization_mode: str,
    insecure: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run one master replica of the cluster."""
    setup_logging(log_level, log_format)
    if not election_timeout_min > 3 * heartbeat_interval or not election_timeout_max > election_timeout_min:
        raise click.BadParameter(
            "need heartbeat-interval * 3 < election-timeout-min < election-timeout-max",
            param_hint="--election-timeout-min",
        )
    given: dict[str, Any] = {
        "insecure": insecure,
        "tls_cert_file": tls_cert_file,
        "tls_private_key_file": tls_private_key_file,
        "client_ca_file": client_ca_file,
        "loopback_cert_file": loopback_cert_file,
        "loopback_key_file": loopback_key_file,
        "token_auth_file": token_auth_file,
        "service_account_key_file": service_account_key_file,
        "service_account_signing_key_file": service_account_signing_key_file,
        "audit_policy_file": audit_policy_file,
        "audit_log_path": audit_log_path,
        "anonymous_auth": anonymous_auth,
        "authorization_mode": authorization_mode,
    }
    security = (
        SecurityConfig.from_cluster_dir(cluster_dir, member_id, **given) if cluster_dir else SecurityConfig(**given)
    )
    if cluster_dir and not cluster_secret_file:
        cluster_secret_file = ClusterDir(cluster_dir).secret_path
    try:
        config = MasterConfig(
            member_id=member_id,
            data_dir=data_dir,
            raft_address=raft_address,
            grpc_address=grpc_address,
            peers=parse_peers(peers),
            cluster_secret=read_cluster_secret(cluster_secret_file),
            metrics_address=metrics_address,
            api_address=api_address,
            election_timeout_min=election_timeout_min,
            election_timeout_max=election_timeout_max,
            heartbeat_interval=heartbeat_interval,
            history_revisions=history_revisions,
            join=join,
            extra_raft={"log_compaction_min_entries": snapshot_entries, "log_compaction_min_time": snapshot_interval},
            security=security,
        )
        # uvloop: grpc.aio and the Raft sockets share this loop, and its
        # per-event cost is what the master's throughput is made of.
        uvloop.run(run_master(config))
    except ConfigError as e:
        click.echo(f"raftkube server: {e}", err=True)
        sys.exit(2)
