"""The KV gRPC service: a thin adapter from ha/storepb/kv.proto to Store.

Semantics live in Store; this only maps errors (ha.grpc_status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ha.errors import StoreError
from ha.grpc_status import abort_with
from ha.store import Store
from ha.storepb import kv_pb2, kv_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def call_store(context: grpc.aio.ServicerContext, method: Callable[[Req], Awaitable[Resp]], request: Req) -> Resp:
    try:
        return await method(request)
    except StoreError as e:
        await abort_with(context, e)
        raise  # abort raises; this line is never reached


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, store: Store):
        self.store = store

    async def Range(self, request: kv_pb2.RangeRequest, context: Any) -> kv_pb2.RangeResponse:
        return await call_store(context, self.store.range, request)

    async def Put(self, request: kv_pb2.PutRequest, context: Any) -> kv_pb2.PutResponse:
        return await call_store(context, self.store.put, request)

    async def DeleteRange(self, request: kv_pb2.DeleteRangeRequest, context: Any) -> kv_pb2.DeleteRangeResponse:
        return await call_store(context, self.store.delete_range, request)

    async def Txn(self, request: kv_pb2.TxnRequest, context: Any) -> kv_pb2.TxnResponse:
        return await call_store(context, self.store.txn, request)

    async def Compact(self, request: kv_pb2.CompactionRequest, context: Any) -> kv_pb2.CompactionResponse:
        return await call_store(context, self.store.compact, request)

    async def Watch(self, request: kv_pb2.WatchRequest, context: Any) -> AsyncIterator[kv_pb2.WatchResponse]:
        try:
            async for response in self.store.watch(request):
                yield response
        except StoreError as e:
            await abort_with(context, e)

    async def LeaseGrant(self, request: kv_pb2.LeaseGrantRequest, context: Any) -> kv_pb2.LeaseGrantResponse:
        return await call_store(context, self.store.lease_grant, request)

    async def LeaseRevoke(self, request: kv_pb2.LeaseRevokeRequest, context: Any) -> kv_pb2.LeaseRevokeResponse:
        return await call_store(context, self.store.lease_revoke, request)

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[kv_pb2.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[kv_pb2.LeaseKeepAliveResponse]:
        async for request in request_iterator:
            yield await call_store(context, self.store.lease_keep_alive, request)

    async def LeaseTimeToLive(
        self, request: kv_pb2.LeaseTimeToLiveRequest, context: Any
    ) -> kv_pb2.LeaseTimeToLiveResponse:
        return await call_store(context, self.store.lease_time_to_live, request)
