"""The Raft port and pickles: pysyncobj unpickles every frame a peer sends.
A master requires the cluster secret, so an unauthenticated frame is dropped
before it is unpickled. The control run shows the same frame executing on a
bare pysyncobj node without a password, so this test can fail."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
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


def test_a_crafted_pickle_frame_runs_nothing_on_a_master(tmp_path: Path, cluster: LocalCluster) -> None:
    marker = tmp_path / "pwned-master"
    for master in cluster.masters:
        send_frame(master.raft_address, crafted_frame(marker))
    assert not wait_for(marker, 2.0), "the frame ran code on a master"
    cluster.wait_ready(10)  # and the masters are unharmed


def test_control_the_same_frame_runs_code_on_bare_pysyncobj(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-bare"
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_PYSYNCOBJ, address],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        while True:  # the port binds on the node's first tick
            try:
                send_frame(address, crafted_frame(marker))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert wait_for(marker, 5.0), "control run: the frame should have run code on stock pysyncobj"
    finally:
        proc.kill()
        proc.wait(10)
