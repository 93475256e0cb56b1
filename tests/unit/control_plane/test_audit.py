"""Audit policy levels and the records written at each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control_plane.security.audit import DEFAULT_POLICY, Auditor, PolicyError, parse_policy
from control_plane.security.authz import Attributes
from control_plane.security.identity import authenticated

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: [system:kube-proxy]
  - level: Metadata
    resources: [{group: "", resources: [secrets, configmaps]}]
  - level: RequestResponse
    verbs: [create, update, patch]
    namespaces: [prod]
  - level: Request
    resources: [{group: apps, resources: ["deployments/*"]}]
  - level: Metadata
    nonResourceURLs: ["/apis*"]
"""
ALICE = authenticated("alice")


def req(verb: str, resource: str = "pods", ns: str = "dev", group: str = "", sub: str = "") -> Attributes:
    return Attributes(ALICE, verb, api_group=group, resource=resource, subresource=sub, namespace=ns, name="x")


@pytest.mark.parametrize(
    "attrs, level",
    [
        pytest.param(Attributes(authenticated("system:kube-proxy"), "get", resource="pods"), "None", id="user"),
        pytest.param(req("create", "secrets", "prod"), "Metadata", id="first-rule-wins"),
        pytest.param(req("create", ns="prod"), "RequestResponse", id="verbs-and-namespaces"),
        pytest.param(req("get", ns="prod"), "None", id="no-rule"),
        pytest.param(req("update", "deployments", group="apps", sub="scale"), "Request", id="subresource-wildcard"),
        pytest.param(req("update", "deployments", group="apps"), "None", id="not-the-subresource"),
        pytest.param(Attributes(ALICE, "get", resource_request=False, path="/apis/apps"), "Metadata", id="url"),
        pytest.param(Attributes(ALICE, "get", resource_request=False, path="/version"), "None", id="other-url"),
    ],
)
def test_levels(attrs: Attributes, level: str) -> None:
    assert parse_policy(POLICY).level_of(attrs)[0] == level


@pytest.mark.parametrize(
    "text, error",
    [
        pytest.param("kind: Nope", "want kind: Policy", id="kind"),
        pytest.param("kind: Policy\nrules: [{level: Everything}]", "level must be one of", id="level"),
        pytest.param("kind: Policy\nomitStages: [Sometimes]", "unknown stage", id="stage"),
        pytest.param("kind: Policy\nrules: [{level: None, nonResourceURLs: [/x], namespaces: [a]}]", "cannot be",
                     id="urls-with-namespaces"),
        pytest.param("kind: Policy\nrules: [{level: None, users: alice}]", "list of strings", id="not-a-list"),
    ],
)  # fmt: skip
def test_bad_policies_say_why(text: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        parse_policy(text)


def test_records_carry_bodies_only_at_their_level(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    auditor = Auditor(parse_policy(POLICY), str(log))
    secret = {"metadata": {"name": "x"}, "data": {"k": "c2VjcmV0"}}
    for attrs in (req("create", "secrets", "prod"), req("create", "pods", "prod")):
        event = auditor.begin(attrs, "/api/v1/namespaces/prod/x", ["10.0.0.1"], "test/1.0")
        assert event is not None
        event.request_object = secret
        auditor.finish(event, 201, secret)
    auditor.close()
    metadata, full = (json.loads(line) for line in log.read_text().splitlines())
    assert (metadata["level"], metadata["stage"], metadata["responseStatus"]["code"]) == (
        "Metadata",
        "ResponseComplete",
        201,
    )
    assert (
        "requestObject" not in metadata and "responseObject" not in metadata and "c2VjcmV0" not in json.dumps(metadata)
    )
    assert metadata["objectRef"] == {"resource": "secrets", "apiVersion": "v1", "namespace": "prod", "name": "x"}
    assert full["requestObject"] == secret and full["responseObject"] == secret
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_the_default_policy_keeps_health_checks_and_lease_renewals_out() -> None:
    policy = parse_policy(DEFAULT_POLICY)
    node = authenticated("system:node:n1", groups=["system:nodes"])
    renew = Attributes(node, "update", api_group="coordination.k8s.io", resource="leases", namespace="kube-node-lease")
    assert policy.level_of(renew)[0] == "None"
    assert policy.level_of(Attributes(ALICE, "get", resource_request=False, path="/readyz"))[0] == "None"
    assert policy.level_of(req("get", "secrets"))[0] == "Metadata"
