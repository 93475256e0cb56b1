"""API server benchmark, on two 3-master clusters on loopback side by side,
all against their leaders: a plain one (--insecure: no TLS, no
authentication, no RBAC, no audit) and a secure one (TLS, client
certificates, RBAC, the audit log at Metadata level, as `raftkube up` runs):

- pod creates/s and p50/p99 latency through REST (aiohttp client, JSON)
  and through gRPC (the Resources service) at concurrency 16 and 64, with
  raw store puts of a stored pod's bytes (the KV service) on the plain
  cluster measured in the same run, round-robin with them, as the baseline;
  all sent to the leader, and again with the clients spread over the three
  masters (as clients behind a load balancer are: a follower does a
  create's API work and forwards its write through Raft), each against raw
  puts spread the same way;
- the same creates on the secure cluster as a user the `edit` role is
  bound to (so RBAC evaluates its bindings on every request), against the
  plain cluster's: what security costs;
- listing 10,000 pods: a raw HTTP GET with the JSON parsed (orjson, with
  Python's cyclic collector paused during the parse, as control_plane's
  client does: see codec.collector_paused; fetch and parse reported apart),
  linearizable (resourceVersion="") and from the local state
  (resourceVersion=0), and the same list over gRPC (control_plane's client,
  objects parsed);
- watch delivery: from sending a create to receiving its event, over REST
  and over gRPC watches.

The load generator shares the machine's cores with the masters; it does
the same for every system, so the ratios compare like with like. Every run
also prints what it cost per operation (CPU from /proc, warm-up included):
the leader's event loop thread, the thread a master's Python runs on, which
API creates saturate when they are all sent to it; and the whole machine,
with how many of its cores were busy, which is the limit once the load is
spread over the masters.

Ratios are the median over rounds of each round's ratio (runs taken side
by side), with the ratio of the medians in brackets.

    python -m bench.api_bench [--seconds 4] [--rounds 5] [--list-pods 10000] [--keep]

For a quick look at one part: `--concurrency 64 --systems store gRPC
--list-pods 0 --watch-events 0` runs only those points (the secure cluster
is started only when a secure system is asked for; raw store puts always
run, as they are every ratio's baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import grpc

from bench.kv_load import LoadResult, closed_loop, median, median_result, paired_ratio, run_load
from bench.proc_cpu import loop_seconds, machine_busy_seconds
from bench.work_dir import add_keep_argument, work_dir
from control_plane.apipb import resources_pb2 as pb
from control_plane.apipb import resources_pb2_grpc
from control_plane.apis import codec
from control_plane.client import INSECURE, ApiClient, ClientCredentials, resource
from control_plane.client.api import open_channel
from control_plane.local_cluster import LocalCluster, exit_cleanly_on_sigterm
from ha.storepb import kv_pb2

CONCURRENCY = (16, 64)
WARMUP = 1.0  # seconds each run loads before it measures
SPREAD = " all masters"  # the suffix of a system whose clients are spread over the masters
SYSTEMS = (
    "store",
    "REST",
    "gRPC",
    "store" + SPREAD,
    "REST" + SPREAD,
    "gRPC" + SPREAD,
    "REST secure",
    "gRPC secure",
)
PODS = resource("pods")
NAMESPACES = resource("namespaces")
CONFIGMAPS = resource("configmaps")


def pod_body(name: str) -> dict[str, object]:
    """A pod as a Deployment's ReplicaSet would create it: labels, an owner,
    one container with ports, env and resources."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "bench", "pod-template-hash": "5d8f7c9b6"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "bench-5d8f7c9b6",
                    "uid": "8a7c0e56-0b6e-4bd8-9b1f-5c3f0d2a9e11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/team/web:1.27.3",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                }
            ]
        },
    }


def template(namespace: str) -> tuple[bytes, bytes]:
    """The pod as bytes, split around its name, so the load generator
    spends no time serializing."""
    raw = json.dumps(pod_body("@@NAME@@"), separators=(",", ":")).encode()
    before, after = raw.split(b"@@NAME@@")
    return before, after


async def rest_creates(
    apis: list[str],
    namespace: str,
    run: str,
    concurrency: int,
    seconds: float,
    warmup: float = WARMUP,
    credentials: ClientCredentials = INSECURE,
) -> LoadResult:
    """Closed-loop pod creates over REST, worker w sending to apis[w % len(apis)]."""
    before, after = template(namespace)
    urls = [f"{api}/api/v1/namespaces/{namespace}/pods" for api in apis]
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=credentials.ssl_context() or False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def create(w: int, i: int) -> str | None:
            body = before + b"%s-%d-%d" % (run.encode(), w, i) + after
            async with session.post(urls[w % len(urls)], data=body, headers=headers) as resp:
                await resp.read()
                return None if resp.status == 201 else f"HTTP {resp.status}"

        return await closed_loop(concurrency, seconds, warmup, create)


async def grpc_creates(
    endpoints: list[str],
    namespace: str,
    run: str,
    concurrency: int,
    seconds: float,
    warmup: float = WARMUP,
    credentials: ClientCredentials = INSECURE,
) -> LoadResult:
    """Closed-loop pod creates over gRPC, worker w calling endpoints[w % len(endpoints)]."""
    before, after = template(namespace)
    ref = pb.ResourceRef(version="v1", resource="pods", namespace=namespace)
    async with contextlib.AsyncExitStack() as channels:
        stubs = []
        for endpoint in endpoints:
            channel = await channels.enter_async_context(open_channel(endpoint, credentials.grpc(), options=()))
            stubs.append(resources_pb2_grpc.ResourcesStub(channel))

        async def create(w: int, i: int) -> str | None:
            body = before + b"%s-%d-%d" % (run.encode(), w, i) + after
            try:
                await stubs[w % len(stubs)].Create(
                    pb.CreateRequest(ref=ref, object=body, field_manager="bench"), timeout=10
                )
                return None
            except grpc.aio.AioRpcError as e:
                return e.code().name

        return await closed_loop(concurrency, seconds, warmup, create)


async def stored_pod(client: ApiClient, cluster: LocalCluster, namespace: str) -> bytes:
    """The bytes a created pod occupies in the store: what the raw puts
    write, so both sides move the same bytes through Raft."""
    await client.create(PODS, pod_body("size-probe"), namespace, field_manager="bench")
    with cluster.client() as store:
        [kv] = store.range(kv_pb2.RangeRequest(key=b"/registry/pods/%s/size-probe" % namespace.encode())).kvs
    return bytes(kv.value)


async def fill(client: ApiClient, namespace: str, count: int) -> None:
    before, after = template(namespace)
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            body = json.loads(before + b"fill-%05d" % i + after)
            await client.create(PODS, body, namespace, field_manager="bench")

    await asyncio.gather(*(worker() for _ in range(32)))


async def list_timings(api: str, endpoint: str, namespace: str, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """(fetch, parse) seconds per list: the HTTP GET until the last byte,
    then parsing its JSON (orjson); over gRPC, the call and decoding the
    items."""
    timings: dict[str, list[tuple[float, float]]] = {
        'REST rv="" (linearizable)': [],
        "REST rv=0 (local)": [],
        'gRPC rv=""': [],
        "JSON parse, collector running": [],  # what pausing it saves
    }
    async with aiohttp.ClientSession() as session, ApiClient([endpoint], timeout=30) as client:
        for _ in range(repeats):
            for label, query in (('REST rv="" (linearizable)', ""), ("REST rv=0 (local)", "?resourceVersion=0")):
                t0 = time.perf_counter()
                async with session.get(f"{api}/api/v1/namespaces/{namespace}/pods{query}") as resp:
                    body = await resp.read()
                t1 = time.perf_counter()
                with codec.collector_paused():
                    listed = codec.loads(body)
                timings[label].append((t1 - t0, time.perf_counter() - t1))
                assert listed["items"]
                del listed  # not alive while the next one is parsed
                if not query:
                    t1 = time.perf_counter()
                    listed = codec.loads(body)
                    timings["JSON parse, collector running"].append((0.0, time.perf_counter() - t1))
                    del listed
            t0 = time.perf_counter()
            items = (await client.list(PODS, namespace))["items"]
            timings['gRPC rv=""'].append((time.perf_counter() - t0, 0.0))
            assert items
            del items
    return timings


async def watch_latency(api: str, endpoint: str, namespace: str, events: int) -> dict[str, list[float]]:
    """Seconds from sending a create to each watch receiving its event."""
    sent: dict[str, float] = {}
    got: dict[str, dict[str, float]] = {"REST": {}, "gRPC": {}}
    start_rv = ""
    async with ApiClient([endpoint]) as client, aiohttp.ClientSession() as session:
        start_rv = (await client.list(CONFIGMAPS, namespace, limit=1))["metadata"]["resourceVersion"]

        async def rest_watch() -> None:
            url = f"{api}/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion={start_rv}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                async for line in resp.content:
                    name = json.loads(line)["object"]["metadata"]["name"]
                    got["REST"][name] = time.perf_counter()
                    if len(got["REST"]) >= events:
                        return

        async def grpc_watch() -> None:
            async for event in client.watch(CONFIGMAPS, namespace, resource_version=start_rv, allow_bookmarks=False):
                got["gRPC"][event["object"]["metadata"]["name"]] = time.perf_counter()
                if len(got["gRPC"]) >= events:
                    return

        watchers = asyncio.gather(rest_watch(), grpc_watch())
        async with ApiClient([endpoint]) as writer:
            for i in range(events):
                name = f"w{i}"
                sent[name] = time.perf_counter()
                await writer.create(CONFIGMAPS, {"metadata": {"name": name}, "data": {"i": str(i)}}, namespace)
                await asyncio.sleep(0.01)  # a steady trickle, not a burst: latency, not queueing
        await asyncio.wait_for(watchers, 60)
    return {via: [got[via][n] - sent[n] for n in sent] for via in got}


@dataclass
class Cost:
    """What a run cost per operation, warm-up included (the module's
    docstring says why each figure is there): the leader's event loop
    thread and the whole machine, in us, and the machine's busy cores."""

    loop_us: float
    machine_us: float
    cores: float

    @staticmethod
    def of_medians(costs: list[Cost]) -> Cost:
        return Cost(
            median([c.loop_us for c in costs]), median([c.machine_us for c in costs]), median([c.cores for c in costs])
        )

    def __str__(self) -> str:
        return (
            f"leader loop {self.loop_us:4.0f} us/op"
            f"  machine {self.machine_us:4.0f} us/op ({self.cores:.2f} of {os.cpu_count()} cores busy)"
        )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


SECURE_USER = "bench-user"


def main() -> None:
    parser = argparse.ArgumentParser(description="raftkube API server benchmark")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per system and concurrency")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCY), help="concurrencies to load at"
    )
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="what to load (quote the secure ones)"
    )
    parser.add_argument(
        "--list-pods", type=int, default=10_000, help="pods in the listed namespace (0: no list timings)"
    )
    parser.add_argument("--list-repeats", type=int, default=5)
    parser.add_argument("--watch-events", type=int, default=300, help="events timed per watch (0: no watch timings)")
    add_keep_argument(parser)
    args = parser.parse_args()
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency values must be at least 1")
    # Raw store puts are every ratio's baseline; the secure systems are compared with the plain ones.
    wanted = set(args.systems) | {"store"}
    wanted |= {via.removesuffix(" secure") for via in wanted}
    wanted |= {"store" + SPREAD for via in wanted if via.endswith(SPREAD)}
    args.systems = [s for s in SYSTEMS if s in wanted]
    exit_cleanly_on_sigterm()
    print(f"API benchmark: {args.rounds} x {args.seconds:g} s per point, {os.cpu_count()} CPUs\n", flush=True)
    # Six masters and the load share two cores here: with the shipped 0.35 s
    # election timeout a starved follower would call elections mid-run, and
    # the bench would go on loading a deposed leader (forwarding every write).
    # This bench measures the API, not failover: longer timeouts.
    patient = ["--election-timeout-min", "2", "--election-timeout-max", "4"]
    with work_dir("raftkube-api-bench-", args.keep) as work, contextlib.ExitStack() as clusters:
        plain = clusters.enter_context(
            LocalCluster.running(os.path.join(work, "plain"), server_args=["--insecure", *patient])
        )
        secure = None
        if any(s.endswith("secure") for s in args.systems):
            secure = clusters.enter_context(LocalCluster.running(os.path.join(work, "secure"), server_args=patient))
        run(plain, secure, args)


def setup_secure(cluster: LocalCluster) -> ClientCredentials:
    """The bench namespace on the secure cluster, with `edit` bound to a
    user of its own: the credentials of that user."""

    async def setup() -> None:
        async with ApiClient(cluster.endpoints, credentials=cluster.admin_credentials) as admin:
            await admin.create(NAMESPACES, {"metadata": {"name": "bench"}})
            binding = {
                "metadata": {"name": "bench-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": SECURE_USER}],
            }
            await admin.create(resource("rolebindings", "rbac.authorization.k8s.io"), binding, "bench")

    asyncio.run(setup())
    credentials = cluster.credentials_for(SECURE_USER, [])

    async def allowed() -> None:  # the binding has reached every cache
        async with ApiClient(cluster.endpoints, credentials=credentials) as user:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await user.list(PODS, "bench")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)

    asyncio.run(allowed())
    return credentials


def run(plain: LocalCluster, secure: LocalCluster | None, args: argparse.Namespace) -> None:
    leader = plain.spec(plain.wait_ready(60))
    api, endpoint = f"http://{leader.api_address}", leader.grpc_address

    async def setup() -> bytes:
        async with ApiClient([endpoint]) as client:
            for ns in ("bench", "list", "watch"):
                await client.create(NAMESPACES, {"metadata": {"name": ns}})
            return await stored_pod(client, plain, "bench")

    pod_bytes = asyncio.run(setup())
    secure_leader_pid = 0
    # One load per system: (concurrency, round) -> its result.
    apis = [f"http://{m.api_address}" for m in plain.masters]
    endpoints = [m.grpc_address for m in plain.masters]
    loads: dict[str, Callable[[int, int], LoadResult]] = {
        "store": lambda c, r: run_load(endpoint, c, args.seconds, values=[pod_bytes]),
        "REST": lambda c, r: asyncio.run(rest_creates([api], "bench", f"rest-c{c}-r{r}", c, args.seconds)),
        "gRPC": lambda c, r: asyncio.run(grpc_creates([endpoint], "bench", f"grpc-c{c}-r{r}", c, args.seconds)),
        "store" + SPREAD: lambda c, r: run_load(endpoints, c, args.seconds, values=[pod_bytes]),
        "REST" + SPREAD: lambda c, r: asyncio.run(rest_creates(apis, "bench", f"rest-all-c{c}-r{r}", c, args.seconds)),
        "gRPC" + SPREAD: lambda c, r: asyncio.run(
            grpc_creates(endpoints, "bench", f"grpc-all-c{c}-r{r}", c, args.seconds)
        ),
    }
    if secure is not None:
        secure_leader = secure.spec(secure.wait_ready(60))
        secure_api, secure_endpoint = f"https://{secure_leader.api_address}", secure_leader.grpc_address
        secure_leader_pid = secure_leader.pid
        user = setup_secure(secure)
        loads["REST secure"] = lambda c, r: asyncio.run(
            rest_creates([secure_api], "bench", f"rest-c{c}-r{r}", c, args.seconds, credentials=user)
        )
        loads["gRPC secure"] = lambda c, r: asyncio.run(
            grpc_creates([secure_endpoint], "bench", f"grpc-c{c}-r{r}", c, args.seconds, credentials=user)
        )
    print(f"a stored pod is {len(pod_bytes)} bytes; raw puts write those bytes\n", flush=True)

    concurrencies: list[int] = args.concurrency
    runs: dict[str, dict[int, list[LoadResult]]] = {k: {c: [] for c in concurrencies} for k in args.systems}
    # Per run, what an operation cost the leader's loop and the machine.
    costs: dict[str, dict[int, list[Cost]]] = {k: {c: [] for c in concurrencies} for k in args.systems}
    leader_pids = {k: (secure_leader_pid if k.endswith("secure") else leader.pid) for k in args.systems}
    for c in concurrencies:
        for r in range(args.rounds):
            for system in runs:
                before, busy_before, t0 = loop_seconds(leader_pids[system]), machine_busy_seconds(), time.monotonic()
                result = loads[system](c, r)
                spent = loop_seconds(leader_pids[system]) - before
                busy, wall = machine_busy_seconds() - busy_before, time.monotonic() - t0
                ops = max(1.0, result.rate * (args.seconds + WARMUP))
                runs[system][c].append(result)
                costs[system][c].append(Cost(spent / ops * 1e6, busy / ops * 1e6, busy / wall))
                line = result.line(f"{system} (round {r + 1})").replace("puts/s", "ops/s ")
                print(f"{line}  {costs[system][c][-1]}", flush=True)
    medians = {k: {c: median_result(v) for c, v in per.items()} for k, per in runs.items()}

    lists: dict[str, list[tuple[float, float]]] = {}
    if args.list_pods:
        print(f"\nfilling a namespace with {args.list_pods} pods...", flush=True)
        t0 = time.perf_counter()

        async def filled() -> None:
            async with ApiClient([endpoint], timeout=30) as client:
                await fill(client, "list", args.list_pods)

        asyncio.run(filled())
        print(f"  {args.list_pods} pods created in {time.perf_counter() - t0:.1f} s", flush=True)
        lists = asyncio.run(list_timings(api, endpoint, "list", args.list_repeats))
    watches = asyncio.run(watch_latency(api, endpoint, "watch", args.watch_events)) if args.watch_events else {}

    # Each round's ratio, then the median over rounds (bench.kv_load.paired_ratio).
    # Each create system with the raw puts it is compared with (sent to the same masters).
    fronts: dict[str, str] = {
        via + placement: "store" + placement
        for placement in ("", SPREAD)
        for via in ("REST", "gRPC")
        if via + placement in runs
    }
    secured = [via for via in fronts if f"{via} secure" in runs]
    of_raw = {
        (via, c): paired_ratio(runs[via][c], runs[base][c]) for via, base in fronts.items() for c in concurrencies
    }
    of_plain = {
        (via, c): paired_ratio(runs[f"{via} secure"][c], runs[via][c]) for via in secured for c in concurrencies
    }

    print("\nsummary (medians of the rounds; ratios: the median of each round's ratio [the ratio of the medians])")
    for c in concurrencies:
        for base in dict.fromkeys(fronts.values()) or ["store"]:
            s, placement = medians[base][c], base.removeprefix("store")
            print(
                f"  c={c:<3} {'raw puts' + placement:24} {s.rate:6.0f}/s  p50 {s.percentile(50) * 1000:5.1f} ms"
                f"  p99 {s.percentile(99) * 1000:5.1f} ms  {Cost.of_medians(costs[base][c])}"
            )
        for via, base in fronts.items():
            m, s = medians[via][c], medians[base][c]
            print(
                f"  c={c:<3} {via + ' creates':24} {m.rate:6.0f}/s  p50 {m.percentile(50) * 1000:5.1f} ms"
                f"  p99 {m.percentile(99) * 1000:5.1f} ms  {Cost.of_medians(costs[via][c])}"
                f"  = {100 * of_raw[via, c]:5.1f}% [{100 * m.rate / max(s.rate, 1):.1f}%] of raw puts"
            )
            if via not in secured:
                continue
            t = medians[f"{via} secure"][c]
            print(
                f"  c={c:<3} {via + ' secure':24} {t.rate:6.0f}/s  p50 {t.percentile(50) * 1000:5.1f} ms"
                f"  p99 {t.percentile(99) * 1000:5.1f} ms  {Cost.of_medians(costs[via + ' secure'][c])}"
                f"  = {100 * of_plain[via, c]:5.1f}%"
                f" [{100 * t.rate / max(m.rate, 1):.1f}%] of plain (TLS, RBAC as {SECURE_USER}, audit)"
            )
    for label, pairs in lists.items():
        total = statistics.median(f + p for f, p in pairs)
        fetch, parse = statistics.median(f for f, _ in pairs), statistics.median(p for _, p in pairs)
        print(
            f"  list {args.list_pods} pods, {label:28} median {total * 1000:6.0f} ms"
            f"  (fetch {fetch * 1000:.0f} ms, parse {parse * 1000:.0f} ms; {len(pairs)} runs)"
        )
    for via, values in watches.items():
        print(
            f"  watch delivery via {via:4}: p50 {pct(values, 50) * 1000:5.1f} ms  p99 {pct(values, 99) * 1000:5.1f} ms"
            f"  ({len(values)} events)"
        )

    print("\ntargets (creates are compared with raw puts sent to the same masters)")
    for c in concurrencies:
        for via in fronts:
            share = of_raw[via, c]
            print(
                f"  c={c:<3} {via:16} creates >= 60% of raw puts: {100 * share:5.1f}%"
                f"  {'met' if share >= 0.6 else 'NOT met'}"
            )
    for via in fronts if 16 in concurrencies else []:
        p99 = medians[via][16].percentile(99) * 1000
        print(f"  c=16  {via:16} p99 < 100 ms:               {p99:5.1f} ms  {'met' if p99 < 100 else 'NOT met'}")
    for c in concurrencies:
        for via in secured:
            loss = 1 - of_plain[via, c]
            print(
                f"  c={c:<3} {via:4} security costs < 25% of creates/s: {100 * loss:5.1f}%"
                f"  {'met' if loss < 0.25 else 'NOT met'}"
            )
    for label, pairs in lists.items():
        if label.startswith("REST"):
            took = statistics.median(f + p for f, p in pairs)
            print(
                f"  list {args.list_pods} pods {label:28} < 1 s: {took * 1000:5.0f} ms"
                f"  {'met' if took < 1 else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
