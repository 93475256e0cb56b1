"""Node agent benchmark, on 3 masters and 2 agents (process runtime) on
loopback:

- pod startup latency, as Kubernetes' SLO measures it: from sending the
  create of a pod bound to a node (spec.nodeName) to a watch seeing it
  Running with its container started; 200 pods created at 20 pods/s (the
  SLO's churn), half on each agent, each running `sleep`. The baseline,
  measured in the same run: starting the same process directly
  (asyncio.create_subprocess_exec), and the create's own round trip.
- the same for 20 pods on a third agent with the runc runtime (busybox
  `sleep` containers), against starting the same container with the
  runtime alone; skipped, saying why, where runc cannot run containers.
- failover: kill -9 of the master an agent heartbeats through; the time
  until its lease is renewed through another master, and the largest gap
  between renewals around it (the node grace period is 40 s).
- hollow nodes: 1,000 simulated nodes in one agent process heartbeating
  every 10 s: the process's memory, and the store writes they cost
  (revisions per second while they run, against the 100/s they should).

    python -m bench.agent_bench [--pods 200] [--rate 20] [--runc-pods 20] [--hollow 1000] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.work_dir import add_keep_argument, work_dir
from control_plane.client import ApiClient, resource
from control_plane.local_cluster import LocalCluster, exit_cleanly_on_sigterm
from node_agent.images import ImageStore
from node_agent.runtime import ContainerConfig
from node_agent.runtime.runc import RuncRuntime, runc_works

PODS = resource("pods")
LEASES = resource("leases", "coordination.k8s.io")
NAMESPACES = resource("namespaces")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and all(
        "running" in (c.get("state") or {}) for c in status.get("containerStatuses") or [{}]
    )


async def startup(
    cluster: LocalCluster, pods: int, rate: float, nodes: list[str], namespace: str = "startup"
) -> tuple[list[float], list[float]]:
    """(create round trips, create-to-Running latencies), in seconds, of
    `pods` pods spread over `nodes`."""
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    creates: list[float] = []
    async with ApiClient(cluster.endpoints, credentials=cluster.admin_credentials, timeout=30) as client:
        await client.create(NAMESPACES, {"metadata": {"name": namespace}})
        rv = (await client.list(PODS, namespace))["metadata"]["resourceVersion"]
        done = asyncio.Event()

        async def watch() -> None:
            async for event in client.watch(PODS, namespace, resource_version=rv):
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name not in seen and running(obj):
                    seen[name] = time.perf_counter()
                    if len(seen) == pods:
                        done.set()
                        return

        watcher = asyncio.get_running_loop().create_task(watch())

        async def create(i: int) -> None:
            name = f"p{i:04d}"
            body = {
                "metadata": {"name": name},
                "spec": {
                    "nodeName": nodes[i % len(nodes)],
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                },
            }
            sent[name] = t0 = time.perf_counter()
            await client.create(PODS, body, namespace)
            creates.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        for i in range(pods):  # open loop: a create every 1/rate s, whatever the answers do
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.get_running_loop().create_task(create(i)))
        await asyncio.gather(*tasks)
        await asyncio.wait_for(done.wait(), 120)
        watcher.cancel()
    return creates, [seen[n] - sent[n] for n in sent]


async def spawn_baseline(count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("sleep", "3600")
        out.append(time.perf_counter() - t0)
        proc.kill()
        await proc.wait()
    return out


async def runc_baseline(count: int, work: str) -> list[float]:
    """Starting a busybox `sleep` container with the runc runtime directly (no API, no agent)."""
    images = ImageStore(os.path.join(work, "images"))
    images.ensure_busybox()
    runtime = RuncRuntime(os.path.join(work, "runc"), images)
    out = []
    for i in range(count):
        config = ContainerConfig(
            pod_uid="baseline", pod_namespace="", pod_name="baseline", name=f"c{i}", attempt=0,
            command=["sleep", "3600"], args=[], env={}, working_dir="", scratch_dir=work,
            log_path=os.path.join(work, f"c{i}.log"), image="busybox",
        )  # fmt: skip
        t0 = time.perf_counter()
        status = await runtime.start(config)
        out.append(time.perf_counter() - t0)
        await runtime.stop(status.id, 0)
        await runtime.remove(status.id)
    return out


async def failover(cluster: LocalCluster) -> tuple[float, float]:
    """kill -9 the agents' master: (seconds until the lease of n1 is next
    renewed, largest gap between its renewals meanwhile)."""
    survivor = cluster.masters[1]
    renewals: list[float] = []
    async with ApiClient([survivor.grpc_address], credentials=cluster.admin_credentials) as client:

        async def poll(until: float) -> None:
            last = ""
            while time.perf_counter() < until:
                lease = await client.get(LEASES, cluster.agents[0].id, "kube-node-lease")
                renewed = lease["spec"]["renewTime"]
                if renewed != last:
                    renewals.append(time.perf_counter())
                    last = renewed
                await asyncio.sleep(0.02)

        await poll(time.perf_counter() + 3.0)
        killed = time.perf_counter()
        cluster.kill(cluster.masters[0].id)  # the agents start on the first endpoint
        await poll(time.perf_counter() + 6.0)
    after = [t for t in renewals if t > killed]
    reconnect = after[0] - killed if after else float("inf")
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    return reconnect, max(gaps) if gaps else float("inf")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hollow(cluster: LocalCluster, count: int, interval: float, window: float = 30.0) -> tuple[float, float, float]:
    """(seconds until all registered, RSS MiB of the hollow process, store revisions/s while they heartbeat)."""
    cluster.security.init_hollow("hollow", count)
    data_dir = os.path.join(cluster.directory, "hollow")
    os.makedirs(data_dir, exist_ok=True)
    command = [
        sys.executable, "-m", "node_agent", "--name", "hollow", "--hollow", str(count),
        "--server", ",".join(cluster.endpoints), "--data-dir", data_dir, "--cluster-dir", cluster.directory,
        "--heartbeat-interval", str(interval),
    ]  # fmt: skip
    started = time.perf_counter()
    with open(os.path.join(data_dir, "hollow.log"), "ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:

        async def registered() -> int:
            async with ApiClient(cluster.endpoints, credentials=cluster.admin_credentials, timeout=30) as client:
                nodes = await client.list(resource("nodes"), label_selector="raftkube.io/hollow=true")
                return len(nodes["items"])

        while asyncio.run(registered()) < count:
            if proc.poll() is not None:
                raise RuntimeError(f"the hollow agent exited ({proc.returncode}); see {data_dir}/hollow.log")
            if time.perf_counter() - started > 600:
                raise TimeoutError("hollow nodes not registered in 10 minutes")
            time.sleep(1.0)
        took = time.perf_counter() - started
        time.sleep(interval)  # every node has renewed once since it registered
        with cluster.client() as store:
            before = store.status(cluster.endpoints[1]).header.revision
            t0 = time.perf_counter()
            time.sleep(window)
            after = store.status(cluster.endpoints[1]).header.revision
            rate = (after - before) / (time.perf_counter() - t0)
        return took, rss_mib(proc.pid), rate
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description="raftkube node agent benchmark")
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="pod creates per second")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--hollow", type=int, default=1000, help="hollow nodes (0: none)")
    parser.add_argument("--hollow-interval", type=float, default=10.0)
    parser.add_argument("--runc-pods", type=int, default=20, help="pods on a runc agent (0: none)")
    add_keep_argument(parser)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    with work_dir("raftkube-agent-bench-", args.keep) as work:
        why_not_runc = runc_works(os.path.join(work, "runc-probe")) if args.runc_pods else "not asked for"
        agent_args = ["--heartbeat-interval", str(args.heartbeat_interval)]
        runc_agents = 0 if why_not_runc else 1
        cluster = LocalCluster.create(
            os.path.join(work, "c"), 3, agents=2, agent_args=agent_args, runc_agents=runc_agents
        )
        cluster.start()
        try:
            cluster.wait_ready(60)
            cluster.start_agents()
            cluster.wait_agents(60)
            print(
                f"agent benchmark: {args.pods} pods at {args.rate:g}/s on 2 agents, {os.cpu_count()} CPUs\n", flush=True
            )
            spawns = asyncio.run(spawn_baseline(50))
            process_nodes = [a.id for a in cluster.agents if a.runtime == "process"]
            creates, latencies = asyncio.run(startup(cluster, args.pods, args.rate, process_nodes))
            runc_starts: list[float] = []
            runc_latencies: list[float] = []
            if not why_not_runc:
                runc_starts = asyncio.run(runc_baseline(10, os.path.join(work, "runc-baseline")))
                _, runc_latencies = asyncio.run(startup(cluster, args.runc_pods, args.rate, ["r1"], "startup-runc"))
            reconnect, gap = asyncio.run(failover(cluster))
            cluster.start(cluster.masters[0].id)
            cluster.wait_ready(60)
            fleet = hollow(cluster, args.hollow, args.hollow_interval) if args.hollow else None
        finally:
            cluster.stop()
    ms = 1000.0
    print(f"  process spawn (baseline)     p50 {pct(spawns, 50) * ms:6.1f} ms  p99 {pct(spawns, 99) * ms:6.1f} ms")
    print(f"  pod create round trip        p50 {pct(creates, 50) * ms:6.1f} ms  p99 {pct(creates, 99) * ms:6.1f} ms")
    print(
        f"  pod startup (create->Running) p50 {pct(latencies, 50) * ms:6.1f} ms  p99 {pct(latencies, 99) * ms:6.1f} ms"
        f"  mean {statistics.mean(latencies) * ms:.1f} ms ({len(latencies)} pods)"
    )
    if runc_latencies:
        print(
            f"  runc container start (baseline, runtime alone) p50 {pct(runc_starts, 50) * ms:6.1f} ms"
            f"  p99 {pct(runc_starts, 99) * ms:6.1f} ms"
        )
        print(
            f"  runc pod startup (create->Running) p50 {pct(runc_latencies, 50) * ms:6.1f} ms"
            f"  p99 {pct(runc_latencies, 99) * ms:6.1f} ms  ({len(runc_latencies)} pods at {args.rate:g}/s on 1 agent)"
        )
    else:
        print(f"  runc pods: skipped ({why_not_runc})")
    print(
        f"  lease renewed after kill -9 of the agents' master: {reconnect:.2f} s;"
        f" largest gap between renewals {gap:.2f} s (heartbeat every {args.heartbeat_interval:g} s)"
    )
    if fleet is not None:
        took, rss, rate = fleet
        expected = args.hollow / args.hollow_interval
        print(
            f"  {args.hollow} hollow nodes: registered in {took:.1f} s; agent RSS {rss:.0f} MiB;"
            f" store writes {rate:.0f}/s while they heartbeat every {args.hollow_interval:g} s"
            f" ({rate / expected:.2f} x the {expected:.0f}/s of one renewal each)"
        )
    p99 = pct(latencies, 99)
    print("\ntargets")
    print(f"  pod startup p99 < 1 s (process runtime): {p99 * ms:6.1f} ms  {'met' if p99 < 1 else 'NOT met'}")
    if runc_latencies:
        runc_p99 = pct(runc_latencies, 99)
        verdict = "met" if runc_p99 < 5 else "NOT met"
        print(f"  runc pod startup p99 < 5 s (Kubernetes' SLO): {runc_p99 * ms:6.1f} ms  {verdict}")
    print(f"  agent reconnect < 2 s:                   {reconnect:6.2f} s   {'met' if reconnect < 2 else 'NOT met'}")
    print(f"  renewal gaps < 40 s (node grace period): {gap:6.2f} s   {'met' if gap < 40 else 'NOT met'}")
    if fleet is not None:
        verdict = "met" if fleet[1] < 1024 else "NOT met"
        print(f"  {args.hollow} hollow nodes < 1 GiB:             {fleet[1]:6.0f} MiB {verdict}")


if __name__ == "__main__":
    main()
