"""The `raftkube` command as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from control_plane.local_cluster import LocalCluster, free_port

RAFTKUBE = [sys.executable, "-m", "control_plane.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAFTKUBE, *args], capture_output=True, text=True, timeout=timeout)


def server_args(tmp_path: Path) -> list[str]:
    return [
        "server",
        "--id",
        "m1",
        "--data-dir",
        str(tmp_path / "m1"),
        "--raft-address",
        f"127.0.0.1:{free_port()}",
        "--grpc-address",
        f"127.0.0.1:{free_port()}",
    ]


def test_server_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = run(*server_args(tmp_path))
    assert result.returncode == 2
    assert "--cluster-secret-file is required" in result.stderr
    assert "run code" in result.stderr  # it says why


def test_server_refuses_a_short_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("short\n")
    result = run(*server_args(tmp_path), "--cluster-secret-file", str(secret))
    assert result.returncode == 2
    assert "shorter than 16" in result.stderr


def test_server_rejects_a_malformed_peer(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * 32)
    result = run(*server_args(tmp_path), "--cluster-secret-file", str(secret), "--peer", "m2:1234")
    assert result.returncode == 2
    assert "ID=HOST:PORT" in result.stderr


def test_up_store_and_down(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    try:
        up = run("up", "--dir", directory, "--detach", timeout=120)
        assert up.returncode == 0, up.stderr
        assert "3 masters and 2 node agents are up" in up.stdout and "raftkube down" in up.stdout
        secret = Path(directory, "cluster-secret")
        assert secret.stat().st_mode & 0o777 == 0o600
        assert run("store", "--dir", directory, "put", "/hello", "world").returncode == 0
        got = run("store", "--dir", directory, "get", "/hello")
        assert got.stdout.splitlines() == ["/hello", "world"]
        status = run("store", "--dir", directory, "status")
        roles = [line.split()[2] for line in status.stdout.splitlines()]
        assert sorted(roles) == ["follower", "follower", "leader"]
        again = run("up", "--dir", directory, "--detach")
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = run("down", "--dir", directory)
    assert down.returncode == 0
    assert not any(LocalCluster.load(directory).is_running(m) for m in LocalCluster.load(directory).masters)
    assert os.path.exists(os.path.join(directory, "cluster.json"))


def test_init_writes_the_cluster_directory_and_keeps_it(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    first = run("init", "--dir", directory, "--master", "m1=127.0.0.1,m1.example", "--node", "n1")
    assert first.returncode == 0, first.stderr
    assert f"wrote {directory}/pki/ca.key" in first.stdout and f"wrote {directory}/pki/nodes/n1.crt" in first.stdout
    again = run("init", "--dir", directory, "--master", "m1=127.0.0.1,m1.example")
    assert (again.returncode, again.stdout.strip()) == (0, f"{directory}: everything was already there")
    bad = run("init", "--dir", directory, "--master", "m2")
    assert bad.returncode == 2 and "'m2' is not ID=HOST[,HOST...]" in bad.stderr
