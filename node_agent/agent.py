"""The node agent: registration, the heartbeat stream, the watch of the
node's pods and a worker per pod, all over the node protocol to any
master, moving to the next master when one stops answering.

Heartbeats and the pod watch run on separate streams, so a pod storm never
delays a lease renewal. A watch that breaks resumes from the last
resourceVersion through another master; a 410 lists again, and pods that
vanished meanwhile are stopped.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import grpc

from control_plane.apis import codec
from control_plane.apis.errors import ApiError
from control_plane.client import ApiClient, ClientCredentials, resource
from control_plane.client.api import open_channel
from control_plane.nodepb import node_pb2 as pb
from control_plane.nodepb import node_pb2_grpc
from node_agent.host import node_object
from node_agent.log_times import SAMPLE_EVERY, LogClock
from node_agent.metrics import AgentMetrics
from node_agent.pod_worker import Node, PodWorker
from node_agent.runtime import Runtime, State

log = logging.getLogger(__name__)
Object = dict[str, Any]

EVENT_NAMES = {v: k.removeprefix("EVENT_TYPE_") for k, v in pb.EventType.items()}


@dataclass
class AgentConfig:
    name: str
    endpoints: list[str]
    credentials: ClientCredentials
    data_dir: str
    node_ip: str = "127.0.0.1"
    heartbeat_interval: float = 10.0
    lease_duration: int = 40
    status_interval: float = 60.0
    labels: dict[str, str] = field(default_factory=dict)
    # The port the agent serves logs on (Node.status.daemonEndpoints).
    port: int = 0


class Masters:
    """gRPC channels to every master, and which one is in use."""

    def __init__(self, endpoints: list[str], credentials: ClientCredentials, metrics: AgentMetrics | None = None):
        self.metrics = metrics
        self.endpoints = endpoints
        self.credentials = credentials.grpc()
        self.current = 0
        self.switches = 0
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def stub(self) -> node_pb2_grpc.NodeStub:
        endpoint = self.endpoint
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = open_channel(endpoint, self.credentials)
        return node_pb2_grpc.NodeStub(channel)

    def move_on(self, failed: str) -> None:
        if self.endpoint == failed and len(self.endpoints) > 1:
            self.current = (self.current + 1) % len(self.endpoints)
            self.switches += 1
            if self.metrics is not None:
                self.metrics.master_switches.inc()
            log.info("moving to master %s", self.endpoint)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class Agent:
    sample_logs = True  # note when log lines came (for --since and --timestamps)

    def __init__(self, config: AgentConfig, runtime: Runtime, metrics: AgentMetrics | None = None):
        self.config = config
        self.runtime = runtime
        self.metrics = metrics
        self.masters = Masters(config.endpoints, config.credentials, metrics)
        self.api = ApiClient(
            config.endpoints, credentials=config.credentials, user_agent=f"raftkube-agent/{config.name}"
        )
        self.workers: dict[str, tuple[PodWorker, asyncio.Task[None]]] = {}
        self.resource_version = ""
        self.registered = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.node = Node(
            name=config.name,
            host_ip=config.node_ip,
            runtime=runtime,
            pod_dir=self.pod_dir,
            lookup=self._lookup,
            report=self._report,
            stopped=self._stopped,
            request_token=self._request_token,
            metrics=metrics,
        )
        if metrics is not None:
            metrics.watch_running(self._running)

    async def _note_log_growth(self) -> None:
        """Every second, how far each container's log has grown (node_agent/log_times.py)."""
        clock = LogClock()
        final: set[str] = set()
        while True:
            containers = self.runtime.containers()
            final &= {s.id for s in containers}
            for status in containers:
                if not status.log_path or status.id in final:
                    continue
                clock.sample(status.log_path)
                if status.state is State.EXITED:  # a last look: nothing more will come
                    final.add(status.id)
                    clock.forget(status.log_path)
            await asyncio.sleep(SAMPLE_EVERY)

    def pod_dir(self, uid: str) -> str:
        return os.path.join(self.config.data_dir, "pods", uid)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        watch_adopted = getattr(self.runtime, "watch_adopted", None)
        if watch_adopted is not None:
            watch_adopted()
        await self._register()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeats()),
            loop.create_task(self._watch_pods()),
            loop.create_task(self._refresh_status()),
        ]
        if self.sample_logs:
            self._tasks.append(loop.create_task(self._note_log_growth()))

    async def stop(self) -> None:
        """Stop talking to the masters; the containers keep running (a
        restarted agent adopts them), as a kubelet's do."""
        for task in self._tasks:
            task.cancel()
        for _, task in list(self.workers.values()):
            task.cancel()
        for task in [*self._tasks, *(t for _, t in self.workers.values())]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.masters.close()
        await self.api.close()

    async def _call(self, what: str, call: Any) -> Any:
        """A unary call, through the next master when one is unavailable."""
        delay = 0.05
        while True:
            endpoint = self.masters.endpoint
            try:
                return await call(self.masters.stub())
            except grpc.aio.AioRpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                log.info("%s through %s failed (%s); trying the next master", what, endpoint, e.code().name)
                self.masters.move_on(endpoint)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _register(self) -> None:
        node = node_object(
            self.config.name, self.config.node_ip, self.config.port, self.runtime.name, self.config.labels
        )
        request = pb.RegisterRequest(node=codec.dumps(node))
        await self._call("register", lambda stub: stub.Register(request, timeout=10))
        self.registered.set()
        log.info("node %s registered", self.config.name)

    async def _refresh_status(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval)
            try:
                await self._register()
            except grpc.aio.AioRpcError as e:
                log.warning("node status not updated: %s", e.details())

    # -- heartbeats --------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            endpoint = self.masters.endpoint
            try:
                await self._heartbeat_stream(endpoint)
            except grpc.aio.AioRpcError as e:
                log.info("heartbeats through %s stopped (%s); moving on", endpoint, e.code().name)
            except TimeoutError:
                log.info("heartbeats through %s went unanswered; moving on", endpoint)
            self.masters.move_on(endpoint)
            await asyncio.sleep(0.05)

    async def _heartbeat_stream(self, endpoint: str) -> None:
        beats: asyncio.Queue[pb.HeartbeatRequest] = asyncio.Queue()

        async def requests() -> Any:
            while True:
                yield await beats.get()

        call = self.masters.stub().Heartbeat(requests())
        interval = self.config.heartbeat_interval
        while True:
            sent = time.perf_counter()
            await beats.put(pb.HeartbeatRequest(lease_duration_seconds=self.config.lease_duration))
            try:
                # An answer slower than the interval: this master is not keeping up.
                async with asyncio.timeout(max(interval, 2.0)):
                    answer = await call.read()
            except TimeoutError:
                call.cancel()
                raise
            if answer is grpc.aio.EOF:
                return
            if self.metrics is not None:
                self.metrics.heartbeat.observe(time.perf_counter() - sent)
            await asyncio.sleep(interval)

    # -- pods ---------------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        adopted: dict[str, list[Any]] = {}
        for status in self.runtime.containers():
            adopted.setdefault(status.pod_uid, []).append(status)
        listing = True
        listed: set[str] = set()
        while True:
            endpoint = self.masters.endpoint
            try:
                stream = self.masters.stub().WatchPods(pb.WatchPodsRequest(resource_version=self.resource_version))
                async for event in stream:
                    kind = EVENT_NAMES.get(event.type, "")
                    obj = codec.loads(event.object)
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            self.resource_version, listing = "", True
                            listed = set()
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion", "")
                    if kind == "BOOKMARK":
                        if listing:  # the list is over: what was not in it is gone
                            await self._forget_unlisted(listed, adopted)
                            listing = False
                    elif kind == "DELETED":
                        self._removed(obj)
                    else:
                        listed.add(obj["metadata"]["uid"])
                        self._pod(obj, adopted)
                    if rv:
                        self.resource_version = rv
            except grpc.aio.AioRpcError as e:
                log.info("the pod watch through %s ended (%s); watching again", endpoint, e.code().name)
                self.masters.move_on(endpoint)
                await asyncio.sleep(0.1)

    async def _forget_unlisted(self, listed: set[str], adopted: dict[str, list[Any]]) -> None:
        for uid in [u for u in self.workers if u not in listed]:
            self.workers[uid][0].removed()
        for uid, statuses in list(adopted.items()):
            if uid not in listed:  # a pod deleted while no agent ran
                for status in statuses:
                    if status.state is State.RUNNING:
                        await self.runtime.stop(status.id, 0)
                    await self.runtime.remove(status.id)
                adopted.pop(uid)

    def _pod(self, pod: Object, adopted: dict[str, list[Any]]) -> None:
        uid = str(pod["metadata"]["uid"])
        known = self.workers.get(uid)
        if known is not None:
            known[0].update(pod)
            return
        if _finished(pod) and uid not in adopted:
            return  # done before this agent started: nothing to run
        worker = PodWorker(self.node, pod, self._pod_ip(uid))
        worker.adopt(adopted.pop(uid, []))
        task = asyncio.get_running_loop().create_task(worker.run())
        task.add_done_callback(lambda _: self.workers.pop(uid, None))
        self.workers[uid] = (worker, task)

    def _removed(self, pod: Object) -> None:
        known = self.workers.get(str(pod["metadata"].get("uid")))
        if known is not None:
            known[0].removed()

    def _pod_ip(self, uid: str) -> str:
        """A loopback address of the pod's own, kept across agent restarts:
        127.<from the node's name>.<from the pod's uid>, so two pods may
        listen on the same port."""
        path = os.path.join(self.pod_dir(uid), "ip")
        with contextlib.suppress(OSError), open(path, encoding="ascii") as f:
            return f.read().strip()
        used = {w.pod_ip for w, _ in self.workers.values()}
        second = 10 + zlib.crc32(self.config.name.encode()) % 240
        seed = zlib.crc32(uid.encode())
        for i in range(65_000):
            n = (seed + i) % 65_024 + 256
            ip = f"127.{second}.{n >> 8}.{n & 255}"
            if ip not in used:
                break
        os.makedirs(self.pod_dir(uid), exist_ok=True)
        with open(path, "w", encoding="ascii") as f:
            f.write(ip)
        return ip

    # -- what workers ask of the masters ----------------------------------------------------------

    async def _report(self, pod: Object, status: Object) -> None:
        meta = pod["metadata"]
        request = pb.UpdatePodStatusRequest(
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], status=codec.dumps(status)
        )
        await self._call("pod status", lambda stub: stub.UpdatePodStatus(request, timeout=10))

    async def _stopped(self, pod: Object) -> None:
        meta = pod["metadata"]
        request = pb.PodStoppedRequest(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
        try:
            await self._call("pod stopped", lambda stub: stub.PodStopped(request, timeout=10))
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED):
                raise

    async def _lookup(self, kind: str, namespace: str, name: str) -> Object | None:
        try:
            obj: Object = await self.api.get(resource(kind), name, namespace)
            return obj
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    async def _request_token(
        self, namespace: str, account: str, pod: str, uid: str, audience: str, seconds: int
    ) -> tuple[str, float]:
        """A service-account token bound to the pod (the Node authorizer lets
        a node ask only for its own pods' accounts)."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
            },
        }
        answer = await self.api.create_subresource(resource("serviceaccounts"), account, "token", request, namespace)
        status = answer.get("status") or {}
        expires = status.get("expirationTimestamp")
        at = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ")) if expires else time.time() + seconds
        return str(status.get("token", "")), float(at)

    def _running(self) -> tuple[int, int]:
        running = [s for s in self.runtime.containers() if s.state is State.RUNNING]
        return len({s.pod_uid for s in running}), len(running)


def _finished(pod: Object) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
