"""What the node agent tells the masters about its host: capacity and
allocatable (CPU, memory, pods) read from the machine, addresses, the
standard labels, conditions and versions, as a kubelet registers a Node."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

Object = dict[str, Any]
MAX_PODS = 110  # the kubelet's default
AGENT_VERSION = "v1.33.0-raftkube"
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def memory_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def capacity() -> dict[str, str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"cpu": str(cpus), "memory": f"{memory_bytes() // 1024}Ki", "pods": str(MAX_PODS)}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_object(name: str, node_ip: str, port: int, runtime: str, labels: dict[str, str] | None = None) -> Object:
    arch = ARCHES.get(platform.machine(), platform.machine())
    stamp = now()
    conditions = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    resources = capacity()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
                **(labels or {}),
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "addresses": [{"type": "InternalIP", "address": node_ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for kind, status, reason, message in conditions
            ],
            "nodeInfo": {
                "machineID": _machine_id(),
                "systemUUID": _machine_id(),
                "bootID": _boot_id(),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": f"{runtime}://{AGENT_VERSION}",
                "kubeletVersion": AGENT_VERSION,
                "kubeProxyVersion": AGENT_VERSION,
                "operatingSystem": "linux",
                "architecture": arch,
            },
        },
    }


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _machine_id() -> str:
    return _read("/etc/machine-id") or socket.gethostname()


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()
