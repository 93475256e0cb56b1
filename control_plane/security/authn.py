"""Authentication: who sent a request, from what the transport carried.

Authenticators run in kube-apiserver's order, and the first that knows the
credentials wins: an x509 client certificate verified by the TLS layer
against the cluster CA (user = CN, groups = O), then a bearer token from
the token file (kube-apiserver's --token-auth-file format), then a
service-account token (a JWT this cluster signed). Credentials that are
presented but not valid are refused (401), never downgraded to anonymous.
With no credentials at all, a request is anonymous if --anonymous-auth
allows it, else refused.

This module never looks at what the request wants to do: that is
authorization's job.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass

from control_plane.security.identity import ANONYMOUS_USER, UserInfo, authenticated
from control_plane.security.service_account_tokens import InvalidToken, ServiceAccountTokens, UidLookup

log = logging.getLogger(__name__)


class Unauthorized(Exception):
    """401: the request's credentials are missing or not valid."""


@dataclass(frozen=True)
class Credentials:
    """What a request carried: the identity in its verified client
    certificate (CN, O values) and its Authorization header."""

    certificate: tuple[str, tuple[str, ...]] | None = None
    authorization: str = ""


def parse_token_file(text: str, source: str = "token file") -> dict[str, UserInfo]:
    """token,user,uid[,"group1,group2"] per line (kube-apiserver's format)."""
    users: dict[str, UserInfo] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3 or not row[0] or not row[1]:
            raise ValueError(f"{source} line {number}: want token,user,uid[,groups]")
        groups = [g.strip() for g in row[3].split(",") if g.strip()] if len(row) > 3 else []
        users[row[0]] = authenticated(row[1], row[2], groups)
    return users


def load_token_file(path: str) -> dict[str, UserInfo]:
    with open(path, encoding="utf-8") as f:
        return parse_token_file(f.read(), path)


async def _nobody(namespace: str, name: str) -> str | None:
    return None


class Authenticator:
    def __init__(
        self,
        tokens: dict[str, UserInfo] | None = None,
        service_accounts: ServiceAccountTokens | None = None,
        account_uid: UidLookup | None = None,
        pod_uid: UidLookup | None = None,
        anonymous: bool = False,
    ):
        self.tokens = tokens or {}
        self.service_accounts = service_accounts
        # Whether a token's account and pod still exist (the API server's caches).
        self.account_uid: UidLookup = account_uid or _nobody
        self.pod_uid = pod_uid
        self.anonymous = anonymous
        self._by_certificate: dict[tuple[str, tuple[str, ...]], UserInfo] = {}

    async def authenticate(self, credentials: Credentials) -> UserInfo:
        if credentials.certificate is not None:
            return self._certificate_user(credentials.certificate)
        scheme, _, token = credentials.authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return await self._token_user(token)
        if credentials.authorization.strip():
            raise Unauthorized("unsupported authorization scheme (want: Bearer)")
        if self.anonymous:
            return ANONYMOUS_USER
        raise Unauthorized("no credentials: a client certificate or a bearer token is required")

    def _certificate_user(self, identity: tuple[str, tuple[str, ...]]) -> UserInfo:
        user = self._by_certificate.get(identity)
        if user is None:
            name, groups = identity
            if not name:
                raise Unauthorized("the client certificate has no common name")
            user = authenticated(name, "", groups)
            if len(self._by_certificate) > 10_000:
                self._by_certificate.clear()
            self._by_certificate[identity] = user
        return user

    async def _token_user(self, token: str) -> UserInfo:
        user = self.tokens.get(token)
        if user is not None:
            return user
        if self.service_accounts is not None and token.count(".") == 2:
            try:
                return await self.service_accounts.verify(token, self.account_uid, self.pod_uid)
            except InvalidToken as e:
                log.debug("service-account token refused: %s", e)
                raise Unauthorized(f"invalid bearer token: {e}") from None
        raise Unauthorized("invalid bearer token")
