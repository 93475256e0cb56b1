"""Container runtimes behind one interface, as the kubelet's CRI: the pod
workers say what to run, a runtime runs it and reports what became of it.
Nothing above this package knows which runtime it talks to."""

from __future__ import annotations

import asyncio
import enum
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class State(enum.Enum):
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True)
class Mount:
    """A volume, prepared on the host, and where the container sees it."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass
class ContainerConfig:
    """What a container runs: a process, its environment and where its
    output goes."""

    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str
    attempt: int  # restarts so far: each attempt logs to a file of its own
    command: list[str]  # the pod's command: replaces the image's entrypoint
    args: list[str]  # the pod's args: replace the image's cmd
    env: dict[str, str]  # what the pod spec and the agent define (the image's come under it)
    working_dir: str  # the pod's workingDir; "" is the image's (or, with no image, scratch_dir)
    scratch_dir: str  # a host directory that is the container's own
    log_path: str
    image: str = ""
    memory_limit_bytes: int = 0
    cpu_limit_millis: int = 0
    cpu_request_millis: int = 0
    mounts: list[Mount] = field(default_factory=list)
    run_as_user: int | None = None
    run_as_group: int | None = None
    hostname: str = ""
    pod_ip: str = ""


def command_line(config: ContainerConfig, entrypoint: Sequence[str] = (), cmd: Sequence[str] = ()) -> list[str]:
    """The process a container runs, by Kubernetes' rules: command replaces
    the image's entrypoint (and drops its cmd), args replace its cmd."""
    if config.command:
        return [*config.command, *config.args]
    return [*entrypoint, *(config.args or cmd)]


@dataclass
class ContainerStatus:
    id: str
    name: str
    pod_uid: str
    attempt: int
    state: State
    pid: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    # Why it ended, as Kubernetes says it: Completed, Error, OOMKilled,
    # ContainerStatusUnknown (it ended while no agent watched it).
    reason: str = ""
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class StartFailed(Exception):
    """A container could not be started; `reason` is the Kubernetes waiting
    reason (RunContainerError, ErrImagePull, ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class ContainerTable:
    """What every runtime keeps of its containers: their statuses, an event
    set when each ends, and the graceful stop (SIGTERM, the grace period,
    SIGKILL) over the runtime's own way of signalling (`_signal`)."""

    def __init__(self) -> None:
        self._status: dict[str, ContainerStatus] = {}
        self._exited: dict[str, asyncio.Event] = {}

    def _track(self, status: ContainerStatus) -> None:
        self._status[status.id] = status
        self._exited[status.id] = asyncio.Event()
        if status.state is State.EXITED:
            self._exited[status.id].set()

    def _untrack(self, container_id: str) -> None:
        status = self._status.get(container_id)
        if status is not None and status.state is State.RUNNING:
            raise ValueError(f"container {container_id} is running: stop it first")
        self._status.pop(container_id, None)
        self._exited.pop(container_id, None)

    async def _signal(self, status: ContainerStatus, sig: signal.Signals) -> None:
        raise NotImplementedError

    async def stop(self, container_id: str, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after the grace period; returns once it has exited."""
        status = self._status.get(container_id)
        if status is None or status.state is State.EXITED:
            return
        await self._signal(status, signal.SIGTERM)
        try:
            async with asyncio.timeout(max(grace_seconds, 0.0)):
                await self._exited[container_id].wait()
            return
        except TimeoutError:
            pass
        await self._signal(status, signal.SIGKILL)
        await self._exited[container_id].wait()

    def status(self, container_id: str) -> ContainerStatus | None:
        return self._status.get(container_id)

    def containers(self) -> list[ContainerStatus]:
        return list(self._status.values())

    async def wait(self, container_id: str) -> ContainerStatus:
        await self._exited[container_id].wait()
        return self._status[container_id]


class Runtime(Protocol):
    name: str
    mounts_volumes: bool  # False: the pod's volumes are not prepared (the process runtime)

    async def ensure_image(self, image: str) -> str:
        """The image's id; StartFailed (ErrImagePull) when the node cannot have it."""
        ...

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        """Create and start a container; StartFailed when it cannot run."""
        ...

    async def stop(self, container_id: str, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after the grace period; returns once it has exited."""
        ...

    async def remove(self, container_id: str) -> None: ...

    def status(self, container_id: str) -> ContainerStatus | None: ...

    def containers(self) -> list[ContainerStatus]:
        """Every container this runtime knows, the ones a previous agent
        started included (adopted)."""
        ...

    async def wait(self, container_id: str) -> ContainerStatus:
        """Returns once the container has exited."""
        ...

    async def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, str]:
        """Run a command in a running container, in its environment (an exec
        probe): its exit code and the end of its output; TimeoutError past
        `timeout`."""
        ...
