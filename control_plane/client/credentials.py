"""How a client proves who it is to the masters: the cluster CA it trusts,
and a client certificate (mTLS, what the gRPC port requires) or a bearer
token (REST). Built from files, from an admin kubeconfig, or for a plain
(--insecure) cluster with nothing at all.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

import grpc
import yaml


@dataclass(frozen=True)
class ClientCredentials:
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""
    token: str = ""

    @property
    def secure(self) -> bool:
        return bool(self.ca_pem)

    @classmethod
    def from_files(
        cls, ca: str | None = None, cert: str | None = None, key: str | None = None, token: str = ""
    ) -> ClientCredentials:
        def read(path: str | None) -> bytes:
            if not path:
                return b""
            with open(path, "rb") as f:
                return f.read()

        if bool(cert) != bool(key):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return cls(read(ca), read(cert), read(key), token)

    @classmethod
    def from_kubeconfig(cls, path: str, context: str | None = None) -> ClientCredentials:
        """The CA and user credentials of a kubeconfig context (inline data or files)."""
        with open(path, encoding="utf-8") as f:
            config: dict[str, Any] = yaml.safe_load(f)
        name = context or config.get("current-context")
        ctx = next((c["context"] for c in config.get("contexts") or () if c.get("name") == name), None)
        if ctx is None:
            raise ValueError(f"{path}: no context {name!r}")
        cluster: dict[str, Any] = next(
            (c["cluster"] for c in config.get("clusters") or () if c["name"] == ctx["cluster"]), {}
        )
        user: dict[str, Any] = next((u["user"] for u in config.get("users") or () if u["name"] == ctx.get("user")), {})
        base = os.path.dirname(os.path.abspath(path))

        def value(section: dict[str, Any], field: str) -> bytes:
            if section.get(f"{field}-data"):
                return base64.b64decode(section[f"{field}-data"])
            if section.get(field):
                with open(os.path.join(base, section[field]), "rb") as f:
                    return f.read()
            return b""

        return cls(
            value(cluster, "certificate-authority"),
            value(user, "client-certificate"),
            value(user, "client-key"),
            str(user.get("token") or ""),
        )

    def grpc(self) -> grpc.ChannelCredentials | None:
        """Channel credentials for the masters' gRPC port (None: plaintext)."""
        if not self.secure:
            return None
        return grpc.ssl_channel_credentials(self.ca_pem, self.key_pem or None, self.cert_pem or None)

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context for the REST API (None: plain HTTP)."""
        if not self.secure:
            return None
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        if self.cert_pem:
            # ssl loads a certificate chain only from files.
            with tempfile.TemporaryDirectory() as d:
                cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
                fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(self.key_pem)
                with open(cert, "wb") as f:
                    f.write(self.cert_pem)
                context.load_cert_chain(cert, key)
        return context

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


INSECURE = ClientCredentials()
