"""Two versions of raftkube side by side, for changes smaller than this
VM's drift (±20% from minute to minute): two plain 3-master clusters run at
once, one from another checkout (`--base DIR`, imported through
PYTHONPATH) or with other environment variables (`--base-env K=V`), and
the same loads alternate between them, round after round, so every pair of
runs saw about the same machine.

For each load and version it prints the rate and, per operation (warm-up
included, from /proc): the leader's CPU (all threads: grpc's poller thread
works outside the GIL), its main thread's alone (the event loop, which
does all the Python work and is what saturates), and the followers'; the
Raft log entries the leader proposed per second and the commands each
carried (its raftkube_store_batch_commands histogram); and, for the API
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
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.api_bench import NAMESPACES, grpc_creates, rest_creates, stored_pod
from bench.kv_load import LoadResult, median_result, paired_ratio, run_load, turn_order
from bench.proc_cpu import cpu_seconds
from bench.work_dir import add_keep_argument, work_dir
from control_plane.client import ApiClient
from control_plane.local_cluster import LocalCluster, MasterSpec, exit_cleanly_on_sigterm

LOADS = ("store", "gRPC", "REST")
# As api_bench: six masters share the cores with the load, so a starved
# follower must not call elections mid-run.
PATIENT = ["--insecure", "--election-timeout-min", "2", "--election-timeout-max", "4"]


def batches(metrics_address: str) -> tuple[float, float]:
    """(log entries proposed, commands they carried) so far, from a master's /metrics."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "raftkube_store_batch_commands"
        for sample in family.samples
    }
    return values.get("raftkube_store_batch_commands_count", 0.0), values.get("raftkube_store_batch_commands_sum", 0.0)


@dataclass
class Sample:
    result: LoadResult
    # Per operation, in microseconds.
    leader: float
    main_thread: float
    followers: float
    entries_per_second: float
    commands_per_entry: float

    def figures(self) -> str:
        return (
            f"leader {self.leader:4.0f} (loop {self.main_thread:4.0f}) followers {self.followers:4.0f} us/op  "
            f"{self.entries_per_second:3.0f} entries/s of {self.commands_per_entry:4.1f}"
        )

    @classmethod
    def median(cls, runs: list[Sample]) -> Sample:
        """Each figure's median over the runs (the result: the median run's)."""

        def of(field: Callable[[Sample], float]) -> float:
            return statistics.median(field(s) for s in runs)

        return cls(
            median_result([s.result for s in runs]),
            of(lambda s: s.leader),
            of(lambda s: s.main_thread),
            of(lambda s: s.followers),
            of(lambda s: s.entries_per_second),
            of(lambda s: s.commands_per_entry),
        )


@dataclass
class Runner:
    cluster: LocalCluster
    leader: MasterSpec
    loads: dict[str, Callable[[str], LoadResult]]

    def __post_init__(self) -> None:
        self.followers = [m.pid for m in self.cluster.masters if m.pid != self.leader.pid]

    def run(self, load: str, name: str, seconds: float) -> Sample:
        pid = self.leader.pid

        def cpu() -> tuple[float, float, float]:
            return cpu_seconds(pid), cpu_seconds(pid, pid), sum(cpu_seconds(f) for f in self.followers)

        before, entries_before = cpu(), batches(self.leader.metrics_address)
        result = self.loads[load](name)
        after, entries_after = cpu(), batches(self.leader.metrics_address)
        ops = max(result.rate * seconds, 1)  # seconds: warm-up included
        leader, main_thread, others = ((a - b) / ops * 1e6 for a, b in zip(after, before, strict=True))
        entries = entries_after[0] - entries_before[0]
        return Sample(
            result,
            leader,
            main_thread,
            others,
            entries / seconds,
            (entries_after[1] - entries_before[1]) / entries if entries else 0.0,
        )


def loads_for(
    leader: MasterSpec, pod: bytes, concurrency: int, seconds: float
) -> dict[str, Callable[[str], LoadResult]]:
    api = f"http://{leader.api_address}"
    return {
        "store": lambda run: run_load(leader.grpc_address, concurrency, seconds, values=[pod]),
        "gRPC": lambda run: asyncio.run(grpc_creates([leader.grpc_address], "bench", run, concurrency, seconds)),
        "REST": lambda run: asyncio.run(rest_creates([api], "bench", run, concurrency, seconds)),
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
    add_keep_argument(parser)
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
    print(f"paired A/B: {args.rounds} rounds x {args.seconds:g} s at c={args.concurrency}; base {versions['base']}\n")
    results: dict[tuple[str, str], list[Sample]] = {}
    with work_dir("raftkube-paired-ab-", args.keep) as work, contextlib.ExitStack() as stack:
        # `python -m` puts the working directory first on a master's sys.path:
        # from a checkout, it would shadow the base's PYTHONPATH.
        os.chdir(work)
        runners: dict[str, Runner] = {}
        for name, env in versions.items():
            cluster = stack.enter_context(LocalCluster.running(os.path.join(work, name), server_args=PATIENT, env=env))
            leader = cluster.spec(cluster.wait_ready(60))

            async def setup(cluster: LocalCluster = cluster, leader: MasterSpec = leader) -> bytes:
                async with ApiClient([leader.grpc_address]) as client:
                    await client.create(NAMESPACES, {"metadata": {"name": "bench"}})
                    return await stored_pod(client, cluster, "bench")

            pod = asyncio.run(setup())
            runners[name] = Runner(cluster, leader, loads_for(leader, pod, args.concurrency, args.seconds))
        for r in range(args.rounds):
            for load in loads:
                for name in turn_order(versions, r):
                    # Pod names: lower case.
                    sample = runners[name].run(load, f"{name}-{load.lower()}-{r}", args.seconds + 1)
                    results.setdefault((load, name), []).append(sample)
                    print(f"{sample.result.line(f'{load} {name} (round {r + 1})')}  {sample.figures()}", flush=True)
    print("\nmedians (per op: CPU of the leader, its event loop's thread, both followers)")
    for load in loads:
        for name in versions:
            runs = results[load, name]
            rate = statistics.median(s.result.rate for s in runs)
            share = ""
            if load != "store":
                ratio = paired_ratio([s.result for s in runs], [s.result for s in results["store", name]])
                share = f"  {100 * ratio:5.1f}% of raw puts (paired)"
            print(f"  {load:5} {name:7} {rate:6.0f}/s  {Sample.median(runs).figures()}{share}")


if __name__ == "__main__":
    main()
