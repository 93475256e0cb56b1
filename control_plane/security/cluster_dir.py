"""What `raftkube init` (and `raftkube up` through it) writes into a
cluster directory, kubeadm-style:

    cluster-secret             the Raft peers' shared secret          0600
    tokens.csv                 bearer tokens (kube-apiserver's format) 0600
    pki/ca.crt, ca.key         the cluster CA                         key 0600
    pki/masters/<id>.crt/.key  each master's serving certificate
    pki/masters/<id>-loopback.crt/.key   its client identity towards itself
                               and the other masters (system:apiserver, system:masters)
    pki/admin.crt/.key         CN=kubernetes-admin, O=system:masters
    pki/nodes/<name>.crt/.key  CN=system:node:<name>, O=system:nodes
    pki/nodes/<name>-serving.crt/.key    the agent's own server (logs), for its hosts
    pki/sa.key, sa.pub         the service-account token signing key
    audit-policy.yaml          what the masters audit (audit.k8s.io/v1 Policy)

Running it again keeps what exists (the CA above all: every certificate
hangs on it) and adds what is missing, so masters and nodes can be added
later with the same command.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from control_plane.security.audit import DEFAULT_POLICY
from control_plane.security.identity import APISERVER_USER, SYSTEM_MASTERS
from control_plane.security.pki import CertificateAuthority, Issued, service_account_key, write_file

SECRET_FILE = "cluster-secret"
TOKENS_FILE = "tokens.csv"
AUDIT_POLICY_FILE = "audit-policy.yaml"
ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "system:masters"


@dataclass
class ClusterDir:
    directory: str

    @property
    def pki(self) -> str:
        return os.path.join(self.directory, "pki")

    @property
    def secret_path(self) -> str:
        return os.path.join(self.directory, SECRET_FILE)

    @property
    def tokens_path(self) -> str:
        return os.path.join(self.directory, TOKENS_FILE)

    def ca_paths(self) -> tuple[str, str]:
        return os.path.join(self.pki, "ca.crt"), os.path.join(self.pki, "ca.key")

    @property
    def audit_policy_path(self) -> str:
        return os.path.join(self.directory, AUDIT_POLICY_FILE)

    def master_paths(self, member_id: str) -> tuple[str, str]:
        return _pair(os.path.join(self.pki, "masters"), member_id)

    def loopback_paths(self, member_id: str) -> tuple[str, str]:
        return _pair(os.path.join(self.pki, "masters"), f"{member_id}-loopback")

    def node_paths(self, node: str) -> tuple[str, str]:
        return _pair(os.path.join(self.pki, "nodes"), node)

    def node_serving_paths(self, node: str) -> tuple[str, str]:
        return _pair(os.path.join(self.pki, "nodes"), f"{node}-serving")

    def admin_paths(self) -> tuple[str, str]:
        return _pair(self.pki, "admin")

    def sa_paths(self) -> tuple[str, str]:
        return os.path.join(self.pki, "sa.pub"), os.path.join(self.pki, "sa.key")

    def init(
        self, masters: Mapping[str, Iterable[str]], nodes: Iterable[str] | Mapping[str, Iterable[str]] = ()
    ) -> list[str]:
        """Write whatever of the layout is missing for these masters (id ->
        the hosts it is reached at) and nodes (names, or name -> hosts;
        127.0.0.1 and the name by default); the paths written."""
        written: list[str] = []
        os.makedirs(self.directory, exist_ok=True)
        if not os.path.exists(self.secret_path):
            write_file(self.secret_path, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
            written.append(self.secret_path)
        if not os.path.exists(self.tokens_path):
            # kube-apiserver's --token-auth-file: token,user,uid,"group1,group2"
            line = f'{secrets.token_urlsafe(32)},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n'
            write_file(self.tokens_path, line.encode(), 0o600)
            written.append(self.tokens_path)
        ca_cert, ca_key = self.ca_paths()
        if os.path.exists(ca_cert):
            ca = CertificateAuthority.load(ca_cert, ca_key)
        else:
            ca = CertificateAuthority.create()
            written += ca.write(ca_cert, ca_key)
        for member_id, hosts in masters.items():
            serving = functools.partial(ca.issue_serving, f"raftkube-master-{member_id}", list(hosts))
            written += _issue(self.master_paths(member_id), serving)
            loopback = functools.partial(ca.issue_client, APISERVER_USER, [SYSTEM_MASTERS])
            written += _issue(self.loopback_paths(member_id), loopback)
        node_hosts = dict(nodes) if isinstance(nodes, Mapping) else {n: ["127.0.0.1", n] for n in nodes}
        for node, hosts in node_hosts.items():
            written += _issue(
                self.node_paths(node), functools.partial(ca.issue_client, f"system:node:{node}", ["system:nodes"])
            )
            serving = functools.partial(ca.issue_serving, f"system:node:{node}", list(hosts))
            written += _issue(self.node_serving_paths(node), serving)
        written += _issue(self.admin_paths(), functools.partial(ca.issue_client, ADMIN_USER, [ADMIN_GROUP]))
        written += _issue(self.sa_paths(), service_account_key)
        if not os.path.exists(self.audit_policy_path):
            write_file(self.audit_policy_path, DEFAULT_POLICY.encode(), 0o644)
            written.append(self.audit_policy_path)
        return written

    def init_hollow(self, prefix: str, count: int) -> list[str]:
        """Client certificates for `count` hollow nodes (prefix-0 ...): they
        serve nothing, so they get no serving certificate."""
        ca = CertificateAuthority.load(*self.ca_paths())
        written: list[str] = []
        for i in range(count):
            name = f"{prefix}-{i}"
            issue = functools.partial(ca.issue_client, f"system:node:{name}", ["system:nodes"])
            written += _issue(self.node_paths(name), issue)
        return written


def _issue(paths: tuple[str, str], issue: Callable[[], Issued]) -> list[str]:
    """Issue and write a pair unless both files exist."""
    cert_path, key_path = paths
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return []
    return issue().write(cert_path, key_path)


def _pair(directory: str, name: str) -> tuple[str, str]:
    return os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
