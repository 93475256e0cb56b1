"""Baselines for the store benchmark, each serving the same KV gRPC Put and
Range as raftkube, so the load generator and the client cost are identical:

- `dict`: the ceiling. One process, a plain dict, no Raft, no disk.
- `pysyncobj`: bare pysyncobj 0.3.17 with its default settings (one
  replicated `put` method per write, no password, batching as shipped), one
  process per member, writes sent to its leader.

Run as `python -m bench.baseline_servers dict|pysyncobj ...`; prints
"ready" when it serves. Not part of raftkube: only the benchmark uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import grpc
import uvloop

from ha.grpc_services import GenericHandlersOnly
from ha.storepb import kv_pb2, kv_pb2_grpc


class DictKV(kv_pb2_grpc.KVServicer):
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.revision = 0

    async def Put(self, request: kv_pb2.PutRequest, context: object) -> kv_pb2.PutResponse:
        self.data[request.key] = request.value
        self.revision += 1
        return kv_pb2.PutResponse(header=kv_pb2.ResponseHeader(revision=self.revision))

    async def Range(self, request: kv_pb2.RangeRequest, context: object) -> kv_pb2.RangeResponse:
        value = self.data.get(request.key)
        resp = kv_pb2.RangeResponse(header=kv_pb2.ResponseHeader(revision=self.revision))
        if value is not None:
            resp.kvs.add(key=request.key, value=value)
        return resp


def make_pysyncobj_kv(self_address: str, partners: list[str], data_dir: str) -> kv_pb2_grpc.KVServicer:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Store(SyncObj):
        def __init__(self) -> None:
            conf = SyncObjConf(
                journalFile=os.path.join(data_dir, "journal"), fullDumpFile=os.path.join(data_dir, "dump")
            )
            super().__init__(self_address, partners, conf)
            self.data: dict[bytes, bytes] = {}

        @replicated
        def put(self, key: bytes, value: bytes) -> int:
            self.data[key] = value
            return len(self.data)

    store = Store()
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

    class PysyncobjKV(kv_pb2_grpc.KVServicer):
        async def Put(self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext) -> kv_pb2.PutResponse:
            loop = loop_holder.setdefault("loop", asyncio.get_running_loop())
            fut: asyncio.Future[int] = loop.create_future()

            def done(result: int, err: int) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            store.put(request.key, request.value, callback=done)
            err = await fut
            if err != 0:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"pysyncobj error {err}")
            return kv_pb2.PutResponse()

        async def Range(self, request: kv_pb2.RangeRequest, context: object) -> kv_pb2.RangeResponse:
            return kv_pb2.RangeResponse(header=kv_pb2.ResponseHeader(revision=1 if store._isLeader() else 0))

    return PysyncobjKV()


def _settle(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


async def serve(servicer: kv_pb2_grpc.KVServicer, address: str) -> None:
    server = grpc.aio.server()
    kv_pb2_grpc.add_KVServicer_to_server(servicer, GenericHandlersOnly(server))  # as a master registers it
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["dict", "pysyncobj"])
    parser.add_argument("--grpc-address", required=True)
    parser.add_argument("--raft-address")
    parser.add_argument("--partner", action="append", default=[])
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    if args.kind == "dict":
        servicer: kv_pb2_grpc.KVServicer = DictKV()
    else:
        os.makedirs(args.data_dir, exist_ok=True)
        servicer = make_pysyncobj_kv(args.raft_address, args.partner, args.data_dir)
    # The same event loop as a raftkube master, so the front end is the same.
    uvloop.run(serve(servicer, args.grpc_address))
    sys.exit(0)


if __name__ == "__main__":
    main()
