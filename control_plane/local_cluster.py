"""A whole cluster on one machine, as child processes on loopback: what
`raftkube up` starts and `raftkube down` stops, and what the tests, the
benchmarks and the fault campaign use to run real masters.

The cluster lives in a directory: `cluster.json` (members, addresses, pids),
the cluster secret (0600), and one data directory and log per master. Ports
are picked free on loopback when the directory is first initialised and kept,
so a restarted master comes back at the same addresses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import grpc

from control_plane.client import ApiClient, resource
from control_plane.client.credentials import INSECURE, ClientCredentials
from control_plane.security.cluster_dir import ClusterDir
from control_plane.security.pki import CertificateAuthority
from ha.client import StoreClient
from ha.storepb import kv_pb2

STATE_FILE = "cluster.json"
READY_PROBE = kv_pb2.RangeRequest(key=b"/raftkube/ready-probe")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


# Ports this process handed out: a port is only bound later, by a master we
# start, so the bind check alone would give the same port twice.
_handed_out: set[int] = set()


def log_tail(spec: MasterSpec | AgentSpec, lines: int = 20) -> str:
    """The last lines of a master's log, for errors that name it."""
    try:
        with open(spec.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError as e:
        return f"(unreadable: {e})"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, that this process has not handed out before,
    and that the kernel will not hand out as the source port of an outgoing
    connection before a master binds it (ports from bind(0) come from the
    ephemeral range and can be taken that way)."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # nothing free below the ephemeral range
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class MasterSpec:
    id: str
    raft_address: str
    grpc_address: str
    metrics_address: str
    data_dir: str
    pid: int = 0
    api_address: str = ""

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "server.log")

    @property
    def audit_log_path(self) -> str:
        return os.path.join(self.data_dir, "audit.log")


@dataclass
class AgentSpec:
    """A node agent of the cluster (its node's name is its id)."""

    id: str
    data_dir: str
    pid: int = 0
    metrics_address: str = ""
    runtime: str = "process"  # or runc

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "agent.log")


@dataclass
class LocalCluster:
    directory: str
    masters: list[MasterSpec] = field(default_factory=list)
    server_args: list[str] = field(default_factory=list)
    agents: list[AgentSpec] = field(default_factory=list)
    agent_args: list[str] = field(default_factory=list)
    # More environment for the processes this object starts (bench.paired_ab
    # runs one cluster from another checkout). Not saved: a cluster loaded
    # from its directory starts its processes without it.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # Popen objects of the masters this process started, to reap them.
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False, repr=False)
    _ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    # -- the directory ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str,
        count: int = 3,
        host: str = "127.0.0.1",
        server_args: list[str] | None = None,
        agents: int = 0,
        agent_args: list[str] | None = None,
        runc_agents: int = 0,
    ) -> LocalCluster:
        """A new cluster directory (or the one there): `count` masters,
        `agents` node agents n1... with the process runtime and
        `runc_agents` r1... with the runc runtime."""
        directory = os.path.abspath(directory)
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(os.path.join(directory, STATE_FILE)):
            cluster = cls.load(directory)
            if server_args is not None:
                cluster.server_args = server_args
                cluster.save()
                cluster.write_kubeconfig()
            return cluster
        cluster = cls(directory, server_args=list(server_args or []), agent_args=list(agent_args or []))
        for i in range(count):
            cluster.masters.append(cluster._new_spec(f"m{i + 1}", host))
        for prefix, runtime, number in (("n", "process", agents), ("r", "runc", runc_agents)):
            for i in range(number):
                name = f"{prefix}{i + 1}"
                metrics = f"{host}:{free_port(host)}"
                cluster.agents.append(AgentSpec(name, os.path.join(directory, name), 0, metrics, runtime))
        nodes = {a.id: [host, a.id] for a in cluster.agents}
        cluster.security.init({m.id: cluster.hosts_of(m) for m in cluster.masters}, nodes)
        cluster.save()
        cluster.write_kubeconfig()
        return cluster

    def _new_spec(self, member_id: str, host: str = "127.0.0.1") -> MasterSpec:
        return MasterSpec(
            id=member_id,
            raft_address=f"{host}:{free_port(host)}",
            grpc_address=f"{host}:{free_port(host)}",
            metrics_address=f"{host}:{free_port(host)}",
            data_dir=os.path.join(self.directory, member_id),
            api_address=f"{host}:{free_port(host)}",
        )

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        directory: str,
        count: int = 3,
        server_args: list[str] | None = None,
        timeout: float = 60.0,
        agents: int = 0,
        runc_agents: int = 0,
        agent_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[LocalCluster]:
        """A cluster started and ready (its agents registered and Ready too)
        for the length of a `with` block, stopped however the block ends
        (tests, benchmarks); `env` is added to its processes' environment."""
        cluster = cls.create(
            directory, count, server_args=server_args, agents=agents, agent_args=agent_args, runc_agents=runc_agents
        )
        cluster.env = dict(env or {})
        cluster.start()
        try:
            cluster.wait_ready(timeout)
            if cluster.agents:
                cluster.start_agents()
                cluster.wait_agents(timeout)
            yield cluster
        finally:
            cluster.stop()

    @classmethod
    def load(cls, directory: str) -> LocalCluster:
        directory = os.path.abspath(directory)
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        return cls(
            directory,
            [MasterSpec(**m) for m in state["masters"]],
            state.get("server_args", []),
            [AgentSpec(**a) for a in state.get("agents", [])],
            state.get("agent_args", []),
        )

    def save(self) -> None:
        path = os.path.join(self.directory, STATE_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            state = {
                "masters": [asdict(m) for m in self.masters],
                "server_args": self.server_args,
                "agents": [asdict(a) for a in self.agents],
                "agent_args": self.agent_args,
            }
            json.dump(state, f, indent=2)
        os.replace(path + ".tmp", path)

    @property
    def security(self) -> ClusterDir:
        """The cluster secret, certificates and tokens (`raftkube init`'s layout)."""
        return ClusterDir(self.directory)

    @property
    def secret_path(self) -> str:
        return self.security.secret_path

    @property
    def secure(self) -> bool:
        """TLS and authentication on (the default; `--insecure` in server_args turns them off)."""
        return "--insecure" not in self.server_args

    @property
    def admin_credentials(self) -> ClientCredentials:
        """The admin's client certificate and the cluster CA (none on an insecure cluster)."""
        if not self.secure:
            return INSECURE
        cert, key = self.security.admin_paths()
        return ClientCredentials.from_files(self.security.ca_paths()[0], cert, key)

    def credentials_for(
        self, user: str, groups: list[str], days: int = 1, start: datetime.datetime | None = None
    ) -> ClientCredentials:
        """A client certificate for any user, issued by the cluster CA (tests)."""
        ca = CertificateAuthority.load(*self.security.ca_paths())
        issued = ca.issue_client(user, groups, days, start)
        return ClientCredentials(ca.cert_pem, issued.cert_pem, issued.key_pem)

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @staticmethod
    def hosts_of(spec: MasterSpec) -> list[str]:
        """The hosts a master is reached at, for its serving certificate."""
        return sorted({a.rpartition(":")[0] for a in (spec.api_address, spec.grpc_address) if a})

    @property
    def kubeconfig_path(self) -> str:
        return os.path.join(self.directory, "admin.kubeconfig")

    def write_kubeconfig(self) -> None:
        """An admin kubeconfig for real kubectl, one context per master
        (the default one is the first master), with the cluster CA and the
        admin's client certificate inline."""
        contexts, clusters = [], []
        credentials = self.admin_credentials
        user: dict[str, str] = {}
        if credentials.secure:
            user = {
                "client-certificate-data": base64.b64encode(credentials.cert_pem).decode(),
                "client-key-data": base64.b64encode(credentials.key_pem).decode(),
            }
        for m in self.masters:
            cluster: dict[str, str] = {"server": f"{self.scheme}://{m.api_address}"}
            if credentials.secure:
                cluster["certificate-authority-data"] = base64.b64encode(credentials.ca_pem).decode()
            clusters.append({"name": m.id, "cluster": cluster})
            contexts.append({"name": m.id, "context": {"cluster": m.id, "user": "admin", "namespace": "default"}})
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "contexts": contexts,
            "current-context": self.masters[0].id,
            "users": [{"name": "admin", "user": user}],
            "preferences": {},
        }
        fd = os.open(self.kubeconfig_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)
        os.replace(self.kubeconfig_path + ".tmp", self.kubeconfig_path)

    @property
    def api_endpoints(self) -> list[str]:
        return [f"{self.scheme}://{m.api_address}" for m in self.masters]

    @property
    def endpoints(self) -> list[str]:
        return [m.grpc_address for m in self.masters]

    def spec(self, member_id: str) -> MasterSpec:
        for m in self.masters:
            if m.id == member_id:
                return m
        raise KeyError(member_id)

    def agent(self, name: str) -> AgentSpec:
        for a in self.agents:
            if a.id == name:
                return a
        raise KeyError(name)

    def _any(self, process_id: str) -> MasterSpec | AgentSpec:
        return self.agent(process_id) if any(a.id == process_id for a in self.agents) else self.spec(process_id)

    # -- processes ---------------------------------------------------------------

    def command(self, spec: MasterSpec, peers: list[MasterSpec] | None = None, join: bool = False) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "control_plane.cli",
            "server",
            "--id",
            spec.id,
            "--data-dir",
            spec.data_dir,
            "--raft-address",
            spec.raft_address,
            "--grpc-address",
            spec.grpc_address,
            "--metrics-address",
            spec.metrics_address,
            "--api-address",
            spec.api_address,
            "--cluster-secret-file",
            self.secret_path,
        ]
        if self.secure:
            args += ["--cluster-dir", self.directory, "--audit-log-path", spec.audit_log_path]
        for peer in self.masters if peers is None else peers:
            if peer.id != spec.id:
                args += ["--peer", f"{peer.id}={peer.raft_address}"]
        if join:
            args.append("--join")
        return args + self.server_args

    def start(self, member_id: str | None = None, peers: list[MasterSpec] | None = None, join: bool = False) -> None:
        """Start one master, or every master that is not running; `join`
        for one being added to a running cluster."""
        for spec in self.masters:
            if member_id is not None and spec.id != member_id:
                continue
            if member_id is None and self.is_running(spec):
                continue
            os.makedirs(spec.data_dir, exist_ok=True)
            with open(spec.log_path, "ab") as log:
                proc = subprocess.Popen(
                    self.command(spec, peers, join),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # outlives `raftkube up --detach`
                    env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                )
            spec.pid = proc.pid
            self._children[spec.id] = proc
        self.save()

    def agent_command(self, spec: AgentSpec) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "node_agent",
            "--name",
            spec.id,
            "--server",
            ",".join(self.endpoints),
            "--data-dir",
            spec.data_dir,
        ]
        if spec.metrics_address:
            args += ["--metrics-address", spec.metrics_address]
        if spec.runtime != "process":
            args += ["--runtime", spec.runtime]
        args += ["--cluster-dir", self.directory] if self.secure else ["--insecure"]
        return args + self.agent_args

    def start_agents(self, name: str | None = None) -> None:
        """Start one agent, or every agent that is not running."""
        for spec in self.agents:
            if (name is not None and spec.id != name) or (name is None and self.is_running(spec)):
                continue
            os.makedirs(spec.data_dir, exist_ok=True)
            with open(spec.log_path, "ab") as log:
                proc = subprocess.Popen(
                    self.agent_command(spec),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                )
            spec.pid = proc.pid
            self._children[spec.id] = proc
        self.save()

    def stop_agents(self, name: str | None = None, timeout: float = 10.0, containers: bool = True) -> None:
        """Stop agents (SIGTERM, then SIGKILL) and, unless told not to, the
        containers they leave running (an agent's containers outlive it, so
        that a restarted agent adopts them)."""
        specs = [a for a in self.agents if name is None or a.id == name]
        self._terminate(specs, timeout)
        if containers:
            for spec in specs:
                kill_containers(spec.data_dir)

    def wait_agents(self, timeout: float = 30.0) -> None:
        """Until every agent's Node is registered and Ready."""

        async def registered() -> bool:
            async with ApiClient(self.endpoints, credentials=self.admin_credentials, retry_for=2.0) as client:
                nodes = await client.list(resource("nodes"))
            ready = {
                n["metadata"]["name"]
                for n in nodes["items"]
                if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            }
            return {a.id for a in self.agents} <= ready

        deadline = time.monotonic() + timeout
        while not asyncio.run(registered()):
            for spec in self.agents:
                if not self.is_running(spec):
                    raise RuntimeError(f"agent {spec.id} exited; {spec.log_path} ends with:\n{log_tail(spec)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"agents not registered after {timeout:g}s")
            time.sleep(0.1)

    def is_running(self, spec: MasterSpec | AgentSpec) -> bool:
        if not spec.pid:
            return False
        proc = self._children.get(spec.id)
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(spec.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _is_our_server(spec.pid)

    def signal(self, member_id: str, sig: int) -> None:
        spec = self._any(member_id)
        if spec.pid and self.is_running(spec):
            os.kill(spec.pid, sig)

    def kill(self, member_id: str) -> None:
        """kill -9, and reap it (a master or an agent)."""
        spec = self._any(member_id)
        self.signal(member_id, signal.SIGKILL)
        self._wait_exit(spec, 10.0)

    def pause(self, member_id: str) -> None:
        self.signal(member_id, signal.SIGSTOP)

    def resume(self, member_id: str) -> None:
        self.signal(member_id, signal.SIGCONT)

    def stop(self, member_id: str | None = None, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL; the
        whole cluster (agents and their containers first) when no master is named."""
        if member_id is None:
            self.stop_agents(timeout=timeout)
        self._terminate([self.spec(member_id)] if member_id else list(self.masters), timeout)

    def _terminate(self, specs: list[MasterSpec] | list[AgentSpec], timeout: float) -> None:
        for spec in specs:
            if self.is_running(spec):
                os.kill(spec.pid, signal.SIGCONT)
                os.kill(spec.pid, signal.SIGTERM)
        for spec in specs:
            if spec.pid and not self._wait_exit(spec, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(spec.pid, signal.SIGKILL)
                self._wait_exit(spec, 5.0)
            spec.pid = 0
        self.save()

    def _wait_exit(self, spec: MasterSpec | AgentSpec, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        proc = self._children.get(spec.id)
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return True
            elif not self.is_running(spec):
                return True
            time.sleep(0.02)
        return False

    def add_master(self, member_id: str) -> MasterSpec:
        spec = self._new_spec(member_id, self.masters[0].raft_address.rsplit(":", 1)[0])
        self.masters.append(spec)
        self.security.init({spec.id: self.hosts_of(spec)})
        self.save()
        return spec

    def forget_master(self, member_id: str) -> None:
        self.masters = [m for m in self.masters if m.id != member_id]
        self.save()

    # -- observing -----------------------------------------------------------------

    def client(self, timeout: float = 5.0, retry_for: float = 10.0) -> StoreClient:
        """A store client with the admin's credentials."""
        return StoreClient(self.endpoints, timeout, retry_for, self.admin_credentials.grpc())

    def wait_ready(self, timeout: float = 30.0, members: list[str] | None = None) -> str:
        """Wait until every (named) running master knows the same leader and
        the leader can commit; returns the leader's id."""
        chosen = [m for m in self.masters if (members is None or m.id in members) and self.is_running(m)]
        deadline = time.monotonic() + timeout
        last_error = "no master answered"
        with StoreClient(
            [m.grpc_address for m in chosen], timeout=1.0, retry_for=0, credentials=self.admin_credentials.grpc()
        ) as client:
            while time.monotonic() < deadline:
                for spec in chosen:
                    if not self.is_running(spec):
                        raise RuntimeError(f"master {spec.id} exited; {spec.log_path} ends with:\n{log_tail(spec)}")
                try:
                    statuses = [client.status(m.grpc_address) for m in chosen]
                    leaders = {s.leader_id for s in statuses}
                    if len(leaders) == 1 and "" not in leaders:
                        leader = leaders.pop()
                        leader_spec = next((m for m in chosen if m.id == leader), None)
                        if leader_spec is not None:
                            # A linearizable read: answers once the leader commits.
                            client.kv(leader_spec.grpc_address).Range(READY_PROBE, timeout=1.0)
                        unready = [m.id for m in chosen if not self._api_ready(m)]
                        if not unready:
                            return leader
                        last_error = f"the API of {', '.join(unready)} is not ready (/readyz)"
                    last_error = f"leaders seen: {sorted(leaders)}"
                except grpc.RpcError as e:
                    last_error = f"{e.code().name}: {e.details()}"
                time.sleep(0.05)
        raise TimeoutError(f"cluster not ready after {timeout:g}s ({last_error})")

    def _api_ready(self, spec: MasterSpec) -> bool:
        """Whether a master's API answers /readyz (caches synced, default
        roles in place): only then is it done writing its bootstrap objects."""
        if not spec.api_address:
            return True
        if self._ssl is None and self.secure:
            self._ssl = self.admin_credentials.ssl_context()
        try:
            url = f"{self.scheme}://{spec.api_address}/readyz"
            with urllib.request.urlopen(url, timeout=1.0, context=self._ssl) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def leader(self, timeout: float = 30.0) -> str:
        return self.wait_ready(timeout)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.05)


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that `finally` blocks stop the
    masters a script started (they run in sessions of their own and would
    outlive it)."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _is_our_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
            return b"control_plane.cli" in cmdline or b"node_agent" in cmdline
    except OSError:
        return True


def kill_containers(agent_data_dir: str) -> None:
    """SIGKILL the containers an agent left running. Each runtime owns its
    state: it is asked, as a command (the control plane imports nothing of
    the node agent)."""
    for runtime, state in (("process", "containers"), ("runc", "runc")):
        state_dir = os.path.join(agent_data_dir, state)
        if os.path.isdir(state_dir):
            subprocess.run(
                [sys.executable, "-m", f"node_agent.runtime.{runtime}", "kill-all", state_dir],
                check=False,
                capture_output=True,
                timeout=60,
            )
