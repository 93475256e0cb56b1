"""Service cluster IPs and node ports, allocated as kube-apiserver
allocates them, and kept unique across masters by the store.

Every allocated value is a key of its own (/registry/allocations/
clusterips/<ip>, .../nodeports/<port>), created in the same transaction as
the Service that holds it, on the condition that it does not exist yet, and
deleted with it. Two masters giving the same address to two Services at the
same moment is thus a failed transaction for one of them, which picks again:
no allocator state outside the store, no leader-only allocator, nothing to
repair after a crash. (Kubernetes 1.33 moved to the same idea: one IPAddress
object per allocated address.)
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from control_plane.apis.errors import Cause

Object = dict[str, Any]

SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
NODE_PORTS = range(30000, 32768)
ALLOCATIONS = b"/registry/allocations/"
_IPS = ALLOCATIONS + b"clusterips/"
_PORTS = ALLOCATIONS + b"nodeports/"
NEEDS_NODE_PORTS = ("NodePort", "LoadBalancer")
Taken = Callable[[bytes], Awaitable[bool]]


def cluster_ip_key(ip: str) -> bytes:
    return _IPS + ip.encode()


def node_port_key(port: int) -> bytes:
    return _PORTS + str(port).encode()


def reserved_keys(service: Object | None) -> set[bytes]:
    """The allocation keys a stored Service holds."""
    if not service:
        return set()
    spec = service.get("spec") or {}
    keys = {cluster_ip_key(ip) for ip in spec.get("clusterIPs") or [] if ip and ip != "None"}
    for port in spec.get("ports") or []:
        if isinstance(port, dict) and port.get("nodePort"):
            keys.add(node_port_key(int(port["nodePort"])))
    return keys


async def allocate(
    spec: Object, old_spec: Object | None, taken: Taken, rng: random.Random | None = None
) -> list[Cause]:
    """Fill in spec.clusterIP(s) and node ports that a Service of its type
    needs, keeping what `old_spec` (on update) already holds. `taken` says
    whether an allocation key exists now (a local read; the transaction's
    guard settles races: the caller allocates again from the spec as the
    client sent it). Returns the causes for what the client asked for and
    cannot have."""
    rng = rng or random.SystemRandom()
    causes: list[Cause] = []
    old_spec = old_spec or {}
    kind = spec.get("type") or "ClusterIP"
    if kind == "ExternalName":
        for field in ("clusterIP", "clusterIPs"):
            spec.pop(field, None)
    else:
        await _cluster_ip(spec, old_spec, taken, rng, causes)
    held = {int(p["nodePort"]) for p in old_spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")}
    for i, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, dict):
            continue
        if kind not in NEEDS_NODE_PORTS:
            if port.get("nodePort") and port["nodePort"] == _same_port(old_spec, port):
                del port["nodePort"]  # a type change away from NodePort drops them, as Kubernetes does
            elif port.get("nodePort"):
                causes.append(
                    Cause(
                        f"spec.ports[{i}].nodePort",
                        f"Forbidden: may not be used when `type` is '{kind}'",
                        "FieldValueForbidden",
                    )
                )
            continue
        if not port.get("nodePort"):
            previous = _same_port(old_spec, port)
            if previous is not None:
                port["nodePort"] = previous
                continue
            port["nodePort"] = await _pick_port(taken, rng, {*held, *_ports_in(spec)})
            if port["nodePort"] is None:
                causes.append(
                    Cause(
                        f"spec.ports[{i}].nodePort",
                        f"Internal error: no node port left in {NODE_PORTS.start}-{NODE_PORTS.stop - 1}",
                        "FieldValueInvalid",
                    )
                )
                port.pop("nodePort")
                continue
            continue
        value = port["nodePort"]
        if not isinstance(value, int) or value not in NODE_PORTS:
            causes.append(
                Cause(
                    f"spec.ports[{i}].nodePort",
                    f"Invalid value: {value}: provided port is not in the valid range. "
                    f"The range of valid ports is {NODE_PORTS.start}-{NODE_PORTS.stop - 1}",
                    "FieldValueInvalid",
                )
            )
        elif value not in held and await taken(node_port_key(value)):
            causes.append(
                Cause(
                    f"spec.ports[{i}].nodePort",
                    f"Invalid value: {value}: provided port is already allocated",
                    "FieldValueInvalid",
                )
            )
    if kind in NEEDS_NODE_PORTS:
        spec.setdefault("externalTrafficPolicy", "Cluster")
    return causes


async def _cluster_ip(
    spec: Object,
    old_spec: Object,
    taken: Taken,
    rng: random.Random,
    causes: list[Cause],
) -> None:
    old_ip = old_spec.get("clusterIP")
    wanted = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
    if not wanted and old_ip:
        wanted = old_ip  # an update that leaves it out keeps it, as Kubernetes patches it in
    if old_ip and wanted != old_ip:
        causes.append(Cause("spec.clusterIPs[0]", "Invalid value: field is immutable", "FieldValueInvalid"))
        return
    if wanted == "None":
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
    elif wanted:
        try:
            ip = ipaddress.IPv4Address(wanted)
        except ValueError:
            causes.append(
                Cause(
                    "spec.clusterIPs[0]", f'Invalid value: "{wanted}": must be a valid IP address', "FieldValueInvalid"
                )
            )
            return
        if wanted != old_ip:
            if ip not in SERVICE_CIDR or ip in (SERVICE_CIDR.network_address, SERVICE_CIDR.broadcast_address):
                causes.append(
                    Cause(
                        "spec.clusterIPs",
                        f'Invalid value: ["{wanted}"]: failed to allocate IP {wanted}: the provided IP ({wanted}) '
                        f"is not in the valid range. The range of valid IPs is {SERVICE_CIDR}",
                        "FieldValueInvalid",
                    )
                )
                return
            if await taken(cluster_ip_key(str(ip))):
                causes.append(
                    Cause(
                        "spec.clusterIPs",
                        f'Invalid value: ["{wanted}"]: failed to allocate IP {wanted}: '
                        "provided IP is already allocated",
                        "FieldValueInvalid",
                    )
                )
                return
        spec["clusterIP"], spec["clusterIPs"] = str(ip), [str(ip)]
    else:
        ip_text = await _pick_ip(taken, rng)
        spec["clusterIP"], spec["clusterIPs"] = ip_text, [ip_text]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")


async def _pick_ip(taken: Taken, rng: random.Random) -> str:
    # The first address after the network one is the `kubernetes` Service's,
    # as in Kubernetes; random picks in a /12 rarely collide, and a
    # collision is simply picked again.
    first, size = int(SERVICE_CIDR.network_address), SERVICE_CIDR.num_addresses
    while True:
        candidate = str(ipaddress.IPv4Address(first + rng.randrange(2, size - 1)))
        if not await taken(cluster_ip_key(candidate)):
            return candidate


async def _pick_port(taken: Taken, rng: random.Random, exclude: Iterable[int]) -> int | None:
    excluded = set(exclude)
    start = rng.randrange(len(NODE_PORTS))
    for offset in range(len(NODE_PORTS)):
        port = NODE_PORTS[(start + offset) % len(NODE_PORTS)]
        if port not in excluded and not await taken(node_port_key(port)):
            return port
    return None


def _ports_in(spec: Object) -> set[int]:
    # Only well-formed values: a bad one is reported for its own port.
    return {p["nodePort"] for p in spec.get("ports") or [] if isinstance(p, dict) and type(p.get("nodePort")) is int}


def _same_port(old_spec: Object, port: Object) -> int | None:
    """The node port an update keeps for a port the old Service had."""
    for old in old_spec.get("ports") or []:
        if (
            isinstance(old, dict)
            and old.get("nodePort")
            and old.get("port") == port.get("port")
            and old.get("protocol", "TCP") == port.get("protocol", "TCP")
        ):
            return int(old["nodePort"])
    return None
