"""How a master's Raft frames are sealed and packed on the wire: what
ha.raft_node installs into pysyncobj's TCP connections in place of its
Fernet encryptor and its zlib.

pysyncobj 0.3.17 seals every frame with Fernet (AES-128-CBC, HMAC-SHA256,
base64) after compressing it with zlib at level 3. Measured here on a 24 KiB
batch of 1 KiB values: Fernet costs 86 us to seal and 171 us to open, and
zlib ~100 us for any frame however small (most of it setting up the deflate
state), to save nothing on random values and only loopback or LAN bandwidth
on JSON. That was a fifth of the leader's CPU per write. So:

- `FrameCipher` seals with AES-256-GCM: 4 us per 24 KiB here (AES-NI). The
  key comes from the cluster secret (PBKDF2, as pysyncobj derives its key,
  with a salt of our own). A frame is `version | timestamp | nonce |
  ciphertext+tag`; the timestamp, which pysyncobj reads before opening the
  frame to put frames in order, is authenticated as associated data, so a
  forged one fails `decrypt` and the connection is dropped. Nonces are a
  random 64-bit prefix and a 32-bit counter, the prefix drawn again before
  the counter wraps, so no nonce repeats under one key in practice.
- `Uncompressed` stands in for the zlib module: frames go as pickled.

Neither stock pysyncobj nor masters of an earlier raftkube can read these
frames, nor these masters theirs: a cluster is upgraded by restarting all its
masters at once.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

FRAME_VERSION = 1
_HEAD = struct.Struct(">BQ")  # version, timestamp
_NONCE_PREFIX = 8
_NONCE = _NONCE_PREFIX + 4
_SALT = b"raftkube raft frames, AES-256-GCM, v1"
_KDF_ITERATIONS = 100_000


class InvalidFrame(Exception):
    """A frame that was not sealed with this cluster's secret, or was changed."""


class FrameCipher:
    """The encryptor interface pysyncobj's TcpConnection uses:
    `encrypt_at_time`, `extract_timestamp` and `decrypt`."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)
        self._lock = threading.Lock()
        self._prefix = os.urandom(_NONCE_PREFIX)
        self._counter = itertools.count()

    @classmethod
    def from_secret(cls, secret: str | bytes) -> FrameCipher:
        raw = secret if isinstance(secret, bytes) else secret.encode()
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_SALT, iterations=_KDF_ITERATIONS)
        return cls(kdf.derive(raw))

    def _nonce(self) -> bytes:
        with self._lock:
            n = next(self._counter)
            if n >= 1 << 32:
                self._prefix, self._counter = os.urandom(_NONCE_PREFIX), itertools.count(1)
                n = 0
            return self._prefix + n.to_bytes(4, "big")

    def encrypt_at_time(self, data: bytes, timestamp: int) -> bytes:
        head = _HEAD.pack(FRAME_VERSION, max(0, int(timestamp)))
        nonce = self._nonce()
        return head + nonce + self._aead.encrypt(nonce, data, head)

    def extract_timestamp(self, token: bytes) -> int:
        """The frame's timestamp, unverified: `decrypt` verifies it."""
        if len(token) < _HEAD.size + _NONCE or token[0] != FRAME_VERSION:
            raise InvalidFrame("not a raftkube Raft frame")
        return int(_HEAD.unpack_from(token)[1])

    def decrypt(self, token: bytes) -> bytes:
        if len(token) < _HEAD.size + _NONCE or token[0] != FRAME_VERSION:
            raise InvalidFrame("not a raftkube Raft frame")
        # Views, not slices: a frame carries a whole batch of writes, and a
        # copy of it is a fresh buffer to allocate and fill.
        frame = memoryview(token)
        head, nonce = frame[: _HEAD.size], frame[_HEAD.size : _HEAD.size + _NONCE]
        try:
            return self._aead.decrypt(nonce, frame[_HEAD.size + _NONCE :], head)
        except InvalidTag:
            raise InvalidFrame("the frame was not sealed with this cluster's secret") from None


class Uncompressed:
    """Stands in for the zlib module in pysyncobj's TCP connections."""

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return data

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return data
