"""The `runc` runtime: each container is a real OCI container run by
Debian's runc, from an image in the node's image store (node_agent/images.py).

- Its root filesystem is an overlay of the image's (read-only, shared) and
  a writable layer of its own, or a copy where overlayfs cannot be mounted.
- It gets its own pid, mount, UTS and IPC namespaces. The network is the
  node's, as for the process runtime: the pod listens on its own loopback
  address (POD_IP), which the agent's probes reach.
- resources.limits become its cgroup's memory limit (swap the same, so a
  container cannot swap past it) and CPU quota; requests.cpu its CPU shares.
  cgroup v1 and v2 both work: runc writes the files; the runtime only
  reads the OOM-kill counter (memory.oom_control or memory.events).
- volumes are bind-mounted where the pod's volumeMounts say.

A container runs under a small shell shim in a session of its own,
`runc run --keep` followed by writing runc's exit status to a file, so
the exit code outlives the agent: a restarted agent adopts the running
ones and still learns how each one ended. An exit preceded by an OOM kill
in the container's cgroup is reported as Kubernetes reports it: OOMKilled,
137. A SIGKILL from outside is 137 with reason Error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from typing import Any

from node_agent.images import BUSYBOX, ImageStore
from node_agent.runtime import ContainerConfig, ContainerStatus, ContainerTable, StartFailed, State, command_line
from node_agent.runtime.process import load_record, run_command, save_record, start_ticks

log = logging.getLogger(__name__)
ADOPTED_POLL = 0.5
CGROUP_PARENT = "/raftkube"
STARTED_WITHIN = 10.0  # runc creates a container in tens of milliseconds; this is a hang
# Docker's default capability set (runc's own default is narrower than what images expect).
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]  # fmt: skip


class Cgroups:
    """Where this host's cgroups are, to read what runc's cgroup saw."""

    def __init__(self) -> None:
        self.v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        self.memory_root = "/sys/fs/cgroup" if self.v2 else _v1_mount("memory") or "/sys/fs/cgroup/memory"
        if self.v2:
            own = _own_v2_cgroup()
            self.swap = os.path.exists(os.path.join("/sys/fs/cgroup", own.lstrip("/"), "memory.swap.max"))
        else:
            self.swap = os.path.exists(os.path.join(self.memory_root, "memory.memsw.limit_in_bytes"))

    def oom_kills(self, cgroup: str) -> int:
        directory = os.path.join(self.memory_root, cgroup.lstrip("/"))
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            with open(os.path.join(directory, name), encoding="ascii") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0


def _v1_mount(controller: str) -> str | None:
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] == "cgroup" and controller in fields[-1].split(","):
                return fields[4]
    return None


def _own_v2_cgroup() -> str:
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def runc_usable(runc: str = "runc") -> str:
    """Why runc cannot run containers here, or "" when it can."""
    if shutil.which(runc) is None:
        return f"{runc} is not installed (Debian package runc)"
    if os.geteuid() != 0:
        return "runc needs root here (rootless containers are not set up)"
    return ""


def runc_works(work_dir: str, runc: str = "runc") -> str:
    """Why runc cannot run a busybox container on this machine ("" when it
    can): tried for real, with a memory limit, in `work_dir`."""
    why = runc_usable(runc)
    if why:
        return why
    images = ImageStore(os.path.join(work_dir, "images"))
    if images.ensure_busybox() is None:
        return f"no static busybox at {BUSYBOX} (Debian package busybox-static)"

    async def attempt() -> str:
        runtime = RuncRuntime(os.path.join(work_dir, "runc"), images, runc)
        config = ContainerConfig(
            pod_uid="probe", pod_namespace="", pod_name="probe", name="probe", attempt=0, command=["true"],
            args=[], env={}, working_dir="", scratch_dir=work_dir, log_path=os.path.join(work_dir, "probe.log"),
            image="busybox", memory_limit_bytes=64 << 20,
        )  # fmt: skip
        try:
            status = await runtime.wait((await runtime.start(config)).id)
        except StartFailed as e:
            return f"runc cannot start a container here: {e.message}"
        await runtime.remove(status.id)
        return "" if status.exit_code == 0 else f"a runc container of `true` exited {status.exit_code}"

    return asyncio.run(attempt())


class RuncRuntime(ContainerTable):
    name = "runc"
    mounts_volumes = True

    def __init__(self, state_dir: str, images: ImageStore, runc: str = "runc"):
        super().__init__()
        self.state_dir = os.path.abspath(state_dir)
        self.images = images
        self.runc = [runc, "--root", os.path.join(self.state_dir, ".runc")]
        self.cgroups = Cgroups()
        os.makedirs(self.state_dir, exist_ok=True)
        self._ticks: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unclean: list[str] = []  # ended while no agent ran: for watch_adopted to clean up
        self._adopt()

    # -- files ------------------------------------------------------------------------------

    def _dir(self, container_id: str) -> str:
        return os.path.join(self.state_dir, container_id)

    def _save(self, status: ContainerStatus) -> None:
        save_record(os.path.join(self._dir(status.id), "status.json"), status, self._ticks.get(status.id, 0))

    def _exit_code(self, container_id: str) -> int | None:
        with contextlib.suppress(OSError, ValueError), open(os.path.join(self._dir(container_id), "exit")) as f:
            return int(f.read().strip())
        return None

    def _adopt(self) -> None:
        for entry in sorted(os.listdir(self.state_dir)):
            path = os.path.join(self.state_dir, entry, "status.json")
            if entry.startswith(".") or not os.path.exists(path):
                continue
            loaded = load_record(path)
            if loaded is None:
                continue
            status, ticks = loaded
            self._track(status)
            if status.state is State.EXITED:
                pass
            elif self._exit_code(status.id) is not None:
                self._ended_unwatched(status)  # the shim kept its code
            elif status.pid and start_ticks(status.pid) == ticks:
                self._ticks[status.id] = ticks
                log.info("adopted container %s (pid %d) of pod %s", status.name, status.pid, status.pod_uid)
            else:
                self._ended_unwatched(status, unknown=True)

    def _ended_unwatched(self, status: ContainerStatus, unknown: bool = False) -> None:
        """A container that ended while no agent watched: recorded now, cleaned up by watch_adopted."""
        self._record_exit(status, unknown)
        self._exited[status.id].set()
        self._unclean.append(status.id)

    def watch_adopted(self) -> None:
        """Follow the adopted containers until they end, and clean up those
        that ended meanwhile (needs a running loop)."""
        for container_id in self._unclean:
            self._spawn(self._clean_up(container_id))
        self._unclean.clear()
        for status in self._status.values():
            if status.state is State.RUNNING:
                self._spawn(self._poll(status))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, status: ContainerStatus) -> None:
        while self._exit_code(status.id) is None:
            if start_ticks(status.pid) != self._ticks.get(status.id) and self._exit_code(status.id) is None:
                await asyncio.sleep(ADOPTED_POLL)  # the shim writes the code just after the container ends
                if self._exit_code(status.id) is None:
                    await self._finish(status, unknown=True)
                    return
            await asyncio.sleep(ADOPTED_POLL)
        await self._finish(status)

    def _record_exit(self, status: ContainerStatus, unknown: bool) -> None:
        """Its exit code and reason (the OOM-kill counter is read before
        the container, and its cgroup, are deleted)."""
        code = self._exit_code(status.id)
        oom = self.cgroups.oom_kills(f"{CGROUP_PARENT}/{status.id}") > 0
        status.state = State.EXITED
        status.finished_at = time.time()
        if unknown or code is None:
            status.exit_code, status.reason = 137, "ContainerStatusUnknown"
        else:
            status.exit_code = code
            status.reason = "OOMKilled" if oom and code != 0 else ("Completed" if code == 0 else "Error")
        self._save(status)

    async def _clean_up(self, container_id: str) -> None:
        """Delete runc's record of an ended container and unmount its root
        filesystem, without blocking the agent's loop."""
        for command in (
            [*self.runc, "delete", "--force", container_id],
            ["umount", "-l", self._dir(container_id) + "/rootfs"],
        ):
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            await proc.wait()  # umount fails for a copied root filesystem: nothing is mounted

    async def _finish(self, status: ContainerStatus, unknown: bool = False) -> None:
        self._record_exit(status, unknown)
        await self._clean_up(status.id)
        self._exited[status.id].set()

    # -- Runtime ----------------------------------------------------------------------------

    async def ensure_image(self, image: str) -> str:
        found = self.images.resolve(image) if image else None
        if found is None:
            raise StartFailed(
                "ErrImagePull",
                f'Failed to pull image "{image}": not in this node\'s image store '
                "(add it with `raftkube agent images import FILE`)"
                if image
                else "the container names no image",
            )
        return found.id

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        image = self.images.resolve(config.image)
        if image is None:
            await self.ensure_image(config.image)
            raise AssertionError("unreachable")
        argv = command_line(config, image.entrypoint, image.cmd)
        if not argv:
            raise StartFailed("RunContainerError", "no command specified: the pod and the image give none")
        env = dict(e.split("=", 1) for e in image.env if "=" in e)
        env.update(config.env)
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        missing = _missing_executable(image.rootfs, argv[0], env["PATH"], config.mounts)
        if missing:
            raise StartFailed("RunContainerError", f'failed to start container "{config.name}": {missing}')
        container_id = uuid.uuid4().hex[:16]
        directory = self._dir(container_id)
        os.makedirs(directory)
        try:
            rootfs = _root_filesystem(image.rootfs, directory)
            spec = self._spec(config, argv, env, image.working_dir, image.user, rootfs, directory)
            with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
                json.dump(spec, f)
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            _unmount(os.path.join(directory, "rootfs"))
            shutil.rmtree(directory, ignore_errors=True)
            raise StartFailed("RunContainerError", f'failed to create container "{config.name}": {e}') from None
        status = ContainerStatus(
            id=container_id,
            name=config.name,
            pod_uid=config.pod_uid,
            attempt=config.attempt,
            state=State.RUNNING,
            started_at=time.time(),
            log_path=config.log_path,
        )
        self._track(status)
        self._save(status)
        os.makedirs(os.path.dirname(config.log_path), exist_ok=True)
        logged = os.path.getsize(config.log_path) if os.path.exists(config.log_path) else 0
        run = shlex.join([*self.runc, "run", "--keep", "--pid-file", "pid", "--bundle", directory, container_id])
        # The shim: runc's status, kept in a file whoever is (or is not) waiting for it.
        shim = f"{run}; echo $? > exit.tmp && mv exit.tmp exit"
        with open(config.log_path, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                shim,
                cwd=directory,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        pid = await self._started(directory, proc)
        if pid is None:
            await proc.wait()
            message = _tail(config.log_path)
            os.truncate(config.log_path, logged)  # runc's complaint is not the container's output
            await self._finish(status)
            await self.remove(container_id)
            raise StartFailed("RunContainerError", f'failed to start container "{config.name}": {message}')
        status.pid = pid
        self._ticks[container_id] = start_ticks(pid) or 0
        self._save(status)
        self._spawn(self._reap(status, proc))
        return status

    async def _started(self, directory: str, proc: asyncio.subprocess.Process) -> int | None:
        """The container's pid once runc has started it; None if runc gave up."""
        deadline = time.monotonic() + STARTED_WITHIN
        delay = 0.002
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError), open(os.path.join(directory, "pid")) as f:
                return int(f.read().strip())
            if proc.returncode is not None:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return None

    async def _reap(self, status: ContainerStatus, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        await self._finish(status)

    def _spec(
        self,
        config: ContainerConfig,
        argv: list[str],
        env: dict[str, str],
        image_dir: str,
        image_user: str,
        rootfs: str,
        directory: str,
    ) -> dict[str, Any]:
        hosts = os.path.join(directory, "hosts")
        with open(hosts, "w", encoding="ascii") as f:
            f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            if config.pod_ip:
                f.write(f"{config.pod_ip}\t{config.hostname or config.pod_name}\n")
        uid, gid = config.run_as_user, config.run_as_group
        if uid is None and image_user.split(":")[0].isdigit():
            uid = int(image_user.split(":")[0])
            gid = int(image_user.split(":")[1]) if ":" in image_user and image_user.split(":")[1].isdigit() else gid
        mounts = [
            _mount("/proc", "proc", "proc"),
            _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
            _mount("/dev/pts", "devpts", "devpts", "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"),
            _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
            _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
            _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
            _mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
            _mount("/etc/hosts", "bind", hosts, "rbind", "ro"),
        ]
        if os.path.exists("/etc/resolv.conf"):
            mounts.append(_mount("/etc/resolv.conf", "bind", "/etc/resolv.conf", "rbind", "ro"))
        for m in config.mounts:
            access = "ro" if m.read_only else "rw"
            mounts.append(_mount(m.container_path, "bind", m.host_path, "rbind", "rprivate", access))
        resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
        if config.memory_limit_bytes:
            resources["memory"] = {"limit": config.memory_limit_bytes}
            if self.cgroups.swap:
                resources["memory"]["swap"] = config.memory_limit_bytes
        cpu: dict[str, Any] = {}
        if config.cpu_limit_millis:
            cpu.update(quota=config.cpu_limit_millis * 100, period=100_000)
        if config.cpu_request_millis:
            cpu["shares"] = max(2, config.cpu_request_millis * 1024 // 1000)
        if cpu:
            resources["cpu"] = cpu
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": uid or 0, "gid": gid or 0},
                "args": argv,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": config.working_dir or image_dir or "/",
                "capabilities": {k: CAPABILITIES for k in ("bounding", "effective", "permitted")},
                "noNewPrivileges": True,
            },
            "root": {"path": rootfs, "readonly": False},
            "hostname": config.hostname or config.pod_name,
            "mounts": mounts,
            "linux": {
                "cgroupsPath": f"{CGROUP_PARENT}/{os.path.basename(directory)}",
                "resources": resources,
                "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
                ],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        }  # fmt: skip

    async def _signal(self, status: ContainerStatus, sig: signal.Signals) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.runc, "kill", "--all", status.id, sig.name,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()  # fails when the container has just ended: nothing then to kill

    async def remove(self, container_id: str) -> None:
        self._untrack(container_id)
        directory = self._dir(container_id)
        _unmount(os.path.join(directory, "rootfs"))
        shutil.rmtree(directory, ignore_errors=True)

    async def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, str]:
        return await run_command([*self.runc, "exec", container_id, *argv], None, timeout)


def _mount(destination: str, kind: str, source: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": list(options)}


def _root_filesystem(image_rootfs: str, directory: str) -> str:
    """The container's root: an overlay over the image's, or a copy of it."""
    rootfs = os.path.join(directory, "rootfs")
    upper, work = os.path.join(directory, "upper"), os.path.join(directory, "work")
    for d in (rootfs, upper, work):
        os.makedirs(d)
    options = f"lowerdir={image_rootfs},upperdir={upper},workdir={work}"
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, rootfs], capture_output=True)
    if mounted.returncode != 0:
        log.info("overlayfs unavailable (%s): copying the image", mounted.stderr.decode().strip())
        os.rmdir(rootfs)
        shutil.copytree(image_rootfs, rootfs, symlinks=True)
    return rootfs


def _unmount(path: str) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def _missing_executable(rootfs: str, program: str, path: str, mounts: list[Any]) -> str:
    """Why `program` cannot run in the image ("" when it can, or when a
    volume might provide it and only runc can tell)."""
    if any(program.startswith(m.container_path.rstrip("/") + "/") for m in mounts):
        return ""
    candidates = [program] if "/" in program else [os.path.join(d, program) for d in path.split(":") if d]
    for candidate in candidates:
        if os.path.lexists(os.path.join(rootfs, candidate.lstrip("/"))):
            return ""
    if "/" in program:
        return f'exec: "{program}": stat {program}: no such file or directory'
    return f'exec: "{program}": executable file not found in $PATH'


def _tail(path: str, limit: int = 300) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - limit))
        return f.read().decode(errors="replace").strip()
    return "runc gave no reason"


def kill_all(state_dir: str, runc: str = "runc") -> int:
    """Delete (SIGKILL first) every container a RuncRuntime in `state_dir`
    runs, and unmount their root filesystems; how many there were."""
    command = [runc, "--root", os.path.join(state_dir, ".runc")]
    listed = subprocess.run([*command, "list", "-q"], capture_output=True, text=True, check=False)
    ids = listed.stdout.split() if listed.returncode == 0 else []
    for container_id in ids:
        subprocess.run([*command, "delete", "--force", container_id], capture_output=True, check=False)
    for entry in os.listdir(state_dir):
        _unmount(os.path.join(state_dir, entry, "rootfs"))
    return len(ids)


if __name__ == "__main__":  # python -m node_agent.runtime.runc kill-all STATE_DIR
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "kill-all":
        sys.exit("usage: python -m node_agent.runtime.runc kill-all STATE_DIR")
    print(f"killed {kill_all(sys.argv[2])} containers")
