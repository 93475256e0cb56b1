"""The `process` runtime: a container is a child process of the agent, in a
process group of its own (so a stop reaches everything it started), with
its output in a log file per attempt. It works everywhere and isolates
nothing: no image is unpacked (the command runs on the host), and volumes
are not mounted (runc does both).

Each container's state is kept in a small JSON file, so an agent that
restarts finds the processes it started still running and adopts them
instead of starting them twice (checked by pid and process start time, so
a recycled pid is not mistaken for them). An adopted process is no longer
the agent's child: when it ends, its exit code is unknown, and it is
reported as Kubernetes reports that (ContainerStatusUnknown, 137).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict

from node_agent.runtime import ContainerConfig, ContainerStatus, ContainerTable, StartFailed, State, command_line

log = logging.getLogger(__name__)
ADOPTED_POLL = 0.5


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat
    field 22), which tells a process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        if fields[0] == "Z":  # a zombie has exited
            return None
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _run_as(uid: int | None, gid: int | None) -> Callable[[], None] | None:
    """securityContext.runAsUser/runAsGroup for the child (uvloop takes no user= or group=)."""
    if uid is None and gid is None:
        return None

    def switch() -> None:
        if gid is not None:
            os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    return switch


def save_record(path: str, status: ContainerStatus, start_ticks: int) -> None:
    """A container's state file, replaced atomically (what adoption reads)."""
    record = {**asdict(status), "state": status.state.value, "start_ticks": start_ticks}
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def load_record(path: str) -> tuple[ContainerStatus, int] | None:
    """A state file's container and its process start time; None (logged) if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        ticks = int(record.pop("start_ticks", 0))
        record["state"] = State(record["state"])
        return ContainerStatus(**record), ticks
    except (OSError, ValueError, TypeError, KeyError):
        log.warning("ignoring an unreadable container state file %s", path)
        return None


class ProcessRuntime(ContainerTable):
    name = "process"
    mounts_volumes = False

    def __init__(self, state_dir: str):
        super().__init__()
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        self._ticks: dict[str, int] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The environment and directory each container runs in, for exec probes (an
        # adopted container's are not known: they run with the agent's PATH).
        self._env: dict[str, tuple[dict[str, str], str]] = {}
        self._adopt()

    # -- state files ------------------------------------------------------------------------

    def _path(self, container_id: str) -> str:
        return os.path.join(self.state_dir, f"{container_id}.json")

    def _save(self, status: ContainerStatus) -> None:
        save_record(self._path(status.id), status, self._ticks.get(status.id, 0))

    def _adopt(self) -> None:
        for entry in sorted(os.listdir(self.state_dir)):
            if not entry.endswith(".json"):
                continue
            loaded = load_record(os.path.join(self.state_dir, entry))
            if loaded is None:
                continue
            status, ticks = loaded
            self._track(status)
            if status.state is State.RUNNING:
                if status.pid and start_ticks(status.pid) == ticks:
                    self._ticks[status.id] = ticks
                    log.info("adopted container %s (pid %d) of pod %s", status.name, status.pid, status.pod_uid)
                else:
                    self._ended(status, 137, "ContainerStatusUnknown")

    def watch_adopted(self) -> None:
        """Follow the adopted processes until they end (needs a running loop)."""
        loop = asyncio.get_running_loop()
        for status in self._status.values():
            if status.state is State.RUNNING and status.id not in self._procs:
                task = loop.create_task(self._poll_adopted(status))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _poll_adopted(self, status: ContainerStatus) -> None:
        ticks = self._ticks.get(status.id)
        while start_ticks(status.pid) == ticks:
            await asyncio.sleep(ADOPTED_POLL)
        self._ended(status, 137, "ContainerStatusUnknown")

    def _ended(self, status: ContainerStatus, code: int, reason: str = "") -> None:
        status.state = State.EXITED
        status.finished_at = time.time()
        status.exit_code = code
        status.reason = reason or ("Completed" if code == 0 else "Error")
        self._save(status)
        self._exited.setdefault(status.id, asyncio.Event()).set()

    # -- Runtime ----------------------------------------------------------------------------

    async def ensure_image(self, image: str) -> str:
        return ""  # commands run on the host: there is no image to have

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        argv = command_line(config)
        if not argv:
            raise StartFailed(
                "RunContainerError", "the process runtime runs a container's command: this container has none"
            )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **config.env}
        program = argv[0]
        if shutil.which(program, path=env["PATH"]) is None:
            raise StartFailed(
                "RunContainerError",
                f'failed to start container "{config.name}": exec: "{program}": executable file not found in $PATH',
            )
        working_dir = config.working_dir or config.scratch_dir
        os.makedirs(os.path.dirname(config.log_path), exist_ok=True)
        os.makedirs(working_dir, exist_ok=True)
        with open(config.log_path, "ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=working_dir,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_run_as(config.run_as_user, config.run_as_group),
                )
            except OSError as e:
                raise StartFailed("RunContainerError", f'failed to start container "{config.name}": {e}') from None
        container_id = uuid.uuid4().hex[:16]
        status = ContainerStatus(
            id=container_id,
            name=config.name,
            pod_uid=config.pod_uid,
            attempt=config.attempt,
            state=State.RUNNING,
            pid=proc.pid,
            started_at=time.time(),
            log_path=config.log_path,
        )
        self._env[container_id] = (env, working_dir)
        self._ticks[container_id] = start_ticks(proc.pid) or 0
        self._track(status)
        self._procs[container_id] = proc
        self._save(status)
        task = asyncio.get_running_loop().create_task(self._reap(status, proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return status

    async def _reap(self, status: ContainerStatus, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(status.pid, signal.SIGKILL)  # what it left behind in its group goes with it
        # A signal is reported as 128 + its number, as a shell (and Kubernetes) reports it.
        self._ended(status, 128 - code if code < 0 else code)
        self._procs.pop(status.id, None)

    async def _signal(self, status: ContainerStatus, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(status.pid, sig)  # the whole group: what the container started goes too

    async def remove(self, container_id: str) -> None:
        self._untrack(container_id)
        self._env.pop(container_id, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(container_id))

    async def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, str]:
        env, cwd = self._env.get(container_id, ({"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, ""))
        return await run_command(argv, env, timeout, cwd)


async def run_command(argv: list[str], env: dict[str, str] | None, timeout: float, cwd: str = "") -> tuple[int, str]:
    """Run a command to its end or its timeout (then kill its process
    group): its exit code and the last 200 characters of its output."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd if cwd and os.path.isdir(cwd) else None,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    code = proc.returncode if proc.returncode is not None else -1
    return (128 - code if code < 0 else code), output.decode(errors="replace")[-200:]


def kill_all(state_dir: str) -> int:
    """SIGKILL the process groups of every container still running that a
    ProcessRuntime in `state_dir` started (what `raftkube down` does to
    the containers agents leave behind); how many there were."""
    killed = 0
    for entry in os.listdir(state_dir) if os.path.isdir(state_dir) else ():
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(state_dir, entry), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        pid = int(record.get("pid") or 0)
        if record.get("state") == State.RUNNING.value and pid and start_ticks(pid) == record.get("start_ticks"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
    return killed


if __name__ == "__main__":  # python -m node_agent.runtime.process kill-all STATE_DIR
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "kill-all":
        sys.exit("usage: python -m node_agent.runtime.process kill-all STATE_DIR")
    print(f"killed {kill_all(sys.argv[2])} containers")
