"""CPU time of processes and threads, from /proc: how much of a master a
load costs per operation."""

from __future__ import annotations

import os


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process (or of one of its threads)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path, encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loop_seconds(pid: int) -> float:
    """A master's event loop thread's CPU time: its main thread, which runs
    all of its Python (gRPC's poller thread works outside the GIL)."""
    return cpu_seconds(pid, pid)


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot (every process, the
    kernel's work for loopback traffic included; not time the hypervisor
    gave to other guests), from /proc/stat: with wall time, how close a load
    came to what the machine can give."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
