"""The Node authorizer's decisions, by the pods bound to each node."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.security.authz import Attributes, Decision
from control_plane.security.identity import authenticated
from control_plane.security.node_authorizer import NodeAuthorizer, pod_references

N1 = authenticated("system:node:n1", groups=["system:nodes"])


def make_pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "w", "uid": name}, "spec": {"nodeName": node, **spec}}


PODS = [
    pod_references(
        make_pod(
            "a",
            "n1",
            volumes=[{"name": "v", "secret": {"secretName": "tls"}}],
            containers=[{"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "k"}}}]}],
            serviceAccountName="runner",
        )
    ),
    pod_references(make_pod("b", "n2", volumes=[{"name": "v", "secret": {"secretName": "other"}}])),
]


class Graph:
    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((p for p in PODS if p["metadata"]["name"] == name), None)

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        return [p for p in PODS if p["spec"]["nodeName"] == node]


def ask(
    verb: str, resource: str, name: str = "", ns: str = "w", sub: str = "", group: str = "", fs: str = ""
) -> Decision:
    attrs = Attributes(N1, verb, api_group=group, resource=resource, subresource=sub, namespace=ns, name=name,
                       field_selector=fs)  # fmt: skip
    return NodeAuthorizer(Graph()).authorize(attrs).decision


ALLOW, NONE = Decision.ALLOW, Decision.NO_OPINION


@pytest.mark.parametrize(
    "question, decision",
    [
        pytest.param(("get", "pods", "a"), ALLOW, id="its-pod"),
        pytest.param(("get", "pods", "b"), NONE, id="another-nodes-pod"),
        pytest.param(("update", "pods", "a", "w", "status"), ALLOW, id="its-pod-status"),
        pytest.param(("update", "pods", "b", "w", "status"), NONE, id="another-pod-status"),
        pytest.param(("list", "pods", "", "", "", "", "spec.nodeName=n1"), ALLOW, id="list-its-pods"),
        pytest.param(("watch", "pods", "", "", "", "", "spec.nodeName=n2"), NONE, id="watch-others"),
        pytest.param(("list", "pods"), NONE, id="list-all-pods"),
        pytest.param(("get", "secrets", "tls"), ALLOW, id="secret-its-pod-mounts"),
        pytest.param(("get", "secrets", "other"), NONE, id="secret-of-another-node"),
        pytest.param(("watch", "secrets", "", "w", "", "", "metadata.name=tls"), ALLOW, id="watch-one-secret"),
        pytest.param(("list", "secrets"), NONE, id="list-secrets"),
        pytest.param(("get", "configmaps", "conf"), ALLOW, id="configmap-from-env"),
        pytest.param(("create", "serviceaccounts", "runner", "w", "token"), ALLOW, id="token-for-its-pods-account"),
        pytest.param(("create", "serviceaccounts", "default", "w", "token"), NONE, id="token-for-another-account"),
        pytest.param(("patch", "nodes", "n1", "", "status"), ALLOW, id="its-node-status"),
        pytest.param(("patch", "nodes", "n2", "", "status"), NONE, id="another-node-status"),
        pytest.param(("list", "nodes"), ALLOW, id="read-nodes"),
        pytest.param(("update", "leases", "n1", "kube-node-lease", "", "coordination.k8s.io"), ALLOW, id="its-lease"),
        pytest.param(("update", "leases", "n2", "kube-node-lease", "", "coordination.k8s.io"), NONE, id="other-lease"),
        pytest.param(("create", "events"), ALLOW, id="events"),
        pytest.param(("delete", "deployments", "d", "w", "", "apps"), NONE, id="anything-else"),
    ],
)
def test_decisions(question: tuple[str, ...], decision: Decision) -> None:
    assert ask(*question) is decision


def test_not_a_node_no_opinion() -> None:
    alice = Attributes(authenticated("alice"), "get", resource="pods", namespace="w", name="a")
    assert NodeAuthorizer(Graph()).authorize(alice).decision is Decision.NO_OPINION
    impostor = Attributes(authenticated("system:node:n1"), "get", resource="pods", namespace="w", name="a")
    assert NodeAuthorizer(Graph()).authorize(impostor).decision is Decision.NO_OPINION  # not in system:nodes
