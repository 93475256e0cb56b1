"""Two versions of raftkube side by side, for changes smaller than this
VM's drift (±20% from minute to minute): two plain 3-master clusters run at
once, one from another checkout (`--base DIR`, imported through
PYTHONPATH) or with other environment variables (`--base-env K=V`), and
the same loads alternate between them, round after round, so every pair of
runs saw about the same machine.

For each load and version it prints the rate, the leader's CPU per
operation (utime + stime from /proc, warm-up included) and, for the API
loads, the paired ratio to raw store puts (bench.kv_load.paired_ratio).

    python -m bench.paired_ab --base /tmp/old-checkout --loads store gRPC REST
    python -m bench.paired_ab --base-env SOME_SWITCH=1 --rounds 6

A checkout made with `git worktree add DIR COMMIT` serves as a base (it
holds the generated stubs). Both clusters and the load share the cores, so
absolute rates are lower than in api_bench; compare the two columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from collections.abc import Callable

from bench.api_bench import NAMESPACES, grpc_creates, rest_creates, stored_pod
from bench.kv_load import LoadResult, paired_ratio, run_load
from control_plane.client import ApiClient
from control_plane.local_cluster import LocalCluster, MasterSpec, exit_cleanly_on_sigterm

LOADS = ("store", "gRPC", "REST")
# As api_bench: six masters share the cores with the load, so a starved
# follower must not call elections mid-run.
PATIENT = ["--insecure", "--election-timeout-min", "2", "--election-timeout-max", "4"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loads_for(
    leader: MasterSpec, pod: bytes, concurrency: int, seconds: float
) -> dict[str, Callable[[str], LoadResult]]:
    api = f"http://{leader.api_address}"
    return {
        "store": lambda run: run_load(leader.grpc_address, concurrency, seconds, values=[pod]),
        "gRPC": lambda run: asyncio.run(grpc_creates(leader.grpc_address, "bench", run, concurrency, seconds)),
        "REST": lambda run: asyncio.run(rest_creates(api, "bench", run, concurrency, seconds)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="raftkube: two versions side by side, paired rounds")
    parser.add_argument("--base", help="a checkout to run the base cluster from (through PYTHONPATH)")
    parser.add_argument("--base-env", action="append", default=[], metavar="K=V", help="for the base cluster")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="for the current cluster")
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if not args.base and not args.base_env and not args.env:
        parser.error("give --base, --base-env or --env: otherwise both sides are the same")
    if args.base and not os.path.isdir(os.path.join(args.base, "control_plane")):
        parser.error(f"--base {args.base}: no control_plane/ there")

    def pairs(items: list[str]) -> dict[str, str]:
        if any("=" not in item for item in items):
            parser.error(f"environment settings are K=V: {items}")
        return dict(item.split("=", 1) for item in items)

    versions = {
        "base": {**pairs(args.base_env), **({"PYTHONPATH": os.path.abspath(args.base)} if args.base else {})},
        "current": pairs(args.env),
    }
    loads = ["store", *(x for x in args.loads if x != "store")]  # raw puts: every ratio's baseline
    exit_cleanly_on_sigterm()
    work = tempfile.mkdtemp(prefix="raftkube-paired-ab-")
    # `python -m` puts the working directory first on a master's sys.path:
    # from a checkout, it would shadow the base's PYTHONPATH.
    os.chdir(work)
    print(f"paired A/B: {args.rounds} rounds x {args.seconds:g} s at c={args.concurrency}; base {versions['base']}\n")
    results: dict[tuple[str, str], list[tuple[LoadResult, float]]] = {}
    with contextlib.ExitStack() as stack:
        runners: dict[str, tuple[int, dict[str, Callable[[str], LoadResult]]]] = {}
        for name, env in versions.items():
            cluster = stack.enter_context(LocalCluster.running(os.path.join(work, name), server_args=PATIENT, env=env))
            leader = cluster.spec(cluster.wait_ready(60))

            async def setup(cluster: LocalCluster = cluster, leader: MasterSpec = leader) -> bytes:
                async with ApiClient([leader.grpc_address]) as client:
                    await client.create(NAMESPACES, {"metadata": {"name": "bench"}})
                    return await stored_pod(client, cluster, "bench")

            pod = asyncio.run(setup())
            runners[name] = (leader.pid, loads_for(leader, pod, args.concurrency, args.seconds))
        for r in range(args.rounds):
            order = list(versions) if r % 2 == 0 else list(versions)[::-1]  # neither always goes first
            for load in loads:
                for name in order:
                    pid, run = runners[name]
                    before = cpu_seconds(pid)
                    result = run[load](f"{name}-{load.lower()}-{r}")  # pod names: lower case
                    per_op = (cpu_seconds(pid) - before) / max(result.rate * (args.seconds + 1), 1) * 1e6
                    results.setdefault((load, name), []).append((result, per_op))
                    print(f"{result.line(f'{load} {name} (round {r + 1})')}  leader {per_op:4.0f} us/op", flush=True)
    print("\nmedians")
    for load in loads:
        for name in versions:
            runs = results[load, name]
            rate = statistics.median(res.rate for res, _ in runs)
            cpu = statistics.median(per_op for _, per_op in runs)
            share = ""
            if load != "store":
                ratio = paired_ratio([res for res, _ in runs], [res for res, _ in results["store", name]])
                share = f"  {100 * ratio:5.1f}% of raw puts (paired)"
            print(f"  {load:5} {name:7} {rate:6.0f}/s  leader {cpu:4.0f} us/op{share}")


if __name__ == "__main__":
    main()
