"""Store benchmark: committed puts/s and latency of 1 KiB values through the
gRPC KV service at concurrency 1, 16 and 64, for

- raftkube: 3 masters on loopback, writes sent to the leader;
- baseline: bare pysyncobj 0.3.17 with default settings, 3 members behind
  the same gRPC front end (bench/baseline_servers.py);
- ceiling: the same gRPC front end over a plain dict, no Raft at all;

all measured in this run, with ratios; then leader failover: the time from
kill -9 of the leader to the next committed write, over 5 trials, with the
election timeouts the server ships by default.

Throughput on a shared 2-core VM swings by tens of percent, from one
second to the next (a fixed pure-Python loop, alone on an idle VM, took
from 16 to 27 ms in consecutive half-second samples), so all three systems
run at once (idle, they cost little) and each point is measured round-robin
across them for several rounds, in an order that turns around every round,
raftkube next to the ceiling; the figures are medians, and each ratio is
the median of the ratios of runs taken side by side in one round (the
ratio of the medians is printed beside it).

    python -m bench.store_bench [--seconds 4] [--rounds 5] [--trials 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from bench.kv_load import LoadResult, median_result, paired_ratio, run_load, turn_order
from bench.work_dir import add_keep_argument, work_dir
from control_plane.local_cluster import LocalCluster, exit_cleanly_on_sigterm, free_port
from ha.client import StoreClient
from ha.storepb import kv_pb2, kv_pb2_grpc

CONCURRENCY = (1, 16, 64)


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_servers", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


@contextmanager
def dict_server() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    proc = _spawn(["dict", "--grpc-address", address])
    try:
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@contextmanager
def pysyncobj_cluster(directory: str) -> Iterator[str]:
    """Three bare pysyncobj members; yields the leader's gRPC address."""
    raft = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    grpc_addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    procs = []
    try:
        for i in range(3):
            partners = [a for a in raft if a != raft[i]]
            args = ["pysyncobj", "--grpc-address", grpc_addresses[i], "--raft-address", raft[i]]
            args += [x for p in partners for x in ("--partner", p)]
            args += ["--data-dir", os.path.join(directory, f"p{i}")]
            procs.append(_spawn(args))
        deadline = time.monotonic() + 60
        while True:
            for address in grpc_addresses:
                with grpc.insecure_channel(address) as ch:
                    resp = kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(key=b"x"), timeout=2)
                if resp.header.revision == 1:  # that member says it leads
                    yield address
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the pysyncobj baseline elected no leader")
            time.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def measure_interleaved(
    systems: dict[str, Callable[[], str]], seconds: float, rounds: int
) -> dict[str, dict[int, list[LoadResult]]]:
    """For each concurrency, `rounds` rounds of one run per system; every
    run, by system and concurrency, in round order. The order of the
    systems turns around every round, so neither of two neighbours always
    goes first and neighbours stay side by side (the VM's speed changes
    from one second to the next). Each system names the endpoint to load
    before every run (raftkube: its leader then), and a change is printed:
    a run after a leader change would otherwise load a follower, which
    forwards every write, and nothing would say so."""
    runs: dict[str, dict[int, list[LoadResult]]] = {name: {c: [] for c in CONCURRENCY} for name in systems}
    loaded: dict[str, str] = {}
    for c in CONCURRENCY:
        for r in range(rounds):
            for name, endpoint_now in turn_order(systems.items(), r):
                endpoint = endpoint_now()
                previous = loaded.get(name, endpoint)
                if previous != endpoint:
                    print(f"{name}: now loading {endpoint} (was {previous})", flush=True)
                loaded[name] = endpoint
                result = run_load(endpoint, c, seconds)
                runs[name][c].append(result)
                print(result.line(f"{name} (round {r + 1})"), flush=True)
    return runs


def failover_trials(cluster: LocalCluster, trials: int) -> list[float]:
    """Seconds from kill -9 of the leader to the next committed write."""
    times = []
    for trial in range(trials):
        leader = cluster.wait_ready(60)
        survivors = [m.grpc_address for m in cluster.masters if m.id != leader]
        with StoreClient(survivors, timeout=1.0, retry_for=0) as client:
            client.put(b"/bench/failover/warm", b"x")  # connections up before the clock starts
            cluster.kill(leader)
            killed = time.monotonic()
            while True:
                try:
                    client.put(b"/bench/failover/%d" % trial, b"x")
                    break
                except grpc.RpcError:
                    client._current = (client._current + 1) % len(client.endpoints)
            times.append(time.monotonic() - killed)
        print(f"failover trial {trial + 1}: {times[-1] * 1000:.0f} ms (killed {leader})", flush=True)
        cluster.start(leader)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description="raftkube store benchmark")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per system and concurrency")
    parser.add_argument("--trials", type=int, default=5, help="failover trials")
    add_keep_argument(parser)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    print(
        f"store benchmark: 1 KiB values, {args.rounds} x {args.seconds:g} s per point, {os.cpu_count()} CPUs\n",
        flush=True,
    )
    with (
        work_dir("raftkube-bench-", args.keep) as work,
        dict_server() as ceiling_address,
        pysyncobj_cluster(work) as baseline_address,
        # Plaintext, as the two baselines: this measures the store, not TLS (bench/api_bench.py measures that).
        LocalCluster.running(os.path.join(work, "raftkube"), server_args=["--insecure"]) as cluster,
    ):
        # raftkube beside the ceiling, the ratio that has to be close.
        systems = {
            "pysyncobj": lambda: baseline_address,
            "ceiling": lambda: ceiling_address,
            "raftkube": lambda: cluster.spec(cluster.wait_ready(60)).grpc_address,
        }
        runs = measure_interleaved(systems, args.seconds, args.rounds)
        print()
        failovers = failover_trials(cluster, args.trials)
    medians = {name: {c: median_result(rs) for c, rs in per.items()} for name, per in runs.items()}
    raftkube, baseline, ceiling = medians["raftkube"], medians["pysyncobj"], medians["ceiling"]

    print("\nsummary (medians; ratios: the median of each round's ratio, and in brackets the ratio of the medians)")
    print("  ceiling: the same gRPC front end over a dict, no Raft; pysyncobj: bare 0.3.17, default settings")
    shares: dict[int, float] = {}
    for c in CONCURRENCY:
        r, b, x = raftkube[c], baseline[c], ceiling[c]
        speedup = paired_ratio(runs["raftkube"][c], runs["pysyncobj"][c])
        shares[c] = paired_ratio(runs["raftkube"][c], runs["ceiling"][c])
        print(
            f"  c={c:<3} raftkube {r.rate:6.0f}/s  p50 {r.percentile(50) * 1000:5.1f} ms"
            f"  p99 {r.percentile(99) * 1000:5.1f} ms"
            f"  | x{speedup:5.2f} [x{r.rate / max(b.rate, 1):.2f}] pysyncobj"
            f" ({b.rate:.0f}/s, p99 {b.percentile(99) * 1000:.0f} ms)"
            f"  | {100 * shares[c]:5.1f}% [{100 * r.rate / max(x.rate, 1):.1f}%] of the ceiling ({x.rate:.0f}/s)"
        )
    median = statistics.median(failovers)
    print(f"  leader failover (kill -9 to next committed write): median {median * 1000:.0f} ms over {len(failovers)}")
    r64, r16 = raftkube[64], raftkube[16]
    print("\ntargets")
    print(f"  c=64 >= 2500 puts/s:           {r64.rate:.0f}  {'met' if r64.rate >= 2500 else 'NOT met'}")
    share = shares[64]
    print(f"  c=64 >= 75% of the ceiling:    {100 * share:.1f}%  {'met' if share >= 0.75 else 'NOT met'}")
    p99 = r16.percentile(99) * 1000
    print(f"  c=16 p99 < 50 ms:              {p99:.1f} ms  {'met' if p99 < 50 else 'NOT met'}")
    print(f"  failover median < 1 s:         {median * 1000:.0f} ms  {'met' if median < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
