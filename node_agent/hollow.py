"""Hollow nodes, as kubemark and KWOK make them: many simulated nodes in one
agent process, for scale tests of the control plane. Each is a real agent
to the masters (its own certificate and identity, its own connection,
registration, heartbeat stream, pod watch and pod status) whose runtime
runs nothing: a container "starts" at once and runs until it is stopped.

This is a simulation: no process, probe target or log exists behind a
hollow pod, so probes are not run (a pod's probes are removed before its
worker sees it) and its log is empty.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

from control_plane.apis.pods import all_containers
from control_plane.client import ClientCredentials
from node_agent.agent import Agent, AgentConfig
from node_agent.runtime import ContainerConfig, ContainerStatus, ContainerTable, State

Object = dict[str, Any]


class HollowRuntime(ContainerTable):
    """Containers that "run" from start until stopped, doing nothing."""

    name = "hollow"
    mounts_volumes = False

    async def ensure_image(self, image: str) -> str:
        return ""

    async def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, str]:
        return 0, ""  # never called: a hollow node's probes are dropped

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        container_id = uuid.uuid4().hex[:16]
        status = ContainerStatus(
            container_id, config.name, config.pod_uid, config.attempt, State.RUNNING, 0, time.time(), log_path=""
        )
        self._track(status)
        return status

    async def _signal(self, status: ContainerStatus, sig: signal.Signals) -> None:
        # Any signal ends a hollow container at once, cleanly.
        if status.state is State.RUNNING:
            status.state, status.finished_at, status.exit_code, status.reason = (
                State.EXITED,
                time.time(),
                0,
                "Completed",
            )
            self._exited[status.id].set()

    async def remove(self, container_id: str) -> None:
        self._untrack(container_id)


class HollowAgent(Agent):
    """An agent whose pods' probes are dropped (nothing could answer them)."""

    sample_logs = False  # its containers write nothing

    def _pod(self, pod: Object, adopted: dict[str, list[Any]]) -> None:
        spec = pod.get("spec") or {}
        for c in all_containers(spec):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                c.pop(probe, None)
        super()._pod(pod, adopted)


def hollow_agents(
    prefix: str,
    count: int,
    endpoints: list[str],
    credentials_for: Any,
    data_dir: str,
    heartbeat_interval: float,
    lease_duration: int,
) -> list[Agent]:
    """`count` hollow agents named prefix-0 ... prefix-(count-1);
    `credentials_for(name) -> ClientCredentials` gives each its identity."""
    agents: list[Agent] = []
    for i in range(count):
        name = f"{prefix}-{i}"
        creds: ClientCredentials = credentials_for(name)
        config = AgentConfig(
            name=name,
            endpoints=endpoints[i % len(endpoints) :] + endpoints[: i % len(endpoints)],  # spread over the masters
            credentials=creds,
            data_dir=os.path.join(data_dir, name),
            heartbeat_interval=heartbeat_interval,
            lease_duration=lease_duration,
            labels={"type": "hollow", "raftkube.io/hollow": "true"},
        )
        agents.append(HollowAgent(config, HollowRuntime()))
    return agents
