"""The Raft port and pickles: pysyncobj unpickles every frame a peer sends.
A master requires the cluster secret, so an unauthenticated frame is dropped
before it is unpickled. The control run shows the same frame executing on a
bare pysyncobj node without a password, so this test can fail."""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from control_plane.local_cluster import LocalCluster, free_port


class _CreatesFile:
    """Unpickling this calls open(path, "w"): code chosen by the sender."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def crafted_frame(marker: Path) -> bytes:
    payload = zlib.compress(pickle.dumps(_CreatesFile(str(marker)), protocol=2), 3)
    return struct.pack("i", len(payload)) + payload


def send_frame(address: str, frame: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(frame)
        s.settimeout(2)
        try:
            s.recv(1024)  # the receiver reads, then answers or hangs up
        except (TimeoutError, ConnectionError):
            pass


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


BARE_PYSYNCOBJ = """
import sys, time
from pysyncobj import SyncObj, SyncObjConf
node = SyncObj(sys.argv[1], [], SyncObjConf())   # stock settings: no password
print("ready", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def bare_pysyncobj(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A stock pysyncobj node (no password) in a process of its own, its
    port bound: the control runs' target."""
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_PYSYNCOBJ, address],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        host, port = address.rsplit(":", 1)
        deadline = time.monotonic() + 10
        while True:  # the port binds on the node's first tick
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        yield proc, address
    finally:
        proc.kill()
        proc.wait(10)


def test_a_crafted_pickle_frame_runs_nothing_on_a_master(tmp_path: Path, cluster: LocalCluster) -> None:
    marker = tmp_path / "pwned-master"
    for master in cluster.masters:
        send_frame(master.raft_address, crafted_frame(marker))
    assert not wait_for(marker, 2.0), "the frame ran code on a master"
    cluster.wait_ready(10)  # and the masters are unharmed


def test_control_the_same_frame_runs_code_on_bare_pysyncobj(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-bare"
    with bare_pysyncobj(tmp_path) as (_, address):
        send_frame(address, crafted_frame(marker))
        assert wait_for(marker, 5.0), "control run: the frame should have run code on stock pysyncobj"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def stream_oversized_frame(address: str, total: int) -> int:
    """Announce a 2 GiB frame and stream junk until the peer hangs up or
    `total` bytes are sent; the bytes sent."""
    host, port = address.rsplit(":", 1)
    chunk = os.urandom(1 << 20)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as s:
        try:
            s.sendall(struct.pack("i", (1 << 31) - 1))
            while sent < total:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    return sent


STREAMED = 64 << 20


def test_an_oversized_frame_from_an_unauthenticated_peer_costs_no_memory(cluster: LocalCluster) -> None:
    master = cluster.masters[0]
    before = rss_bytes(master.pid)
    sent = stream_oversized_frame(master.raft_address, STREAMED)
    grown = rss_bytes(master.pid) - before
    print(f"master: streamed {sent >> 20} MiB before it hung up; RSS grew {grown / (1 << 20):.1f} MiB")
    assert sent < STREAMED, "the master kept reading a frame over the limit"
    assert grown < 16 << 20
    cluster.wait_ready(10)  # and the masters are unharmed


def test_control_an_oversized_frame_is_buffered_whole_by_bare_pysyncobj(tmp_path: Path) -> None:
    with bare_pysyncobj(tmp_path) as (proc, address):
        before = rss_bytes(proc.pid)
        sent = stream_oversized_frame(address, STREAMED)
        grown = rss_bytes(proc.pid) - before
        print(f"stock pysyncobj: streamed {sent >> 20} MiB; RSS grew {grown / (1 << 20):.1f} MiB")
        assert grown > STREAMED // 2, "control run: stock pysyncobj should have buffered the frame"
