"""RBAC rule matching, bindings and escalation checks, as Kubernetes decides them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from control_plane.security.authz import Attributes, Chain, Decision, PrivilegedGroups, forbidden_message
from control_plane.security.identity import UserInfo, authenticated, service_account_user
from control_plane.security.rbac import RbacAuthorizer, rule_allows

ALICE = authenticated("alice", groups=["devs"])


def attrs(
    verb: str, resource: str = "pods", sub: str = "", group: str = "", ns: str = "team", name: str = ""
) -> Attributes:
    return Attributes(ALICE, verb, api_group=group, resource=resource, subresource=sub, namespace=ns, name=name)


@pytest.mark.parametrize(
    "rule, request_attrs, allowed",
    [
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs("get"), True, id="exact"),
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs("list"), False, id="verb"),
        pytest.param({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, attrs("delete"), True, id="stars"),
        pytest.param({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]}, attrs("get"), False, id="group"),
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs("get", sub="log"), False,
                     id="a-resource-is-not-its-subresource"),
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, attrs("get", sub="log"), True,
                     id="subresource"),
        pytest.param({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["*/scale"]},
                     attrs("get", "deployments", "scale", "apps"), True, id="any-resource-subresource"),
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
                     attrs("get", name="a"), True, id="named"),
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
                     attrs("get", name="b"), False, id="other-name"),
        pytest.param({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
                     attrs("list"), False, id="names-do-not-allow-lists"),
        pytest.param({"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
                     Attributes(ALICE, "get", resource_request=False, path="/healthz"), True, id="url"),
        pytest.param({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
                     Attributes(ALICE, "get", resource_request=False, path="/apis/apps/v1"), True, id="url-prefix"),
        pytest.param({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
                     Attributes(ALICE, "get", resource_request=False, path="/api"), False, id="url-outside-prefix"),
        pytest.param({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                     Attributes(ALICE, "get", resource_request=False, path="/pods"), False, id="resource-rule-no-url"),
    ],
)  # fmt: skip
def test_rule_matching(rule: dict[str, Any], request_attrs: Attributes, allowed: bool) -> None:
    assert rule_allows(rule, request_attrs) is allowed


class Policy:
    """A PolicySource from plain lists."""

    def __init__(self, roles: list[dict[str, Any]], bindings: list[dict[str, Any]]):
        self.generation = 0
        self._roles = {(r["metadata"].get("namespace", ""), r["metadata"]["name"], r["kind"]): r for r in roles}
        self._bindings = bindings

    def cluster_role_bindings(self) -> list[dict[str, Any]]:
        return [b for b in self._bindings if b["kind"] == "ClusterRoleBinding"]

    def role_bindings(self, namespace: str) -> list[dict[str, Any]]:
        return [b for b in self._bindings if b["kind"] == "RoleBinding" and b["metadata"]["namespace"] == namespace]

    def cluster_role(self, name: str) -> dict[str, Any] | None:
        return self._roles.get(("", name, "ClusterRole"))

    def role(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._roles.get((namespace, name, "Role"))


def role(kind: str, name: str, rules: list[dict[str, Any]], ns: str = "") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, **({"namespace": ns} if ns else {})}, "rules": rules}


def binding(kind: str, role_kind: str, role_name: str, subjects: list[dict[str, str]], ns: str = "") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": f"b-{role_name}", **({"namespace": ns} if ns else {})},
        "roleRef": {"kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


READ_PODS = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]
POLICY = Policy(
    [
        role("ClusterRole", "reader", READ_PODS),
        role("Role", "secret-writer", [{"verbs": ["create"], "apiGroups": [""], "resources": ["secrets"]}], "team"),
    ],
    [
        binding("ClusterRoleBinding", "ClusterRole", "reader", [{"kind": "Group", "name": "auditors"}]),
        binding("RoleBinding", "ClusterRole", "reader", [{"kind": "User", "name": "alice"}], "team"),
        binding("RoleBinding", "Role", "secret-writer", [{"kind": "ServiceAccount", "name": "ci"}], "team"),
    ],
)


@pytest.mark.parametrize(
    "user, request_attrs, allowed",
    [
        pytest.param(ALICE, attrs("list"), True, id="rolebinding-to-clusterrole"),
        pytest.param(ALICE, attrs("list", ns="other"), False, id="only-in-the-binding-namespace"),
        pytest.param(authenticated("bob", groups=["auditors"]), attrs("get", ns="any"), True, id="group-everywhere"),
        pytest.param(service_account_user("team", "ci"), attrs("create", "secrets"), True, id="service-account"),
        pytest.param(service_account_user("other", "ci"), attrs("create", "secrets"), False, id="sa-namespace-matters"),
        pytest.param(authenticated("ci"), attrs("create", "secrets"), False, id="a-user-is-not-a-service-account"),
    ],
)
def test_bindings(user: UserInfo, request_attrs: Attributes, allowed: bool) -> None:
    verdict = RbacAuthorizer(POLICY).authorize(replace(request_attrs, user=user))
    assert verdict.allowed is allowed


def test_privileged_groups_first_and_no_opinion_is_a_deny() -> None:
    chain = Chain([PrivilegedGroups(), RbacAuthorizer(POLICY)])
    root = authenticated("root", groups=["system:masters"])
    assert chain.authorize(Attributes(root, "delete", resource="nodes")).allowed
    denied = chain.authorize(Attributes(ALICE, "delete", resource="nodes"))
    assert denied.decision is Decision.DENY
    assert forbidden_message(Attributes(ALICE, "delete", resource="nodes", name="n1")) == (
        'nodes "n1" is forbidden: User "alice" cannot delete resource "nodes" in API group "" at the cluster scope'
    )


@pytest.mark.parametrize(
    "wanted, missing",
    [
        pytest.param(READ_PODS, 0, id="what-it-holds"),
        pytest.param([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}], 0,
                     id="narrower"),
        pytest.param([{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}], 1, id="another-verb"),
        pytest.param([{"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}], 1, id="a-wildcard-group"),
        pytest.param([{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}], 1, id="a-wildcard-verb"),
    ],
)  # fmt: skip
def test_escalation_check(wanted: list[dict[str, Any]], missing: int) -> None:
    assert len(RbacAuthorizer(POLICY).covers(ALICE, "team", wanted)) == missing
