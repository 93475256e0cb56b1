"""TLS on the masters' ports: the REST API (Python's ssl, for aiohttp) and
gRPC, with the cluster's serving certificate, verifying client
certificates against the cluster CA.

REST asks for a client certificate but does not require one (bearer tokens
are the other way in, as in Kubernetes); a certificate that is presented
must verify, or the handshake fails. gRPC requires one: grpc's Python API
can either ignore client certificates or require them, and the agents and
components that speak gRPC all have one (mTLS).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class ServingFiles:
    cert: str
    key: str
    client_ca: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for path in (self.cert, self.key, self.client_ca):
            with open(path, "rb") as f:
                out.append(f.read())
        return out[0], out[1], out[2]


def ssl_server_context(files: ServingFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(files.client_ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def grpc_server_credentials(files: ServingFiles) -> grpc.ServerCredentials:
    cert, key, ca = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
