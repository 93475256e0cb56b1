"""The agent's own gRPC service (`Agent` in proto/control_plane/nodepb):
container logs for the masters, which stream them on to `kubectl logs`, as
kube-apiserver does from the kubelet. Only cluster components may call it
(a client certificate in system:masters: the masters' loopback identity)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import grpc

from control_plane.nodepb import node_pb2 as pb
from control_plane.nodepb import node_pb2_grpc
from node_agent.log_times import Stamper, offset_since, read_times
from node_agent.pod_worker import PodWorker
from node_agent.runtime import State

CHUNK = 64 << 10
FOLLOW_POLL = 0.2


def _groups(context: grpc.aio.ServicerContext) -> list[str]:
    subject = (context.auth_context() or {}).get("x509_subject") or [b""]
    return [part[2:] for part in next(iter(subject)).decode().split(",") if part.startswith("O=")]


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogService(node_pb2_grpc.AgentServicer):
    def __init__(self, workers: Callable[[], list[PodWorker]], trusted_group: str = "system:masters"):
        self.workers = workers
        self.trusted_group = trusted_group

    async def Logs(self, request: pb.LogsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.LogChunk]:
        if self.trusted_group not in _groups(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the masters may read logs from the agent")
        worker = next(
            (
                w
                for w in self.workers()
                if w.pod["metadata"].get("namespace") == request.namespace
                and w.pod["metadata"].get("name") == request.pod
                and (not request.pod_uid or w.uid == request.pod_uid)
            ),
            None,
        )
        if worker is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f'pod "{request.pod}" is not running on this node')
            return
        container = next((c for c in worker.containers if c.name == request.container), None)
        if container is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f'container "{request.container}" is not in pod "{request.pod}"'
            )
            return
        if request.previous:
            status = container.last
            if status is None or (container.current is None and container.done):
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f'previous terminated container "{request.container}" in pod "{request.pod}" not found',
                )
                return
        else:
            status = container.current or container.last
        if status is None or not os.path.exists(status.log_path):
            return  # not started yet: nothing logged
        since = time.time() - request.since_seconds if request.since_seconds > 0 else None
        notes = read_times(status.log_path) if since is not None or request.timestamps else []
        with open(status.log_path, "rb") as f:
            f.seek(offset_since(notes, since) if since is not None else 0)
            data = _tail(f.read(), request.tail_lines)
            stamper = Stamper(notes, f.tell() - len(data)) if request.timestamps else None
            sent = 0
            while True:
                if stamper is not None:
                    data = stamper.stamp(data)
                if request.limit_bytes and sent + len(data) > request.limit_bytes:
                    data = data[: request.limit_bytes - sent]
                for i in range(0, len(data), CHUNK):
                    yield pb.LogChunk(data=data[i : i + CHUNK])
                sent += len(data)
                if request.limit_bytes and sent >= request.limit_bytes:
                    return
                running = status.state is State.RUNNING and container.current is status
                if not request.follow or not running:
                    rest = f.read()  # what came before it stopped
                    if rest and request.follow:
                        data = rest
                        continue
                    return
                await asyncio.sleep(FOLLOW_POLL)
                data = f.read()
