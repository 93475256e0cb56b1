"""GenericHandlersOnly: services registered through it are served, unary and
streaming, without grpc.aio's registered methods."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ha.grpc_services import GenericHandlersOnly


class _Recorder:
    def __init__(self, server: grpc.aio.Server):
        self.server = server
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        self.registered.append(service)


def test_generated_registration_reaches_only_the_generic_handlers() -> None:
    async def main() -> None:
        control = _Recorder(grpc.aio.server())
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), control)
        assert control.registered == ["grpc.health.v1.Health"]  # what generated code does on its own

        recorder = _Recorder(grpc.aio.server())
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), GenericHandlersOnly(recorder))
        assert recorder.registered == []

    asyncio.run(main())


def test_unary_and_streaming_calls_are_served() -> None:
    async def main() -> None:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, GenericHandlersOnly(server))
        port = GenericHandlersOnly(server).add_insecure_port("127.0.0.1:0")  # everything else passes through
        await server.start()
        try:
            await servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service="svc"), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                stream = stub.Watch(health_pb2.HealthCheckRequest(service="svc"), timeout=5)
                first = await stream.read()
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                stream.cancel()
        finally:
            await server.stop(0)

    asyncio.run(main())
