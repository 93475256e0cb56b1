"""The cluster's certificates, as kubeadm lays them out: one CA, a serving
certificate per master (its addresses as SANs, plus the names and the
Service IP under which Pods reach the API), client certificates whose
subject is the identity (CN = user, O = groups: `system:node:NAME` in
`system:nodes` for agents, `system:masters` for the admin), and the key
that signs service-account tokens.

Keys are ECDSA P-256: as strong as RSA 3072 for TLS, and handshakes cost
a fraction. Private keys are written 0600, certificates 0644.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
# Names the API has inside a cluster, as Kubernetes gives its serving
# certificate; the first Service IP is the `kubernetes` Service's.
IN_CLUSTER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
)
IN_CLUSTER_IPS = ("10.96.0.1", "127.0.0.1")

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, cert_path: str, key_path: str) -> list[str]:
        """The certificate (0644) and the key (0600); their paths."""
        write_file(key_path, self.key_pem, 0o600)
        write_file(cert_path, self.cert_pem, 0o644)
        return [cert_path, key_path]


def write_file(path: str, data: bytes, mode: int) -> None:
    """Write a file created with `mode` from the start: a key is never
    readable by others, not even for a moment."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only (ECDSA keys encipher nothing); a CA also signs
    certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    """A CA that issues the cluster's certificates."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey):
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, common_name: str = "raftkube-ca", days: int = CA_DAYS) -> CertificateAuthority:
        key = _new_key()
        name = _name(common_name)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clocks a little behind
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: str, key_path: str) -> CertificateAuthority:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: the CA key must be an ECDSA key")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, cert_path: str, key_path: str) -> list[str]:
        return Issued(self.cert_pem, _key_pem(self.key)).write(cert_path, key_path)

    def issue_serving(self, common_name: str, hosts: Iterable[str], days: int = LEAF_DAYS) -> Issued:
        """A server certificate valid for `hosts` (IP addresses and DNS
        names) and the in-cluster names of the API."""
        ips: list[x509.GeneralName] = []
        dns: list[x509.GeneralName] = []
        for host in dict.fromkeys([*hosts, *IN_CLUSTER_NAMES, *IN_CLUSTER_IPS]):
            try:
                ips.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                dns.append(x509.DNSName(host))
        return self._issue(_name(common_name), [ExtendedKeyUsageOID.SERVER_AUTH], days, [*dns, *ips])

    def issue_client(
        self, user: str, groups: Iterable[str] = (), days: int = LEAF_DAYS, start: datetime.datetime | None = None
    ) -> Issued:
        """A client certificate for `user` in `groups` (CN and O, as
        Kubernetes reads them), valid `days` from `start` (now)."""
        return self._issue(_name(user, groups), [ExtendedKeyUsageOID.CLIENT_AUTH], days, [], start)

    def _issue(
        self,
        subject: x509.Name,
        usages: list[x509.ObjectIdentifier],
        days: int,
        sans: list[x509.GeneralName],
        start: datetime.datetime | None = None,
    ) -> Issued:
        key = _new_key()
        now = start or _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def service_account_key() -> Issued:
    """The key pair that signs service-account tokens (ES256): the private
    key as key_pem, the public key as cert_pem (a SubjectPublicKeyInfo)."""
    key = _new_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Issued(public, _key_pem(key))


def identity_of(cert: x509.Certificate) -> tuple[str, list[str]]:
    """The user (CN) and groups (O) a client certificate names."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cn[0].value) if cn else ""), [str(o.value) for o in orgs]
