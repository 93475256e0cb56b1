"""Cluster IP and node port allocation against a set of taken keys."""

from __future__ import annotations

import random
from typing import Any

from control_plane.apiserver import allocators
from control_plane.apiserver.allocators import NODE_PORTS, SERVICE_CIDR, allocate, cluster_ip_key, node_port_key


class Taken:
    def __init__(self, keys: set[bytes] | None = None):
        self.keys = keys or set()

    async def __call__(self, key: bytes) -> bool:
        return key in self.keys


async def test_picks_a_free_address_and_keeps_it_across_updates() -> None:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    assert await allocate(spec, None, Taken(), random.Random(1)) == []
    ip = spec["clusterIP"]
    assert spec["clusterIPs"] == [ip] and ip != str(SERVICE_CIDR.network_address + 1)
    update: dict[str, Any] = {"ports": [{"port": 80}]}
    assert await allocate(update, spec, Taken({cluster_ip_key(ip)}), random.Random(2)) == []
    assert update["clusterIP"] == ip  # held by this Service already: not "taken"
    changed = {"clusterIP": "10.96.0.99", "ports": [{"port": 80}]}
    [cause] = await allocate(changed, spec, Taken(), random.Random(3))
    assert "immutable" in cause.message


async def test_a_taken_pick_is_picked_again() -> None:
    rng = random.Random(7)
    first = str(SERVICE_CIDR.network_address + random.Random(7).randrange(2, SERVICE_CIDR.num_addresses - 1))
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    assert await allocate(spec, None, Taken({cluster_ip_key(first)}), rng) == []
    assert spec["clusterIP"] != first


async def test_node_ports_are_kept_by_port_and_never_doubled() -> None:
    spec: dict[str, Any] = {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}
    assert await allocate(spec, None, Taken(), random.Random(4)) == []
    a, b = (p["nodePort"] for p in spec["ports"])
    assert a != b and a in NODE_PORTS and b in NODE_PORTS
    assert allocators.reserved_keys({"spec": spec}) == {
        cluster_ip_key(spec["clusterIP"]),
        node_port_key(a),
        node_port_key(b),
    }
    update: dict[str, Any] = {"type": "NodePort", "ports": [{"port": 443}, {"port": 8080}]}
    assert await allocate(update, spec, Taken(allocators.reserved_keys({"spec": spec})), random.Random(5)) == []
    assert update["ports"][0]["nodePort"] == b and update["ports"][1]["nodePort"] not in (a, b)


async def test_the_last_free_node_port_and_none_left() -> None:
    free = 31000
    everything_else = Taken({node_port_key(p) for p in NODE_PORTS if p != free})
    spec: dict[str, Any] = {"type": "NodePort", "ports": [{"port": 80}]}
    assert await allocate(spec, None, everything_else, random.Random(6)) == []
    assert spec["ports"][0]["nodePort"] == free
    everything_else.keys.add(node_port_key(free))
    full: dict[str, Any] = {"type": "NodePort", "ports": [{"port": 80}]}
    [cause] = await allocate(full, None, everything_else, random.Random(6))
    assert "no node port left" in cause.message and "nodePort" not in full["ports"][0]


async def test_external_name_services_hold_nothing() -> None:
    spec: dict[str, Any] = {"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.0.5"}
    assert await allocate(spec, None, Taken(), random.Random(8)) == []
    assert "clusterIP" not in spec and allocators.reserved_keys({"spec": spec}) == set()


async def test_changing_the_type_away_from_node_port_releases_the_ports() -> None:
    node_port: dict[str, Any] = {"type": "NodePort", "ports": [{"port": 80}]}
    assert await allocate(node_port, None, Taken(), random.Random(9)) == []
    back = {**node_port, "type": "ClusterIP", "ports": [dict(p) for p in node_port["ports"]]}
    assert await allocate(back, node_port, Taken(allocators.reserved_keys({"spec": node_port})), random.Random(9)) == []
    assert "nodePort" not in back["ports"][0] and back["clusterIP"] == node_port["clusterIP"]
    assert allocators.reserved_keys({"spec": back}) == {cluster_ip_key(node_port["clusterIP"])}


async def test_a_malformed_node_port_is_a_cause_not_a_crash() -> None:
    spec: dict[str, Any] = {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": "abc"}]}
    [cause] = await allocate(spec, None, Taken(), random.Random(10))
    assert cause.field == "spec.ports[1].nodePort" and "not in the valid range" in cause.message
    assert spec["ports"][0]["nodePort"] in NODE_PORTS
