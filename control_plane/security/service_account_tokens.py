"""Service-account tokens: signed JWTs (ES256, the cluster's sa.key) in the
shape of Kubernetes' bound tokens, issued by the TokenRequest API
(serviceaccounts/token) and verified on every request that carries one.

A token names its service account (and the pod it is bound to) by name and
uid; verification checks the signature, issuer, audience and expiry, then
that the account (and pod) still exist with those uids, so deleting a
service account or its pod revokes its tokens, as in Kubernetes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from control_plane.security.identity import UserInfo, service_account_user

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = ISSUER
ALGORITHM = "ES256"
DEFAULT_SECONDS = 3600
MIN_SECONDS = 600  # as the TokenRequest API's minimum
MAX_SECONDS = 48 * 3600

# (namespace, name) -> uid of an object that exists, or None.
UidLookup = Callable[[str, str], Awaitable[str | None]]


class InvalidToken(Exception):
    """The token is not one this cluster issued, or no longer valid."""


@dataclass
class Issued:
    token: str
    expires_at: int  # unix seconds


class ServiceAccountTokens:
    def __init__(
        self,
        public_key_pem: bytes,
        private_key_pem: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ):
        public = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("the service-account key must be an ECDSA P-256 key")
        self._public = public
        self._private: ec.EllipticCurvePrivateKey | None = None
        if private_key_pem is not None:
            private = serialization.load_pem_private_key(private_key_pem, password=None)
            if not isinstance(private, ec.EllipticCurvePrivateKey):
                raise ValueError("the service-account key must be an ECDSA P-256 key")
            self._private = private
        self.clock = clock

    @classmethod
    def from_files(cls, public_path: str, private_path: str | None = None) -> ServiceAccountTokens:
        with open(public_path, "rb") as f:
            public = f.read()
        private = None
        if private_path:
            with open(private_path, "rb") as f:
                private = f.read()
        return cls(public, private)

    def issue(
        self,
        namespace: str,
        account: str,
        account_uid: str,
        seconds: int = DEFAULT_SECONDS,
        audiences: list[str] | None = None,
        pod: tuple[str, str] | None = None,
        node: tuple[str, str] | None = None,
    ) -> Issued:
        """A token for the account, bound to a pod (name, uid) if given."""
        if self._private is None:
            raise RuntimeError("this API server has no service-account signing key")
        now = int(self.clock())
        expires = now + seconds
        claims_k8s: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": account, "uid": account_uid},
        }
        if pod is not None:
            claims_k8s["pod"] = {"name": pod[0], "uid": pod[1]}
        if node is not None:
            claims_k8s["node"] = {"name": node[0], "uid": node[1]}
        claims = {
            "iss": ISSUER,
            "aud": audiences or [AUDIENCE],
            "sub": f"system:serviceaccount:{namespace}:{account}",
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": claims_k8s,
        }
        return Issued(jwt.encode(claims, self._private, algorithm=ALGORITHM), expires)

    async def verify(
        self,
        token: str,
        account_uid: UidLookup,
        pod_uid: UidLookup | None = None,
        audience: str = AUDIENCE,
    ) -> UserInfo:
        """The service account a token names, or InvalidToken."""
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                # Times are checked below against this signer's clock.
                options={
                    "require": ["exp", "iat", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        now = self.clock()
        if not isinstance(claims["exp"], int | float) or now >= claims["exp"]:
            raise InvalidToken("the token has expired")
        if isinstance(claims.get("nbf"), int | float) and now < claims["nbf"]:
            raise InvalidToken("the token is not valid yet")
        info = claims.get("kubernetes.io")
        if not isinstance(info, dict):
            raise InvalidToken("the token names no service account")
        namespace = str(info.get("namespace") or "")
        account = info.get("serviceaccount") or {}
        name, uid = str(account.get("name") or ""), str(account.get("uid") or "")
        if claims["sub"] != f"system:serviceaccount:{namespace}:{name}":
            raise InvalidToken("the token's subject does not match its service account")
        current = await account_uid(namespace, name)
        if current is None or current != uid:
            raise InvalidToken(f"service account {namespace}/{name} has been deleted")
        extra: dict[str, list[str]] = {"authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"]}
        pod = info.get("pod")
        if isinstance(pod, dict):
            pod_name, bound_uid = str(pod.get("name") or ""), str(pod.get("uid") or "")
            if pod_uid is None or await pod_uid(namespace, pod_name) != bound_uid:
                raise InvalidToken(f"pod {namespace}/{pod_name} the token is bound to no longer exists")
            extra["authentication.kubernetes.io/pod-name"] = [pod_name]
            extra["authentication.kubernetes.io/pod-uid"] = [bound_uid]
        node = info.get("node")
        if isinstance(node, dict):
            extra["authentication.kubernetes.io/node-name"] = [str(node.get("name") or "")]
        return service_account_user(namespace, name, uid, extra)
