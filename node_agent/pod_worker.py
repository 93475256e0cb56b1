"""One pod's life on its node, as the kubelet's pod worker lives it: init
containers in order, then the containers; restarts by restartPolicy with
CrashLoopBackOff (10 s doubling to 5 min, forgotten after 10 min of
running); startup, liveness and readiness probes; graceful deletion
(SIGTERM, the grace period, SIGKILL); and the pod's status (phase,
conditions, containerStatuses) reported whenever it changes.

The worker never raises out of its loop: whatever fails is a reason in the
status (CreateContainerConfigError, RunContainerError, ...) and the pod is
tried again, so one bad pod cannot stop the agent serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING
from typing import Any

from control_plane.apis.quantity import parse_quantity
from node_agent.environment import ConfigError, Lookup, container_env
from node_agent.metrics import AgentMetrics
from node_agent.probes import Prober, ProbeSpec, run_probe
from node_agent.runtime import ContainerConfig, ContainerStatus, Mount, Runtime, StartFailed, State
from node_agent.volumes import TokenRequest, VolumeError, Volumes, mounts_for

log = logging.getLogger(__name__)
Object = dict[str, Any]

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0  # running this long forgets past crashes
VOLUME_RESYNC = 60.0  # configMap, secret and downwardAPI files follow their sources this often (the kubelet: ~1 min)


def _quantity(value: Any, scale: int = 1) -> int:
    """A resource quantity as an integer (bytes, or millicores with scale 1000), rounded up."""
    if value in (None, ""):
        return 0
    return int((parse_quantity(value) * scale).to_integral_value(rounding=ROUND_CEILING))


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class Container:
    """What the worker knows of one container of the pod."""

    spec: Object
    init: bool = False
    current: ContainerStatus | None = None
    last: ContainerStatus | None = None
    restarts: int = 0
    backoff: float = 0.0  # the next restart's wait
    delay: float = 0.0  # the wait in effect
    not_before: float = 0.0  # backing off until
    waiting: tuple[str, str] = ("ContainerCreating", "")
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    probes: list[asyncio.Task[None]] = field(default_factory=list)
    done: bool = False  # will not run again (restart policy)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))


@dataclass
class Node:
    """What the worker needs of its agent."""

    name: str
    host_ip: str
    runtime: Runtime
    pod_dir: Callable[[str], str]
    lookup: Lookup
    report: Callable[[Object, Object], Awaitable[None]]  # (pod, status)
    stopped: Callable[[Object], Awaitable[None]]  # the pod has stopped: end its deletion
    request_token: TokenRequest
    metrics: AgentMetrics | None = None


class PodWorker:
    def __init__(self, node: Node, pod: Object, pod_ip: str):
        self.node = node
        self.pod = pod
        self.pod_ip = pod_ip
        self.uid = str(pod["metadata"]["uid"])
        spec = pod.get("spec") or {}
        self.containers = [Container(c, init=True) for c in spec.get("initContainers") or ()] + [
            Container(c) for c in spec.get("containers") or ()
        ]
        self.started_at = time.time()
        self._seen = time.perf_counter()
        self._start_observed = False
        self.gone = False  # deleted from the API without a graceful stop
        self._wake = asyncio.Event()
        self._reported: Object | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self.volumes = Volumes(node.pod_dir(self.uid), node.lookup, node.request_token)
        self._volumes_synced = 0.0  # when the volumes were last brought up to date (0: never set up)

    # -- inputs -----------------------------------------------------------------------------

    def update(self, pod: Object) -> None:
        self.pod = pod
        self._wake.set()

    def removed(self) -> None:
        self.gone = True
        self._wake.set()

    def adopt(self, running: list[ContainerStatus]) -> None:
        """Containers a previous agent started for this pod."""
        for status in running:
            for c in self.containers:
                if c.name == status.name and (c.current is None or status.attempt > c.current.attempt):
                    c.current, c.restarts = status, status.attempt
                    c.started = True
                    if status.state is State.RUNNING:
                        self._watch_exit(c)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                deleting = self.gone or bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))
                if deleting:
                    await self._terminate()
                    return
                try:
                    await self._sync()
                except Exception:
                    log.exception("pod %s: sync failed", self._key)
                await self._publish()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_timer()):
                        await self._wake.wait()
        finally:
            for c in self.containers:
                self._stop_probes(c)

    @property
    def _key(self) -> str:
        meta = self.pod.get("metadata") or {}
        return f"{meta.get('namespace')}/{meta.get('name')}"

    def _next_timer(self) -> float:
        now = time.time()
        waits = [c.not_before - now for c in self.containers if c.not_before > now]
        return max(0.05, min([*waits, 5.0]))

    @property
    def _policy(self) -> str:
        return str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")

    async def _refresh_volumes(self) -> None:
        """Running containers see their volumes follow their sources, and a
        projected token renewed before it expires."""
        if not self._volumes_synced:
            return
        now = time.time()
        token_due = self.volumes.refresh_due()
        if now - self._volumes_synced < VOLUME_RESYNC and not (token_due and now >= token_due):
            return
        try:
            await self.volumes.prepare(self._pod_with_ips())
        except VolumeError as e:
            log.info("pod %s: volumes not refreshed: %s", self._key, e)
        self._volumes_synced = now

    async def _sync(self) -> None:
        await self._refresh_volumes()
        now = time.time()
        for c in self.containers:
            if c.done:  # ended for good, as its restart policy says
                if c.init and c.last is not None and c.last.exit_code != 0:
                    return  # the pod failed at an init container: nothing after it runs
                continue
            if c.current is not None and c.current.state is State.RUNNING:
                if c.init:
                    return  # an init container runs alone, to its end
                if now - c.current.started_at > BACKOFF_RESET_AFTER:
                    c.backoff = 0.0
                continue
            if c.current is not None and c.current.state is State.EXITED:
                self._exited(c)
                if c.done:
                    if c.init and c.last is not None and c.last.exit_code != 0:
                        return  # the pod failed at an init container
                    continue
            if c.not_before > time.time():  # (now was before _exited set the back-off)
                if c.waiting[0] in ("ErrImagePull", "ImagePullBackOff"):
                    c.waiting = ("ImagePullBackOff", f'Back-off pulling image "{c.spec.get("image", "")}"')
                elif c.waiting[0] not in ("CreateContainerConfigError", "ContainerCreating"):
                    c.waiting = (
                        "CrashLoopBackOff",
                        f"back-off {c.delay:g}s restarting failed container={c.name} pod={self._pod_name()}",
                    )
                if c.init:
                    return
                continue
            await self._start(c)
            if c.init:
                return

    def _exited(self, c: Container) -> None:
        """A container ended: keep it as last state; decide whether it runs again."""
        assert c.current is not None
        ended = c.current
        c.last, c.current = ended, None
        c.ready = False
        self._stop_probes(c)
        failed = ended.exit_code != 0
        policy = self._policy
        # An init container runs again only after a failure; the others as the policy says.
        again = (failed and policy != "Never") if c.init else (policy == "Always" or (policy == "OnFailure" and failed))
        if not again:
            c.done = True
            return
        # Restart at once the first time, then back off: 10 s, 20 s, ... 5 min.
        c.delay = c.backoff
        c.not_before = time.time() + c.delay
        c.backoff = min(BACKOFF_MAX, c.backoff * 2) if c.backoff else BACKOFF_INITIAL
        c.restarts += 1

    def _pod_name(self) -> str:
        meta = self.pod.get("metadata") or {}
        return f"{meta.get('name')}_{meta.get('namespace')}({self.uid})"

    async def _start(self, c: Container) -> None:
        """Start one container, in the kubelet's order: the image, the
        volumes, the environment; each failure is the container's waiting
        reason and it is tried again later."""
        spec = c.spec
        image = str(spec.get("image", ""))
        try:
            await self.node.runtime.ensure_image(image)
        except StartFailed as e:
            self._failed_start(c, e.reason, e.message)
            return
        mounts: list[Mount] = []
        if self.node.runtime.mounts_volumes:
            try:
                mounts = mounts_for(spec, await self.volumes.prepare(self._pod_with_ips()))
                self._volumes_synced = time.time()
            except VolumeError as e:
                c.waiting = ("ContainerCreating", str(e))
                c.not_before = time.time() + 2.0  # what it mounts may appear: look again soon
                return
        meta = self.pod.get("metadata") or {}
        base = {"HOSTNAME": str(meta.get("name", "")), "POD_IP": self.pod_ip}
        try:
            env = await container_env(self._pod_with_ips(), spec, self.node.lookup, base)
        except ConfigError as e:
            c.waiting = ("CreateContainerConfigError", str(e))
            c.not_before = time.time() + 2.0  # configuration may appear: look again soon
            return
        pod_dir = self.node.pod_dir(self.uid)
        resources = spec.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        pod_security = (self.pod.get("spec") or {}).get("securityContext") or {}
        security = {**pod_security, **(spec.get("securityContext") or {})}
        config = ContainerConfig(
            pod_uid=self.uid,
            pod_namespace=str(meta.get("namespace", "")),
            pod_name=str(meta.get("name", "")),
            name=c.name,
            attempt=c.restarts,
            command=[str(a) for a in spec.get("command") or ()],
            args=[str(a) for a in spec.get("args") or ()],
            env=env,
            working_dir=str(spec.get("workingDir") or ""),
            scratch_dir=os.path.join(pod_dir, "containers", c.name),
            log_path=os.path.join(pod_dir, "logs", c.name, f"{c.restarts}.log"),
            image=image,
            memory_limit_bytes=_quantity(limits.get("memory")),
            cpu_limit_millis=_quantity(limits.get("cpu"), 1000),
            cpu_request_millis=_quantity(requests.get("cpu"), 1000),
            mounts=mounts,
            run_as_user=security.get("runAsUser"),
            run_as_group=security.get("runAsGroup"),
            hostname=str((self.pod.get("spec") or {}).get("hostname") or meta.get("name", "")),
            pod_ip=self.pod_ip,
        )
        began = time.perf_counter()
        try:
            c.current = await self.node.runtime.start(config)
        except StartFailed as e:
            self._failed_start(c, e.reason, e.message)
            return
        c.waiting = ("", "")
        if self.node.metrics is not None:
            self.node.metrics.runtime_operations.labels("start_container").observe(time.perf_counter() - began)
        log.info("pod %s: started container %s (attempt %d)", self._key, c.name, c.restarts)
        self._watch_exit(c)
        self._start_probes(c)

    @staticmethod
    def _failed_start(c: Container, reason: str, message: str) -> None:
        """Back off before trying again: 10 s doubling to 5 min, as for a crash."""
        c.waiting = (reason, message)
        c.not_before = time.time() + c.backoff
        c.backoff = min(BACKOFF_MAX, c.backoff * 2) if c.backoff else BACKOFF_INITIAL

    def _watch_exit(self, c: Container) -> None:
        assert c.current is not None
        container_id = c.current.id

        async def waiter() -> None:
            await self.node.runtime.wait(container_id)
            self._wake.set()

        asyncio.get_running_loop().create_task(waiter())

    # -- probes -----------------------------------------------------------------------------

    def _start_probes(self, c: Container) -> None:
        ports = {str(p["name"]): int(p["containerPort"]) for p in c.spec.get("ports") or () if p.get("name")}
        container_id = c.current.id if c.current else ""

        async def exec_in(argv: list[str], timeout: float) -> tuple[int, str]:
            return await self.node.runtime.exec(container_id, argv, timeout)

        def probe_with(spec: ProbeSpec, kind: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
            async def probe() -> tuple[bool, str]:
                result = await run_probe(spec.handler, spec.timeout, self.pod_ip, exec_in, ports)
                if self.node.metrics is not None:
                    self.node.metrics.probes.labels(kind, "successful" if result[0] else "failed").inc()
                return result

            return probe

        startup = c.spec.get("startupProbe")
        liveness = c.spec.get("livenessProbe")
        readiness = c.spec.get("readinessProbe")
        c.started = startup is None
        c.ready = readiness is None and c.started and not c.init

        def on_startup(ok: bool, message: str) -> None:
            if ok:
                c.started = True
                c.ready = readiness is None
                start_gated()
            else:
                self._kill(c, container_id, f"Startup probe failed: {message}")
            self._wake.set()

        def on_liveness(ok: bool, message: str) -> None:
            if not ok:
                self._kill(c, container_id, f"Liveness probe failed: {message}")

        def on_readiness(ok: bool, message: str) -> None:
            c.ready = ok and c.started
            self._wake.set()

        def start_gated() -> None:
            loop = asyncio.get_running_loop()
            if liveness:
                spec = ProbeSpec.parse(liveness)
                c.probes.append(loop.create_task(Prober(spec, probe_with(spec, "Liveness"), on_liveness, True).run()))
            if readiness:
                spec = ProbeSpec.parse(readiness)
                c.probes.append(loop.create_task(Prober(spec, probe_with(spec, "Readiness"), on_readiness).run()))

        if c.init:
            return
        if startup:
            spec = ProbeSpec.parse(startup)
            prober = Prober(spec, probe_with(spec, "Startup"), on_startup)
            c.probes.append(asyncio.get_running_loop().create_task(prober.run()))
        else:
            start_gated()

    def _kill(self, c: Container, container_id: str, why: str) -> None:
        """A probe gave up on the container: stop it; the restart policy decides what next."""
        log.info("pod %s: container %s: %s; restarting it", self._key, c.name, why)
        grace = float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        self._stop_probes(c)
        asyncio.get_running_loop().create_task(self.node.runtime.stop(container_id, grace))

    @staticmethod
    def _stop_probes(c: Container) -> None:
        for task in c.probes:
            task.cancel()
        c.probes.clear()

    # -- deletion ----------------------------------------------------------------------------

    async def _terminate(self) -> None:
        meta = self.pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        running = [c for c in self.containers if c.current is not None and c.current.state is State.RUNNING]
        for c in self.containers:
            self._stop_probes(c)
        began = time.perf_counter()
        await asyncio.gather(*(self.node.runtime.stop(c.current.id, float(grace)) for c in running if c.current))
        if self.node.metrics is not None and running:
            self.node.metrics.runtime_operations.labels("stop_container").observe(time.perf_counter() - began)
        for c in running:
            if c.current is not None and c.current.state is State.EXITED:
                c.last, c.current, c.done, c.ready = c.current, None, True, False
        for c in self.containers:
            c.done = True
        if not self.gone:
            await self._publish()
            await self.node.stopped(self.pod)
        for status in self.node.runtime.containers():
            if status.pod_uid == self.uid and status.state is State.EXITED:
                await self.node.runtime.remove(status.id)
        self.volumes.clean_up()
        log.info("pod %s: stopped", self._key)

    # -- status ------------------------------------------------------------------------------

    def _pod_with_ips(self) -> Object:
        pod = dict(self.pod)
        pod["status"] = {**(self.pod.get("status") or {}), "podIP": self.pod_ip, "hostIP": self.node.host_ip}
        return pod

    def status(self) -> Object:
        spec = self.pod.get("spec") or {}
        init = [c for c in self.containers if c.init]
        main = [c for c in self.containers if not c.init]
        initialized = all(c.done and c.last is not None and c.last.exit_code == 0 for c in init)
        init_failed = any(c.done and c.last is not None and c.last.exit_code != 0 for c in init)
        ready = initialized and all(c.ready for c in main)
        if init_failed:
            phase = "Failed"
        elif main and all(c.done for c in main) and initialized:
            phase = "Failed" if any(c.last is not None and c.last.exit_code != 0 for c in main) else "Succeeded"
        elif initialized and all(c.current is not None or c.last is not None for c in main):
            phase = "Running"
        else:
            phase = "Pending"
        previous = self.pod.get("status") or {}
        status: Object = {
            "phase": phase,
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("Initialized", initialized),
                self._condition("ContainersReady", ready),
                self._condition("Ready", ready),
            ],
            "hostIP": self.node.host_ip,
            "hostIPs": [{"ip": self.node.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": rfc3339(self.started_at),
            "containerStatuses": [self._container_status(c) for c in main],
        }
        if init:
            status["initContainerStatuses"] = [self._container_status(c) for c in init]
        if previous.get("qosClass"):
            status["qosClass"] = previous["qosClass"]
        if spec.get("readinessGates"):
            status["conditions"].append(self._condition("ReadinessGatesNotSupported", False))
        return status

    def _condition(self, kind: str, true: bool) -> Object:
        value = "True" if true else "False"
        since, was = self._transitions.get(kind, ("", ""))
        if was != value:
            since = rfc3339(time.time())
            self._transitions[kind] = (since, value)
        return {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since}

    def _container_status(self, c: Container) -> Object:
        out: Object = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "ready": c.ready and not c.init,
            "restartCount": c.restarts,
            "started": c.current is not None and c.current.state is State.RUNNING and c.started,
            "lastState": {"terminated": self._terminated(c.last)}
            if c.last is not None and c.current is not None
            else {},
        }
        if c.current is not None and c.current.state is State.RUNNING:
            out["containerID"] = f"{self.node.runtime.name}://{c.current.id}"
            out["state"] = {"running": {"startedAt": rfc3339(c.current.started_at)}}
        elif c.current is not None:  # ended, and the worker has not yet looked (the runtime is cleaning up)
            out["containerID"] = f"{self.node.runtime.name}://{c.current.id}"
            out["state"] = {"terminated": self._terminated(c.current)}
        elif c.current is None and c.last is not None and (c.done or not c.waiting[0]):
            out["containerID"] = f"{self.node.runtime.name}://{c.last.id}"
            out["state"] = {"terminated": self._terminated(c.last)}
        else:
            reason, message = c.waiting
            waiting: Object = {"reason": reason or "ContainerCreating"}
            if message:
                waiting["message"] = message
            out["state"] = {"waiting": waiting}
            if c.last is not None:
                out["lastState"] = {"terminated": self._terminated(c.last)}
        return out

    def _terminated(self, s: ContainerStatus) -> Object:
        return {
            "exitCode": s.exit_code,
            "reason": s.reason or ("Completed" if s.exit_code == 0 else "Error"),
            "startedAt": rfc3339(s.started_at),
            "finishedAt": rfc3339(s.finished_at),
            "containerID": f"{self.node.runtime.name}://{s.id}",
        }

    async def _publish(self) -> None:
        status = self.status()
        started = status["phase"] == "Running" and all("running" in c["state"] for c in status["containerStatuses"])
        if started and not self._start_observed and self.node.metrics is not None:
            self._start_observed = True
            self.node.metrics.pod_start.observe(time.perf_counter() - self._seen)
        if status == self._reported:
            return
        try:
            await self.node.report(self.pod, status)
            self._reported = status
        except Exception as e:  # the master may be away: the next loop reports again
            log.info("pod %s: status not reported yet: %s", self._key, e)
