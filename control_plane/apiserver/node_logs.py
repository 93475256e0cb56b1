"""`pods/log` for a scheduled pod: the API server asks the pod's node agent
for the log over gRPC (the agent's `Agent` service, at the node's
InternalIP and daemonEndpoints port) as this master's loopback identity,
and streams it on, as kube-apiserver streams logs from the kubelet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from control_plane.apis import errors
from control_plane.apis.errors import ApiError
from control_plane.client.api import open_channel
from control_plane.nodepb import node_pb2 as pb
from control_plane.nodepb import node_pb2_grpc

Object = dict[str, Any]


@dataclass
class LogOptions:
    follow: bool = False
    previous: bool = False
    tail_lines: int = 0
    since_seconds: int = 0
    timestamps: bool = False
    limit_bytes: int = 0


def agent_address(node: Object) -> str:
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    address = next((a["address"] for a in status.get("addresses") or () if a.get("type") == "InternalIP"), "")
    if not port or not address:
        return ""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class NodeLogs:
    def __init__(self, credentials: grpc.ChannelCredentials | None):
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> node_pb2_grpc.AgentStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self.credentials, options=())
        return node_pb2_grpc.AgentStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def stream(
        self, node: Object, namespace: str, pod: str, uid: str, container: str, opts: LogOptions
    ) -> AsyncIterator[bytes]:
        name = (node.get("metadata") or {}).get("name", "")
        address = agent_address(node)
        if not address:
            raise errors.unavailable(f'node "{name}" publishes no agent endpoint to read logs from')
        request = pb.LogsRequest(
            namespace=namespace,
            pod=pod,
            container=container,
            follow=opts.follow,
            previous=opts.previous,
            tail_lines=opts.tail_lines,
            since_seconds=opts.since_seconds,
            timestamps=opts.timestamps,
            limit_bytes=opts.limit_bytes,
            pod_uid=uid,
        )
        try:
            async for chunk in self._stub(address).Logs(request, timeout=None if opts.follow else 30):
                yield chunk.data
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise errors.bad_request(e.details() or "not found") from None
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise errors.bad_request(e.details() or "") from None
            if code == grpc.StatusCode.CANCELLED:
                return
            raise ApiError(
                502 if code != grpc.StatusCode.UNAVAILABLE else 503,
                "ServiceUnavailable" if code == grpc.StatusCode.UNAVAILABLE else "InternalError",
                f'cannot read the log from node "{name}" ({address}): {e.details()}',
            ) from None
