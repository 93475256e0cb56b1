"""Security of a real 3-master cluster: who gets in (TLS, certificates,
tokens), what the default roles and the Node authorizer let them do,
ResourceQuota kept exact across masters, and the audit log."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from control_plane.apipb import resources_pb2 as pb
from control_plane.apipb import resources_pb2_grpc
from control_plane.client import ApiClient, resource
from control_plane.client.credentials import ClientCredentials
from control_plane.local_cluster import LocalCluster
from control_plane.security.pki import CertificateAuthority
from ha.storepb import kv_pb2, kv_pb2_grpc
from tests.support.kubectl import kubectl_path
from tests.support.rest import Api, Body
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.running(str(tmp_path_factory.mktemp("security"))) as c:
        yield c


@pytest.fixture(scope="module")
def admin(cluster: LocalCluster) -> Api:
    return Api(cluster.api_endpoints[0], cluster.admin_credentials)


def as_user(cluster: LocalCluster, user: str, groups: list[str] | None = None, master: int = 1) -> Api:
    return Api(cluster.api_endpoints[master], cluster.credentials_for(user, groups or []))


def pod(name: str, node: str = "", **spec: Any) -> Body:
    body: Body = {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def bind(admin: Api, namespace: str, user: str, role: str) -> None:
    admin.ok(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": f"{user}-{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


# -- who gets in --------------------------------------------------------------------------


def _get(base: str, context: ssl.SSLContext | None, token: str = "") -> int:
    req = urllib.request.Request(base + "/api/v1/namespaces")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_strangers_are_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    base = cluster.api_endpoints[1]
    ca_only = ssl.create_default_context(cafile=cluster.security.ca_paths()[0])
    assert _get(base, ca_only) == 401  # no certificate, no token
    assert _get(base, ca_only, token="not-a-token") == 401
    assert _get(base, ca_only, token="a.b.c") == 401  # not a JWT this cluster signed
    assert _get(base, cluster.admin_credentials.ssl_context()) == 200

    foreign = CertificateAuthority.create("raftkube-ca")  # same name, another key
    issued = foreign.issue_client("kubernetes-admin", ["system:masters"])
    impostor = ClientCredentials(Path(cluster.security.ca_paths()[0]).read_bytes(), issued.cert_pem, issued.key_pem)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _get(base, impostor.ssl_context())

    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    expired = cluster.credentials_for("kubernetes-admin", ["system:masters"], days=1, start=long_ago)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _get(base, expired.ssl_context())

    host, port = cluster.masters[1].api_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:  # plaintext HTTP to the TLS port
        s.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert b"namespaces" not in answer and not answer.startswith(b"HTTP/1.1 200")


def test_grpc_requires_a_cluster_certificate(cluster: LocalCluster) -> None:
    endpoint = cluster.endpoints[0]
    ca = Path(cluster.security.ca_paths()[0]).read_bytes()
    foreign = CertificateAuthority.create().issue_client("kubernetes-admin", ["system:masters"])
    channels = {
        "plaintext": grpc.insecure_channel(endpoint),
        "no certificate": grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(ca)),
        "another CA": grpc.secure_channel(
            endpoint, grpc.ssl_channel_credentials(ca, foreign.key_pem, foreign.cert_pem)
        ),
    }
    for what, channel in channels.items():
        with channel, pytest.raises(grpc.RpcError) as refused:
            kv_pb2_grpc.KVStub(channel).Range(kv_pb2.RangeRequest(key=b"/"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, what


def test_the_raw_store_is_for_cluster_admins_only_and_audited(cluster: LocalCluster) -> None:
    alice = cluster.credentials_for("alice", ["developers"]).grpc()
    assert alice is not None
    with grpc.secure_channel(cluster.endpoints[0], alice) as channel:
        with pytest.raises(grpc.RpcError) as denied:
            kv_pb2_grpc.KVStub(channel).Put(kv_pb2.PutRequest(key=b"/registry/x", value=b"y"), timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "system:masters" in str(denied.value.details())
        # The resource API is there for her, under RBAC (which gives her nothing).
        with pytest.raises(grpc.RpcError) as forbidden:
            resources_pb2_grpc.ResourcesStub(channel).List(
                pb.ListRequest(ref=pb.ResourceRef(version="v1", resource="secrets", namespace="default")), timeout=5
            )
        assert forbidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with cluster.client() as client:
        client.put(b"/audited/key", b"v")
    records = audit_records(cluster)
    puts = [r for r in records if r["requestURI"] == "/raftkube.store.v1.KV/Put"]
    assert {(r["user"]["username"], r["responseStatus"]["code"]) for r in puts} >= {
        ("alice", 403),
        ("kubernetes-admin", 200),
    }


def test_tokens_from_the_token_file_and_service_accounts(cluster: LocalCluster, admin: Api) -> None:
    token = Path(cluster.security.tokens_path).read_text().split(",", 1)[0]
    ca_only = ClientCredentials(Path(cluster.security.ca_paths()[0]).read_bytes())
    by_token = Api(cluster.api_endpoints[2], ca_only, token=token)
    review = by_token.ok("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {})
    assert review["status"]["userInfo"]["username"] == "kubernetes-admin"

    admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "robots"}})
    admin.ok("POST", "/api/v1/namespaces/robots/serviceaccounts", {"metadata": {"name": "builder"}})
    issued = admin.ok(
        "POST",
        "/api/v1/namespaces/robots/serviceaccounts/builder/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
    )
    robot = Api(cluster.api_endpoints[1], ca_only, token=issued["status"]["token"])
    whoami = robot.ok("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {})["status"]["userInfo"]
    assert whoami["username"] == "system:serviceaccount:robots:builder"
    assert {"system:serviceaccounts", "system:serviceaccounts:robots", "system:authenticated"} <= set(whoami["groups"])
    assert robot.call("GET", "/api/v1/namespaces/robots/pods")[0] == 403  # no role yet
    bind(admin, "robots", "system:serviceaccount:robots:builder", "view")
    wait_until(lambda: robot.call("GET", "/api/v1/namespaces/robots/pods")[0] == 200, "the binding", timeout=10)
    admin.ok("DELETE", "/api/v1/namespaces/robots/serviceaccounts/builder")
    revoked = lambda: robot.call("GET", "/api/v1/namespaces/robots/pods")[0] == 401  # noqa: E731
    wait_until(revoked, "deleting the account to revoke its token", timeout=10)


def test_anonymous_requests_are_refused_unless_allowed(make_cluster: Any) -> None:
    open_cluster = make_cluster(masters=1, server_args=["--anonymous-auth"])
    ca_only = ssl.create_default_context(cafile=open_cluster.security.ca_paths()[0])
    base = open_cluster.api_endpoints[0]
    for path, want in (("/version", 200), ("/livez", 200), ("/readyz", 200), ("/api/v1/namespaces", 403)):
        try:
            with urllib.request.urlopen(base + path, timeout=10, context=ca_only) as resp:
                code = resp.status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == want, path


# -- what they may do ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def team(cluster: LocalCluster, admin: Api) -> str:
    """Namespace `team`: alice views, bob edits, carol administers."""
    admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    for user, role in (("alice", "view"), ("bob", "edit"), ("carol", "admin")):
        bind(admin, "team", user, role)
    admin.ok("POST", "/api/v1/namespaces/team/secrets", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    api = as_user(cluster, "carol")
    wait_until(lambda: api.call("GET", "/api/v1/namespaces/team/pods")[0] == 200, "the bindings", timeout=10)
    return "team"


ROLE = {"metadata": {"name": "pod-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
GREEDY = {"metadata": {"name": "greedy"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/team"


@pytest.mark.parametrize(
    "user, method, path, body, code",
    [
        pytest.param("alice", "GET", "/api/v1/namespaces/team/pods", None, 200, id="view-lists-pods"),
        pytest.param("alice", "POST", "/api/v1/namespaces/team/pods", pod("a"), 403, id="view-cannot-create"),
        pytest.param("alice", "GET", "/api/v1/namespaces/team/secrets/s", None, 403, id="view-cannot-read-secrets"),
        pytest.param("alice", "GET", "/api/v1/namespaces/default/pods", None, 403, id="view-only-in-its-namespace"),
        pytest.param("bob", "POST", "/api/v1/namespaces/team/pods", pod("b"), 201, id="edit-creates-pods"),
        pytest.param("bob", "GET", "/api/v1/namespaces/team/secrets/s", None, 200, id="edit-reads-secrets"),
        pytest.param("bob", "POST", f"{RBAC}/roles", ROLE, 403, id="edit-cannot-write-roles"),
        pytest.param("bob", "GET", f"{RBAC}/rolebindings", None, 403, id="edit-cannot-read-bindings"),
        pytest.param(
            "bob",
            "POST",
            "/api/v1/namespaces/team/resourcequotas",
            {"metadata": {"name": "q"}},
            403,
            id="edit-cannot-write-quotas",
        ),
        pytest.param("carol", "POST", f"{RBAC}/roles", ROLE, 201, id="admin-writes-roles-it-holds"),
        pytest.param("carol", "POST", f"{RBAC}/roles", GREEDY, 403, id="admin-cannot-escalate"),
        pytest.param("carol", "GET", "/api/v1/nodes", None, 403, id="admin-is-namespaced"),
        pytest.param("dave", "GET", "/api/v1/namespaces/team/pods", None, 403, id="unbound-user"),
        pytest.param("dave", "GET", "/version", None, 200, id="anyone-authenticated-reads-version"),
        pytest.param("dave", "GET", "/api", None, 200, id="anyone-authenticated-discovers"),
    ],
)
def test_default_roles(
    cluster: LocalCluster, team: str, user: str, method: str, path: str, body: Body | None, code: int
) -> None:
    got, answer = as_user(cluster, user).call(method, path, body)
    assert got == code, answer
    if code == 403:
        assert answer["reason"] == "Forbidden" and f'"{user}"' in answer["message"]


def test_a_binding_to_a_role_one_does_not_hold_is_refused(cluster: LocalCluster, team: str) -> None:
    carol = as_user(cluster, "carol")
    for role, code in (("edit", 201), ("cluster-admin", 403)):
        got, answer = carol.call(
            "POST",
            f"{RBAC}/rolebindings",
            {
                "metadata": {"name": f"dave-{role}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": "dave"}],
            },
        )
        assert got == code, answer


def test_kubectl_auth_can_i_answers_as_kubernetes(cluster: LocalCluster, team: str, tmp_path: Path) -> None:
    def can_i(user: str, *args: str) -> str:
        """kubectl with a kubeconfig of the user's own (its certificate)."""
        creds = cluster.credentials_for(user, [])
        config = json.loads(Path(cluster.kubeconfig_path).read_text())
        config["users"] = [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": base64.b64encode(creds.cert_pem).decode(),
                    "client-key-data": base64.b64encode(creds.key_pem).decode(),
                },
            }
        ]
        kubeconfig = tmp_path / f"{user}.kubeconfig"
        kubeconfig.write_text(json.dumps(config))
        result = subprocess.run(
            [kubectl_path(), "--kubeconfig", str(kubeconfig), "auth", "can-i", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout.strip() or result.stderr.strip()

    assert can_i("alice", "list", "pods", "-n", "team") == "yes"
    assert can_i("alice", "create", "pods", "-n", "team") == "no"
    assert can_i("bob", "create", "deployments.apps", "-n", "team") == "yes"
    assert can_i("bob", "create", "rolebindings.rbac.authorization.k8s.io", "-n", "team") == "no"
    assert can_i("carol", "create", "rolebindings.rbac.authorization.k8s.io", "-n", "team") == "yes"
    assert can_i("carol", "get", "pods", "-n", "default") == "no"
    assert can_i("dave", "get", "/version") == "yes"
    # As the admin, for someone else (impersonation).
    admin = subprocess.run(
        [kubectl_path(), "--kubeconfig", cluster.kubeconfig_path, "auth", "can-i", "create", "pods", "-n", "team",
         "--as", "alice"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert admin.stdout.strip() == "no"


def test_nodes_touch_only_what_is_theirs(cluster: LocalCluster, admin: Api) -> None:
    admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "work"}})
    for node in ("n1", "n2"):
        admin.ok("POST", "/api/v1/nodes", {"metadata": {"name": node}})
        admin.ok("POST", "/api/v1/namespaces/work/pods", pod(f"on-{node}", node))
    n1 = as_user(cluster, "system:node:n1", ["system:nodes"])
    wait_until(lambda: n1.call("GET", "/api/v1/namespaces/work/pods/on-n1")[0] == 200, "the pod cache", timeout=10)
    assert n1.call("GET", "/api/v1/namespaces/work/pods/on-n2")[0] == 403
    assert n1.call("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1")[0] == 200
    assert n1.call("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2")[0] == 403
    assert n1.call("GET", "/api/v1/pods")[0] == 403
    status = {"status": {"phase": "Running"}}
    merge = "application/merge-patch+json"
    assert n1.call("PATCH", "/api/v1/namespaces/work/pods/on-n1/status", status, content_type=merge)[0] == 200
    assert n1.call("PATCH", "/api/v1/namespaces/work/pods/on-n2/status", status, content_type=merge)[0] == 403
    assert (
        n1.call(
            "PATCH", "/api/v1/namespaces/work/pods/on-n1", {"metadata": {"labels": {"a": "b"}}}, content_type=merge
        )[0]
        == 403
    )  # only the status
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert n1.call("PATCH", "/api/v1/nodes/n1/status", ready, content_type=merge)[0] == 200
    assert n1.call("PATCH", "/api/v1/nodes/n2/status", ready, content_type=merge)[0] == 403
    assert n1.call("POST", "/api/v1/namespaces/work/pods", pod("made-by-n1", "n1"))[0] == 403
    lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    assert n1.call("POST", lease, {"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}})[0] == 201
    assert n1.call("POST", lease, {"metadata": {"name": "n2"}, "spec": {"holderIdentity": "n1"}})[0] == 403
    assert n1.call("DELETE", "/api/v1/namespaces/work/pods/on-n2")[0] == 403


# -- quota --------------------------------------------------------------------------------


def test_quota_holds_exactly_under_concurrent_creates_on_every_master(cluster: LocalCluster, admin: Api) -> None:
    admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "quota"}})
    admin.ok(
        "POST", "/api/v1/namespaces/quota/resourcequotas", {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "50"}}}
    )
    apis = [Api(endpoint, cluster.admin_credentials) for endpoint in cluster.api_endpoints]

    def create(i: int) -> tuple[int, str]:
        code, body = apis[i % 3].call("POST", "/api/v1/namespaces/quota/pods", pod(f"p{i}"))
        return code, str(body.get("message", ""))

    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(create, range(200)))
    codes = Counter(code for code, _ in answers)
    assert codes == {201: 50, 403: 150}, codes
    assert all("exceeded quota: q" in message for code, message in answers if code == 403)
    assert len(admin.ok("GET", "/api/v1/namespaces/quota/pods")["items"]) == 50
    quota = admin.ok("GET", "/api/v1/namespaces/quota/resourcequotas/q")
    assert quota["status"] == {"hard": {"pods": "50"}, "used": {"pods": "50"}}

    for i in range(10):
        created = [f"p{n}" for n, (code, _) in enumerate(answers) if code == 201]
        admin.ok("DELETE", f"/api/v1/namespaces/quota/pods/{created[i]}")
    quota = admin.ok("GET", "/api/v1/namespaces/quota/resourcequotas/q")
    assert quota["status"]["used"] == {"pods": "40"}
    # A quota made after the pods counts them from the start.
    late = admin.ok(
        "POST",
        "/api/v1/namespaces/quota/resourcequotas",
        {"metadata": {"name": "late"}, "spec": {"hard": {"count/pods": "100", "requests.cpu": "2"}}},
    )
    assert late["status"]["used"] == {"count/pods": "40", "requests.cpu": "0"}


def test_limit_ranges_default_and_bound_containers(admin: Api) -> None:
    admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "limits"}})
    admin.ok(
        "POST",
        "/api/v1/namespaces/limits/limitranges",
        {
            "metadata": {"name": "lr"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "default": {"cpu": "500m"}}]},
        },
    )
    created = admin.ok("POST", "/api/v1/namespaces/limits/pods", pod("small"))
    resources = created["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "500m"}, "requests": {"cpu": "500m"}}
    assert created["status"]["qosClass"] == "Burstable"
    big = pod("big")
    big["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2"}}
    code, body = admin.call("POST", "/api/v1/namespaces/limits/pods", big)
    assert (code, body["message"]) == (
        403,
        'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2',
    )


# -- audit --------------------------------------------------------------------------------


def audit_records(cluster: LocalCluster) -> list[Body]:
    records = []
    for m in cluster.masters:
        path = Path(m.audit_log_path)
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def test_every_mutating_request_is_audited_and_secrets_never_appear(cluster: LocalCluster, admin: Api) -> None:
    admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "audited"}})
    base = "/api/v1/namespaces/audited/secrets"
    secret_value = "correct-horse-battery-staple"
    admin.ok("POST", base, {"metadata": {"name": "pw"}, "stringData": {"password": secret_value}})
    admin.ok("PATCH", f"{base}/pw", {"stringData": {"password": secret_value + "2"}},
             content_type="application/merge-patch+json")  # fmt: skip
    admin.ok("POST", "/api/v1/namespaces/audited/configmaps", {"metadata": {"name": "c"}})
    admin.ok("PUT", "/api/v1/namespaces/audited/configmaps/c", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    admin.ok("DELETE", "/api/v1/namespaces/audited/configmaps/c")
    admin.ok("DELETE", f"{base}/pw")

    async def over_grpc() -> None:  # the gRPC front end audits as REST does
        async with ApiClient(cluster.endpoints, credentials=cluster.admin_credentials) as client:
            await client.create(resource("configmaps"), {"metadata": {"name": "via-grpc"}}, "audited")
            await client.delete(resource("configmaps"), "via-grpc", "audited")

    asyncio.run(over_grpc())
    wanted = {
        ("create", "secrets", "pw"),
        ("patch", "secrets", "pw"),
        ("delete", "secrets", "pw"),
        ("create", "configmaps", "c"),
        ("update", "configmaps", "c"),
        ("delete", "configmaps", "c"),
        ("create", "configmaps", "via-grpc"),
        ("delete", "configmaps", "via-grpc"),
    }

    def seen() -> set[tuple[str, str, str]]:
        return {
            (r["verb"], r["objectRef"]["resource"], r["objectRef"].get("name", ""))
            for r in audit_records(cluster)
            if r["stage"] == "ResponseComplete" and r.get("objectRef", {}).get("namespace") == "audited"
        }

    wait_until(lambda: wanted <= seen(), "the audit records", timeout=10, detail=lambda: f"missing {wanted - seen()}")
    records = [r for r in audit_records(cluster) if r.get("objectRef", {}).get("namespace") == "audited"]
    assert all(r["level"] == "Metadata" and r["user"]["username"] == "kubernetes-admin" for r in records)
    assert all("requestObject" not in r and "responseObject" not in r for r in records)
    logs = "".join(Path(m.audit_log_path).read_text() for m in cluster.masters)
    assert secret_value not in logs
    assert "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZQ" not in logs  # nor base64 of it
