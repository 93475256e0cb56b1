"""What objects are charged to a quota, and how computed usage is written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from control_plane.apis.quantity import format_quantity
from control_plane.apis.resources import REGISTRY
from control_plane.apiserver.admission.resource_quota import usage

PODS = REGISTRY.lookup("", "v1", "pods")
SERVICES = REGISTRY.lookup("", "v1", "services")
DEPLOYMENTS = REGISTRY.lookup("apps", "v1", "deployments")


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), phase: str = "Pending") -> dict[str, Any]:
    spec = {"containers": [{"resources": c} for c in containers], "initContainers": [{"resources": c} for c in init]}
    return {"spec": spec, "status": {"phase": phase}}


def test_pods_are_charged_their_larger_of_containers_and_init_containers() -> None:
    charged = usage(
        PODS,  # type: ignore[arg-type]
        pod(
            {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}},
            {"requests": {"cpu": "250m"}},
            init=({"requests": {"cpu": "2"}},),
        ),
    )
    assert charged == {
        "count/pods": 1,
        "pods": 1,
        "requests.cpu": Decimal(2),
        "cpu": Decimal(2),
        "requests.memory": 64 << 20,
        "memory": 64 << 20,
        "limits.cpu": Decimal(1),
    }
    assert usage(PODS, pod({"requests": {"cpu": "1"}}, phase="Succeeded")) == {}  # type: ignore[arg-type]


def test_services_and_other_kinds() -> None:
    node_port = {"spec": {"type": "NodePort", "ports": [{"nodePort": 30001}, {"nodePort": 30002}]}}
    assert usage(SERVICES, node_port) == {"count/services": 1, "services": 1, "services.nodeports": 2}  # type: ignore[arg-type]
    assert usage(DEPLOYMENTS, {"spec": {}}) == {"count/deployments.apps": 1}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value, binary, text",
    [(Decimal(50), False, "50"), (Decimal("1.5"), False, "1500m"), (Decimal(256 << 20), True, "256Mi"),
     (Decimal(1000), True, "1000"), (Decimal("0.0000005"), False, "500n"), (Decimal(0), True, "0")],
)  # fmt: skip
def test_quantities_are_written_as_kubernetes_writes_them(value: Decimal, binary: bool, text: str) -> None:
    assert format_quantity(value, binary) == text
