"""The Cluster gRPC service: a thin adapter from ha/storepb/cluster.proto to
Store. Requests only the leader can serve (leadership transfer, removing the
leader) are forwarded to it over gRPC, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ha.errors import NotLeader, StoreError
from ha.grpc_status import abort_with
from ha.store import Store
from ha.storepb import cluster_pb2, cluster_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")
FORWARDED = "raftkube-forwarded"


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, store: Store, channel_credentials: grpc.ChannelCredentials | None = None):
        self.store = store
        self.channel_credentials = channel_credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def _serve(
        self,
        context: Any,
        method: Callable[[Req], Awaitable[Resp]],
        request: Req,
        forward: str | None = None,
    ) -> Resp:
        try:
            return await method(request)
        except NotLeader as e:
            forwarded = any(k == FORWARDED for k, _ in context.invocation_metadata() or ())
            address = self._grpc_address(e.leader_id)
            if forward is None or forwarded or not address:
                await abort_with(context, e)
                raise
            stub = cluster_pb2_grpc.ClusterStub(self._channel(address))
            try:
                return await getattr(stub, forward)(request, metadata=((FORWARDED, "1"),), timeout=30)
            except grpc.aio.AioRpcError as rpc_error:
                await context.abort(rpc_error.code(), f"forwarded to the leader: {rpc_error.details()}")
                raise
        except StoreError as e:
            await abort_with(context, e)
            raise

    def _grpc_address(self, member_id: str | None) -> str:
        for m in self.store.members():
            if m.id == member_id:
                return m.grpc_address
        return ""

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            if self.channel_credentials is None:
                self._channels[address] = grpc.aio.insecure_channel(address)
            else:
                self._channels[address] = grpc.aio.secure_channel(address, self.channel_credentials)
        return self._channels[address]

    async def Status(self, request: cluster_pb2.StatusRequest, context: Any) -> cluster_pb2.StatusResponse:
        return await self._serve(context, lambda _: self.store.status(), request)

    async def MemberList(self, request: cluster_pb2.MemberListRequest, context: Any) -> cluster_pb2.MemberListResponse:
        return await self._serve(context, lambda _: self.store.member_list(), request)

    async def MemberAdd(self, request: cluster_pb2.MemberAddRequest, context: Any) -> cluster_pb2.MemberAddResponse:
        return await self._serve(context, self.store.member_add, request, forward="MemberAdd")

    async def MemberRemove(
        self, request: cluster_pb2.MemberRemoveRequest, context: Any
    ) -> cluster_pb2.MemberRemoveResponse:
        return await self._serve(context, self.store.member_remove, request, forward="MemberRemove")

    async def TransferLeadership(
        self, request: cluster_pb2.TransferLeadershipRequest, context: Any
    ) -> cluster_pb2.TransferLeadershipResponse:
        return await self._serve(context, self.store.transfer_leadership, request, forward="TransferLeadership")

    async def HashKV(self, request: cluster_pb2.HashKVRequest, context: Any) -> cluster_pb2.HashKVResponse:
        return await self._serve(context, lambda _: self.store.hash_kv(), request)
