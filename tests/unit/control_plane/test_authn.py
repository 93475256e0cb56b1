"""Authentication: certificates, the token file, service-account tokens."""

from __future__ import annotations

import asyncio

import pytest

from control_plane.security.authn import Authenticator, Credentials, Unauthorized, parse_token_file
from control_plane.security.pki import service_account_key
from control_plane.security.service_account_tokens import InvalidToken, ServiceAccountTokens

KEY = service_account_key()
ACCOUNTS = {("robots", "builder"): "uid-1"}


async def account_uid(namespace: str, name: str) -> str | None:
    return ACCOUNTS.get((namespace, name))


async def pod_uid(namespace: str, name: str) -> str | None:
    return {("robots", "p1"): "pod-uid"}.get((namespace, name))


def signer(now: float = 1_000_000.0) -> ServiceAccountTokens:
    return ServiceAccountTokens(KEY.cert_pem, KEY.key_pem, clock=lambda: now)


def test_token_file_format() -> None:
    users = parse_token_file('t1,alice,u1,"devs,ops"\n# a comment\n\nt2,bob,u2\n')
    assert (users["t1"].name, users["t1"].groups) == ("alice", ("devs", "ops", "system:authenticated"))
    assert users["t2"].groups == ("system:authenticated",)
    with pytest.raises(ValueError, match="line 1"):
        parse_token_file("only-a-token\n")


def test_the_first_authenticator_that_knows_the_credentials_wins() -> None:
    tokens = parse_token_file("t1,alice,u1\n")
    authn = Authenticator(tokens, signer(), account_uid)
    cert_user = asyncio.run(authn.authenticate(Credentials(("bob", ("team",)), "Bearer t1")))
    assert cert_user.name == "bob" and "system:authenticated" in cert_user.groups
    assert asyncio.run(authn.authenticate(Credentials(None, "Bearer t1"))).name == "alice"
    for bad in ("Bearer nope", "Basic YWxpY2U6cHc=", ""):
        with pytest.raises(Unauthorized):
            asyncio.run(authn.authenticate(Credentials(None, bad)))
    anonymous = Authenticator(tokens, anonymous=True)
    assert asyncio.run(anonymous.authenticate(Credentials())).name == "system:anonymous"
    with pytest.raises(Unauthorized):  # presented but wrong: never anonymous
        asyncio.run(anonymous.authenticate(Credentials(None, "Bearer nope")))


def test_service_account_tokens_are_bound_to_live_objects() -> None:
    issued = signer().issue("robots", "builder", "uid-1", 600, pod=("p1", "pod-uid"))
    user = asyncio.run(signer(1_000_100).verify(issued.token, account_uid, pod_uid))
    assert user.name == "system:serviceaccount:robots:builder"
    assert user.extra["authentication.kubernetes.io/pod-name"] == ("p1",)
    cases = {
        "expired": (signer(1_000_601), account_uid, pod_uid),
        "account recreated (new uid)": (signer(), lambda ns, n: _const("uid-2"), pod_uid),
        "pod gone": (signer(), account_uid, lambda ns, n: _const(None)),
        "another cluster's key": (ServiceAccountTokens(service_account_key().cert_pem), account_uid, pod_uid),
    }
    for what, (verifier, accounts, pods) in cases.items():
        with pytest.raises(InvalidToken):
            asyncio.run(verifier.verify(issued.token, accounts, pods))
            pytest.fail(what)


async def _const(value: str | None) -> str | None:
    return value
