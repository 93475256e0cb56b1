"""One master's store, assembled: state machine, Raft node, Store, metrics,
and the KV and Cluster gRPC services registered on a server it is given (the
master serves its other APIs on the same port).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from ha.cluster_service import ClusterService
from ha.grpc_services import GenericHandlersOnly
from ha.kv_service import KVService
from ha.metrics import StoreCollector, StoreMetrics
from ha.raft_node import RaftConfig, RaftNode
from ha.state_machine import StateMachine
from ha.store import Store, StoreOptions
from ha.storepb import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
)


class StoreServer:
    def __init__(
        self,
        raft: RaftConfig,
        options: StoreOptions,
        registry: CollectorRegistry,
        channel_credentials: grpc.ChannelCredentials | None = None,
    ):
        self.raft_config = raft
        # How this master calls another's gRPC port (forwarding to the leader).
        self.channel_credentials = channel_credentials
        self.options = options
        self.registry = registry
        self.metrics = StoreMetrics(registry)
        self.state_machine = StateMachine()
        self.node: RaftNode | None = None
        self.store: Store | None = None
        self._cluster_service: ClusterService | None = None

    async def start(self, loop: asyncio.AbstractEventLoop | None = None) -> Store:
        loop = loop or asyncio.get_running_loop()
        metrics = self.metrics

        def applied(index: int) -> None:
            if self.store is not None:
                self.store.on_applied(index)

        def role(name: str) -> None:
            if self.store is not None:
                self.store.on_role_change(name)

        def batch(commands: int, seconds: float) -> None:
            metrics.apply_duration.observe(seconds)

        self.node = RaftNode(
            self.raft_config,
            self.state_machine,
            loop,
            on_applied=applied,
            on_role_change=role,
            on_batch_applied=batch,
        )
        self.store = Store(self.node, self.state_machine, self.options, metrics, loop)
        self.registry.register(StoreCollector(self.store.gauges))
        self.store.start()
        return self.store

    def register(self, server: grpc.aio.Server, wrap: Callable[[Any], Any] | None = None) -> None:
        """Serve KV and Cluster on `server`; `wrap`, if given, stands each
        servicer in for the master's access checks (the store knows no
        users: that is the API server's business)."""
        assert self.store is not None, "start() first"
        wrap = wrap or (lambda servicer: servicer)
        generic = GenericHandlersOnly(server)
        kv_pb2_grpc.add_KVServicer_to_server(wrap(KVService(self.store)), generic)
        self._cluster_service = ClusterService(self.store, self.channel_credentials)
        cluster_pb2_grpc.add_ClusterServicer_to_server(wrap(self._cluster_service), generic)

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()
        if self._cluster_service is not None:
            await self._cluster_service.close()
        if self.node is not None:
            self.node.stop()
