"""One master replica (`raftkube server`): the composition root that runs
the replicated store, the API server's gRPC resource service on the same
port (with health checking and reflection), the Kubernetes REST API, and
Prometheus metrics over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from control_plane.apipb import resources_pb2_grpc
from control_plane.apis.errors import ApiError
from control_plane.apiserver import grpc_service, node_service
from control_plane.apiserver.access import Access
from control_plane.apiserver.admission.chain import with_authorization
from control_plane.apiserver.caches import ApiServerCaches
from control_plane.apiserver.components import component_statuses
from control_plane.apiserver.grpc_service import ResourcesService
from control_plane.apiserver.metrics import ApiMetrics
from control_plane.apiserver.node_logs import NodeLogs
from control_plane.apiserver.node_service import NodeService
from control_plane.apiserver.rest import RestApi
from control_plane.apiserver.reviews import Reviews
from control_plane.apiserver.service import ApiService, VirtualLists
from control_plane.apiserver.store_access import store_guard
from control_plane.client import INSECURE, ApiClient, ClientCredentials, resource
from control_plane.nodepb import node_pb2_grpc
from control_plane.security.audit import DEFAULT_POLICY, Auditor, load_policy, parse_policy
from control_plane.security.authn import Authenticator, load_token_file
from control_plane.security.authz import AlwaysAllow, Authorizer, Chain, PrivilegedGroups
from control_plane.security.cluster_dir import ClusterDir
from control_plane.security.node_authorizer import NodeAuthorizer
from control_plane.security.rbac import RbacAuthorizer
from control_plane.security.service_account_tokens import ServiceAccountTokens
from control_plane.security.tls import ServingFiles, grpc_server_credentials, ssl_server_context
from ha.grpc_services import GenericHandlersOnly
from ha.limits import MAX_VALUE_BYTES
from ha.raft_node import RaftConfig
from ha.server import SERVICE_NAMES, StoreServer
from ha.store import Store, StoreOptions

log = logging.getLogger(__name__)

# Room for a maximal value plus the rest of the request.
MAX_MESSAGE_BYTES = MAX_VALUE_BYTES + (2 << 20)


class ConfigError(Exception):
    """The master cannot start as configured; the message says why."""


@dataclass
class SecurityConfig:
    """TLS, authentication, authorization and audit of a master (the
    flags of the same names, kube-apiserver's where it has one)."""

    # Plaintext everywhere and no authentication (everyone is a cluster
    # admin): for experiments and benchmarks on a trusted machine only.
    insecure: bool = False
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    client_ca_file: str = ""
    # This master's client identity towards its own and other masters' gRPC.
    loopback_cert_file: str = ""
    loopback_key_file: str = ""
    token_auth_file: str = ""
    service_account_key_file: str = ""
    service_account_signing_key_file: str = ""
    audit_policy_file: str = ""
    audit_log_path: str = ""
    anonymous_auth: bool = False
    authorization_mode: str = "Node,RBAC"

    @classmethod
    def from_cluster_dir(cls, directory: str, member_id: str, **given: Any) -> SecurityConfig:
        """The files `raftkube init` wrote for this master, unless given."""
        cluster = ClusterDir(directory)
        cert, key = cluster.master_paths(member_id)
        loopback_cert, loopback_key = cluster.loopback_paths(member_id)
        sa_public, sa_private = cluster.sa_paths()
        defaults = {
            "tls_cert_file": cert,
            "tls_private_key_file": key,
            "client_ca_file": cluster.ca_paths()[0],
            "loopback_cert_file": loopback_cert,
            "loopback_key_file": loopback_key,
            "token_auth_file": cluster.tokens_path,
            "service_account_key_file": sa_public,
            "service_account_signing_key_file": sa_private,
            "audit_policy_file": cluster.audit_policy_path,
        }
        return cls(**{**defaults, **{k: v for k, v in given.items() if v not in (None, "")}})

    def check(self) -> None:
        """Refuse a configuration that cannot be served securely, saying why."""
        if self.authorization_mode not in ("Node,RBAC", "RBAC,Node", "RBAC", "AlwaysAllow"):
            raise ConfigError(f"--authorization-mode {self.authorization_mode!r}: want Node,RBAC, RBAC or AlwaysAllow")
        if self.insecure:
            return
        required = {
            "--tls-cert-file": self.tls_cert_file,
            "--tls-private-key-file": self.tls_private_key_file,
            "--client-ca-file": self.client_ca_file,
            "--loopback-cert-file": self.loopback_cert_file,
            "--loopback-key-file": self.loopback_key_file,
        }
        missing = [flag for flag, path in required.items() if not path]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} required (or --cluster-dir, which names them all): the API is served "
                "over TLS only; --insecure serves plaintext with no authentication"
            )
        for flag, path in {
            **required,
            "--token-auth-file": self.token_auth_file,
            "--service-account-key-file": self.service_account_key_file,
            "--service-account-signing-key-file": self.service_account_signing_key_file,
            "--audit-policy-file": self.audit_policy_file,
        }.items():
            if path and not os.path.isfile(path):
                raise ConfigError(f"{flag} {path}: no such file")


@dataclass
class MasterConfig:
    member_id: str
    data_dir: str
    raft_address: str
    grpc_address: str
    # id -> raft address, including or not including this master.
    peers: dict[str, str]
    cluster_secret: str
    # HOST:PORT of the Kubernetes-compatible REST API ("" serves none).
    api_address: str = ""
    metrics_address: str = ""
    election_timeout_min: float = 0.35
    election_timeout_max: float = 0.7
    heartbeat_interval: float = 0.05
    history_revisions: int = 50_000
    # Joining a running cluster (after MemberAdd): no elections before a
    # leader has been heard from.
    join: bool = False
    extra_raft: dict[str, object] = field(default_factory=dict)
    security: SecurityConfig = field(default_factory=lambda: SecurityConfig(insecure=True))

    def raft_config(self) -> RaftConfig:
        addresses = sorted(set(self.peers.values()) | {self.raft_address})
        return RaftConfig(
            self_address=self.raft_address,
            peer_addresses=addresses,
            password=self.cluster_secret,
            data_dir=os.path.join(self.data_dir, "raft"),
            election_timeout_min=self.election_timeout_min,
            election_timeout_max=self.election_timeout_max,
            heartbeat_interval=self.heartbeat_interval,
            leader_fallback_timeout=max(1.0, self.election_timeout_max * 1.5),
            # pysyncobj requires a connection to outlast an election timeout.
            connection_timeout=max(3.5, self.election_timeout_max),
            join=self.join,
            **self.extra_raft,  # type: ignore[arg-type]
        )

    def store_options(self, grpc_address: str) -> StoreOptions:
        members = dict(self.peers)
        members[self.member_id] = self.raft_address
        return StoreOptions(
            member_id=self.member_id,
            grpc_address=grpc_address,
            initial_members=members,
            history_revisions=self.history_revisions,
        )


def read_cluster_secret(path: str | None) -> str:
    why = (
        "Raft peers exchange pickled messages; without a shared secret anyone who can reach "
        "the Raft port can run code on this master"
    )
    if not path:
        raise ConfigError(f"--cluster-secret-file is required: {why}")
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the cluster secret {path}: {e.strerror}") from None
    if len(secret) < 16:
        raise ConfigError(f"the cluster secret in {path} is shorter than 16 characters: {why}")
    return secret


async def run_master(config: MasterConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    # grpc.aio's poller thread and the event loop hand the GIL to each other
    # on every RPC; with Python's default 5 ms switch interval a hand-off can
    # wait that long. (Raft runs on the loop itself; measured on 2 cores, 0.5
    # and 5 ms give the same throughput within the machine's noise.)
    sys.setswitchinterval(float(os.environ.get("RAFTKUBE_SWITCH_INTERVAL", "0.0005")))
    security = config.security
    security.check()
    loopback_credentials = (
        INSECURE
        if security.insecure
        else ClientCredentials.from_files(
            security.client_ca_file, security.loopback_cert_file, security.loopback_key_file
        )
    )
    registry = CollectorRegistry()
    store_server = StoreServer(
        config.raft_config(),
        config.store_options(config.grpc_address),
        registry,
        channel_credentials=loopback_credentials.grpc(),
    )
    grpc_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Lists have no size limit (10,000 pods are ~20 MB), as in Kubernetes.
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
            # Clients ping to notice a master that stopped answering; let them.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 4000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    serving = ServingFiles(security.tls_cert_file, security.tls_private_key_file, security.client_ca_file)
    try:
        if security.insecure:
            port = grpc_server.add_insecure_port(config.grpc_address)
        else:
            port = grpc_server.add_secure_port(config.grpc_address, grpc_server_credentials(serving))
    except (RuntimeError, OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot listen for gRPC on {config.grpc_address}: {e}") from None
    try:
        store = await store_server.start(loop)
    except Exception as e:  # pysyncobj raises bare exceptions when it cannot bind
        raise ConfigError(f"cannot start Raft on {config.raft_address}: {e!r}") from e
    api_metrics = ApiMetrics(registry)
    api_service = ApiService(store, metrics=api_metrics)
    # The API server's own caches, filled through a loopback client as
    # kube-apiserver fills its informers; /readyz waits for them.
    loopback = ApiClient(
        [loopback_address(config.grpc_address, port)],
        user_agent="raftkube-apiserver/loopback",
        credentials=loopback_credentials,
    )
    # Without authentication everyone is an admin: no RBAC or node caches to keep.
    caches = ApiServerCaches(
        loopback, authorization=not security.insecure and security.authorization_mode != "AlwaysAllow"
    )
    access = _access(security, api_service, caches)
    api_service.cache = caches
    store_server.register(grpc_server, wrap=store_guard(access))
    services = GenericHandlersOnly(grpc_server)  # see ha/grpc_services.py
    virtual_lists = {"componentstatuses": functools.partial(component_statuses, api_service, store)}
    resources_pb2_grpc.add_ResourcesServicer_to_server(
        ResourcesService(api_service, api_metrics, virtual_lists=virtual_lists, access=access), services
    )
    node_pb2_grpc.add_NodeServicer_to_server(NodeService(api_service, access), services)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            grpc_service.SERVICE_NAME,
            node_service.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        services,
    )
    await grpc_server.start()
    caches.start()
    metrics_server = None
    if config.metrics_address:
        host, _, metrics_port = config.metrics_address.rpartition(":")
        metrics_server, _thread = start_http_server(int(metrics_port), addr=host or "0.0.0.0", registry=registry)
    log.info(
        "master %s serving gRPC on %s (port %d, %s), Raft on %s",
        config.member_id,
        config.grpc_address,
        port,
        "plaintext, no authentication" if security.insecure else "mTLS",
        config.raft_address,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, lambda: _log_raft_state(store_server))
    health_task = loop.create_task(_report_health(store_server, health_servicer))
    bootstrapped = asyncio.Event()
    node_logs = NodeLogs(loopback_credentials.grpc())
    api_runner = (
        await _start_rest(
            config, api_service, api_metrics, store, virtual_lists, caches, access, bootstrapped, node_logs
        )
        if config.api_address
        else None
    )
    bootstrap_task = loop.create_task(_bootstrap(api_service, bootstrapped))
    _settle_garbage_collector()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("master %s stopping", config.member_id)
        health_task.cancel()
        bootstrap_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health_task
        if api_runner is not None:
            await api_runner.cleanup()
        await caches.stop()
        await node_logs.close()
        await loopback.close()
        await grpc_server.stop(grace=1.0)
        await store_server.stop()
        if access.auditor is not None:
            access.auditor.close()
        if metrics_server is not None:
            metrics_server.shutdown()
        del store


def _access(security: SecurityConfig, service: ApiService, caches: ApiServerCaches) -> Access:
    """Authentication, authorization, admission by identity and audit, as
    configured; --insecure has none of them but the audit log."""
    auditor = None
    if security.audit_log_path:
        policy = load_policy(security.audit_policy_file) if security.audit_policy_file else parse_policy(DEFAULT_POLICY)
        auditor = Auditor(policy, security.audit_log_path)
    if security.client_ca_file:
        with open(security.client_ca_file, encoding="ascii") as f:
            service.root_ca_pem = f.read()
    if security.service_account_key_file:
        service.tokens = ServiceAccountTokens.from_files(
            security.service_account_key_file, security.service_account_signing_key_file or None
        )
    authenticator = None
    if not security.insecure:
        accounts, pods = resource("serviceaccounts"), resource("pods")

        async def account_uid(namespace: str, name: str) -> str | None:
            obj = await service.read(accounts, namespace, name)
            return str(obj["metadata"].get("uid")) if obj is not None else None

        async def pod_uid(namespace: str, name: str) -> str | None:
            obj = await service.read(pods, namespace, name)
            return str(obj["metadata"].get("uid")) if obj is not None else None

        authenticator = Authenticator(
            load_token_file(security.token_auth_file) if security.token_auth_file else {},
            service.tokens,
            account_uid,
            pod_uid,
            anonymous=security.anonymous_auth,
        )
    rbac = None
    if security.authorization_mode == "AlwaysAllow":
        authorizer: Authorizer = AlwaysAllow()
    else:
        rbac = RbacAuthorizer(caches)
        chain: list[Authorizer] = [PrivilegedGroups()]
        if "Node" in security.authorization_mode:
            chain.append(NodeAuthorizer(caches))
        chain.append(rbac)
        authorizer = Chain(chain)
        service.admission = with_authorization(service.admission, rbac, authorizer, caches)
    service.reviews = Reviews(authorizer, rbac, authenticator)
    return Access(authenticator, authorizer, auditor)


async def _start_rest(
    config: MasterConfig,
    service: ApiService,
    metrics: ApiMetrics,
    store: Store,
    virtual_lists: VirtualLists,
    caches: ApiServerCaches,
    access: Access,
    bootstrapped: asyncio.Event,
    node_logs: NodeLogs,
) -> web.AppRunner:
    async def readiness() -> list[tuple[str, bool, str]]:
        status = await store.status()
        unsynced = caches.unsynced()
        return [
            ("store-quorum", status.has_quorum, "this master cannot reach a majority of the store"),
            ("store-leader", bool(status.leader_id), "no store leader is known"),
            ("informer-sync", not unsynced, f"the API server's caches of {', '.join(unsynced)} have not synced"),
            ("poststarthook/rbac/bootstrap-roles", bootstrapped.is_set(), "the default roles are not in place yet"),
        ]

    rest = RestApi(
        service,
        metrics,
        server_address=config.api_address,
        readiness=readiness,
        virtual_lists=virtual_lists,
        access=access,
        node_logs=node_logs,
    )
    runner = web.AppRunner(rest.app, access_log=None)
    await runner.setup()
    host, _, port = config.api_address.rpartition(":")
    security = config.security
    context = (
        None
        if security.insecure
        else ssl_server_context(
            ServingFiles(security.tls_cert_file, security.tls_private_key_file, security.client_ca_file)
        )
    )
    try:
        await web.TCPSite(runner, host or "0.0.0.0", int(port), reuse_address=True, ssl_context=context).start()
    except OSError as e:
        raise ConfigError(f"cannot listen for the API on {config.api_address}: {e.strerror}") from None
    scheme = "http" if context is None else "https"
    log.info("master %s serving the Kubernetes API on %s://%s", config.member_id, scheme, config.api_address)
    return runner


def loopback_address(address: str, port: int) -> str:
    """Where this master reaches its own gRPC port."""
    host = address.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _bootstrap(service: ApiService, done: asyncio.Event) -> None:
    """The system namespaces and the default RBAC policy exist on every
    cluster; any master may create them (creating an existing one is a
    harmless conflict), every master puts back default roles that were
    changed (kube-apiserver's rbac/bootstrap-roles)."""
    while True:
        try:
            await service.ensure_system_namespaces()
            await service.ensure_default_policy()
            done.set()
            return
        except ApiError as e:
            log.debug("bootstrapping: %s", e)
            await asyncio.sleep(0.5)


# Collect the youngest objects every this many net allocations, not 700. A
# young collection walks what is alive, about the same however long it
# waited. Measured on a leader taking 2,300 puts/s with 64k keys: with
# Python's defaults the collector ran 80 times a second, took 4% of the CPU
# and paused the loop up to 100 ms in full collections; with this and the
# freeze below, twice a second, 1% of the CPU, pauses up to 45 ms.
GC_YOUNG_THRESHOLD = 10_000


def _settle_garbage_collector() -> None:
    """What the master built to start (modules, services, the state it
    restored) lives as long as it does: frozen, a full collection no longer
    walks it, only what came after. Frozen objects are still freed by
    reference counting when they die."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _log_raft_state(store_server: StoreServer) -> None:
    node = store_server.node
    if node is None:
        return
    status = node.raft_status()
    log.warning("raft state: role=%s term=%s leader=%s", status["role"], status["term"], status["leader"])
    log.warning("raft state: %s", node.election_state())
    for line in node.transport_state():
        log.warning("raft transport: %s", line)


async def _report_health(store_server: StoreServer, servicer: health.aio.HealthServicer) -> None:
    """SERVING while a leader is known; the store cannot commit without one."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    while True:
        node = store_server.node
        status = serving if node is not None and node.can_propose() else not_serving
        for name in ("", *SERVICE_NAMES, grpc_service.SERVICE_NAME):
            await servicer.set(name, status)
        await asyncio.sleep(0.5)
