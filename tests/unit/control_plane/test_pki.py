"""The cluster directory `raftkube init` writes: a CA whose certificates
verify as TLS would verify them, identities in CN and O, keys kept 0600."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from control_plane.security.cluster_dir import ClusterDir
from control_plane.security.pki import CertificateAuthority, identity_of


def load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> ClusterDir:
    d = ClusterDir(str(tmp_path / "c"))
    d.init({"m1": ["127.0.0.1", "master-1.example"], "m2": ["10.0.0.2"]}, nodes=["n1"])
    return d


def test_serving_certificates_verify_for_their_hosts_and_the_in_cluster_names(cluster_dir: ClusterDir) -> None:
    ca = load(cluster_dir.ca_paths()[0])
    verify_time = datetime.datetime.now(datetime.UTC)
    builder = PolicyBuilder().store(Store([ca])).time(verify_time)
    m1 = load(cluster_dir.master_paths("m1")[0])
    for name in (IPAddress(ipaddress.ip_address("127.0.0.1")), DNSName("master-1.example")):
        builder.build_server_verifier(name).verify(m1, [])
    builder.build_server_verifier(DNSName("kubernetes.default.svc")).verify(m1, [])
    with pytest.raises(VerificationError):  # m2's certificate is not m1's
        builder.build_server_verifier(DNSName("master-1.example")).verify(load(cluster_dir.master_paths("m2")[0]), [])


def test_client_certificates_name_the_identity_and_chain_to_the_ca(cluster_dir: ClusterDir) -> None:
    # Client certificates carry no SAN (as Kubernetes'), which the web-PKI
    # verifier of cryptography insists on: check the signature and dates.
    ca = load(cluster_dir.ca_paths()[0])
    admin = load(cluster_dir.admin_paths()[0])
    node = load(cluster_dir.node_paths("n1")[0])
    now = datetime.datetime.now(datetime.UTC)
    for cert in (admin, node):
        cert.verify_directly_issued_by(ca)
        assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert identity_of(admin) == ("kubernetes-admin", ["system:masters"])
    assert identity_of(node) == ("system:node:n1", ["system:nodes"])
    other = CertificateAuthority.create()  # another CA, even of the same name: its certificates do not verify
    with pytest.raises(InvalidSignature):
        other.issue_client("kubernetes-admin", ["system:masters"]).cert.verify_directly_issued_by(ca)


def test_secrets_are_0600_and_a_second_init_keeps_the_ca(cluster_dir: ClusterDir) -> None:
    private = [
        cluster_dir.secret_path,
        cluster_dir.tokens_path,
        cluster_dir.ca_paths()[1],
        cluster_dir.master_paths("m1")[1],
        cluster_dir.node_paths("n1")[1],
        cluster_dir.admin_paths()[1],
        cluster_dir.sa_paths()[1],
    ]
    assert {p: mode(p) for p in private} == {p: 0o600 for p in private}
    token, user, _uid, groups = Path(cluster_dir.tokens_path).read_text().strip().split(",", 3)
    assert (len(token) >= 40, user, groups) == (True, "kubernetes-admin", '"system:masters"')
    ca_before = Path(cluster_dir.ca_paths()[0]).read_bytes()
    written = cluster_dir.init({"m1": ["127.0.0.1"], "m3": ["10.0.0.3"]}, nodes=["n2"])
    assert Path(cluster_dir.ca_paths()[0]).read_bytes() == ca_before
    assert sorted(os.path.relpath(p, cluster_dir.pki) for p in written) == [
        "masters/m3-loopback.crt",
        "masters/m3-loopback.key",
        "masters/m3.crt",
        "masters/m3.key",
        "nodes/n2-serving.crt",
        "nodes/n2-serving.key",
        "nodes/n2.crt",
        "nodes/n2.key",
    ]
