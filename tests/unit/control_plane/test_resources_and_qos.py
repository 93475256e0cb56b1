"""Quantities, QoS classes and resource validation, as Kubernetes has them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from control_plane.apis import codec
from control_plane.apis.defaults import apply_defaults, prepare_for_create
from control_plane.apis.quantity import parse_quantity
from control_plane.apis.resources import REGISTRY
from control_plane.apis.selectors import field_matcher, field_prefilter
from control_plane.apis.validation import validate


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("1", Decimal(1)),
        ("1.5", Decimal("1.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("2k", Decimal(2000)),
        ("2e3", Decimal(2000)),
        ("500u", Decimal("0.0005")),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Q", "1 Gi", "--1", "1.2.3"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity(text)


def pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": f"c{i}", "image": "x", **c} for i, c in enumerate(containers)]},
    }


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    apply_defaults("pods", obj)
    prepare_for_create("pods", obj)
    return obj


def test_qos_classes() -> None:
    assert defaulted(pod({}))["status"]["qosClass"] == "BestEffort"
    burstable = pod({"resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}})
    assert defaulted(burstable)["status"]["qosClass"] == "Burstable"
    # Limits alone request the limits; equal CPU and memory in every container is Guaranteed.
    guaranteed = defaulted(pod({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}))
    assert guaranteed["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert guaranteed["status"]["qosClass"] == "Guaranteed"
    equal_in_other_units = pod(
        {"resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}
    )
    assert defaulted(equal_in_other_units)["status"]["qosClass"] == "Guaranteed"
    one_without = pod({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}, {})
    assert defaulted(one_without)["status"]["qosClass"] == "Burstable"
    # Only CPU and memory count.
    assert defaulted(pod({"resources": {"limits": {"ephemeral-storage": "1Gi"}}}))["status"]["qosClass"] == "BestEffort"


def test_resource_validation() -> None:
    pods = REGISTRY.lookup("", "v1", "pods")
    assert pods is not None
    bad = pod(
        {"resources": {"requests": {"cpu": "lots", "memory": "-1"}}},
        {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    )
    messages = {c.field: c.message for c in validate(pods, defaulted(bad))}
    assert messages["spec.containers[0].resources.requests[cpu]"].startswith(
        'Invalid value: "lots": quantities must match'
    )
    assert (
        messages["spec.containers[0].resources.requests[memory]"]
        == 'Invalid value: "-1": must be greater than or equal to 0'
    )
    assert (
        messages["spec.containers[1].resources.requests[cpu]"]
        == 'Invalid value: "2": must be less than or equal to cpu limit of 1'
    )
    assert not validate(pods, defaulted(pod({"resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}}})))


def test_probe_and_volume_validation() -> None:
    pods = REGISTRY.lookup("", "v1", "pods")
    assert pods is not None
    bad = pod(
        {
            "livenessProbe": {"periodSeconds": 5},
            "readinessProbe": {"exec": {"command": ["x"]}, "tcpSocket": {"port": 1}},
        },
        {"startupProbe": {"httpGet": {"port": 70000}, "successThreshold": 2, "timeoutSeconds": 0}},
        {"volumeMounts": [{"name": "nowhere", "mountPath": "/m"}, {"name": "v", "mountPath": "/n", "subPath": "../x"}]},
    )
    bad["spec"]["volumes"] = [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/tmp"}}, {"name": "v"}]
    messages = {c.field: c.message for c in validate(pods, defaulted(bad))}
    assert messages["spec.containers[0].livenessProbe"] == "Required value: must specify a handler type"
    assert messages["spec.containers[0].readinessProbe.tcpSocket"].startswith("Forbidden: may not specify more than 1")
    assert messages["spec.containers[1].startupProbe.httpGet.port"].endswith("must be between 1 and 65535, inclusive")
    assert messages["spec.containers[1].startupProbe.successThreshold"] == "Invalid value: 2: must be 1"
    assert messages["spec.containers[1].startupProbe.timeoutSeconds"].endswith("must be greater than or equal to 1")
    assert messages["spec.containers[2].volumeMounts[0].name"] == 'Not found: "nowhere"'
    assert "subPath" in "".join(messages)
    assert messages["spec.volumes[0].hostPath"].startswith("Forbidden: may not specify more than 1 volume type")
    assert messages["spec.volumes[1].name"] == 'Duplicate value: "v"'
    assert messages["spec.volumes[1]"] == "Required value: must specify a volume type"
    good = pod({"readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 2}})
    good["spec"]["volumes"] = [{"name": "v", "configMap": {"name": "c"}}]
    good["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/etc/c", "subPath": "a/b"}]
    assert not validate(pods, defaulted(good))


@pytest.mark.parametrize(
    "selector, obj, parsed",
    [
        pytest.param("spec.nodeName=n1", {"spec": {"nodeName": "n1"}}, True, id="equal"),
        pytest.param("spec.nodeName=n1", {"spec": {"nodeName": "n2"}}, False, id="other"),
        pytest.param("spec.nodeName!=", {"spec": {"nodeName": "n2"}}, True, id="set"),
        pytest.param("spec.nodeName!=", {"spec": {}}, False, id="unset"),
        pytest.param("spec.replicas=3", {"spec": {"replicas": 3}}, True, id="a-number"),
        pytest.param("status.phase!=Failed,metadata.name=a", {"metadata": {"name": "a"}}, True, id="combined"),
        pytest.param("spec.unschedulable=true", {"spec": {"unschedulable": True}}, True, id="a-bool"),
    ],
)
def test_the_field_prefilter_skips_only_what_cannot_match(selector: str, obj: dict[str, Any], parsed: bool) -> None:
    passes = field_prefilter(selector)(codec.dumps(obj))
    assert passes is parsed
    assert passes or not field_matcher(selector)(obj)  # never drops a match


def test_a_remembered_quantity_parses_as_a_fresh_one_and_bad_ones_still_fail() -> None:
    assert parse_quantity("128Mi") == parse_quantity("128Mi") == 128 * 2**20
    assert parse_quantity(" 100m ") == parse_quantity("0.1")
    long = "1" + "0" * 70  # too long to be remembered, parsed all the same
    assert parse_quantity(long) == Decimal(10) ** 70
    for bad in ("12x", "", True, None, [1]):
        with pytest.raises(ValueError):
            parse_quantity(bad)  # type: ignore[arg-type]
