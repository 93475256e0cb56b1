"""The store's own tests run their masters with --insecure (plaintext, no
authentication): they test Raft and the KV semantics, which TLS does not
change. The secure path of the same services (mTLS, admin only, audited)
is tests/integration/control_plane/test_security.py's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from control_plane.local_cluster import LocalCluster

INSECURE = ["--insecure"]


@pytest.fixture
def make_cluster(make_cluster: Callable[..., LocalCluster]) -> Callable[..., LocalCluster]:
    def make(masters: int = 3, server_args: list[str] | None = None, ready: bool = True) -> LocalCluster:
        return make_cluster(masters, [*INSECURE, *(server_args or [])], ready)

    return make
