"""Container runtimes behind one interface, as the kubelet's CRI: the pod
workers say what to run, a runtime runs it and reports what became of it.
Nothing above this package knows which runtime it talks to."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class State(enum.Enum):
    RUNNING = "running"
    EXITED = "exited"


@dataclass
class ContainerConfig:
    """What a container runs: a process, its environment and where its
    output goes."""

    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str
    attempt: int  # restarts so far: each attempt logs to a file of its own
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    log_path: str
    image: str = ""
    memory_limit_bytes: int = 0
    cpu_limit_millis: int = 0


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


class Runtime(Protocol):
    name: str

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
