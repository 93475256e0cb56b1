"""Raft frames sealed with AES-GCM: what one master seals, another master
of the same cluster opens; anything changed, forged or sealed under another
secret is refused, timestamp included."""

from __future__ import annotations

import itertools
import os

import pytest

from ha.peer_frames import FrameCipher, InvalidFrame

KEY = bytes(range(32))


def test_a_frame_round_trips_with_its_timestamp() -> None:
    sealer, opener = FrameCipher(KEY), FrameCipher(KEY)
    data = os.urandom(5000)
    token = sealer.encrypt_at_time(data, 1234)
    assert opener.extract_timestamp(token) == 1234
    assert opener.decrypt(token) == data
    assert data not in token


def test_the_same_secret_gives_the_same_key_and_another_secret_another() -> None:
    token = FrameCipher.from_secret("s3cret").encrypt_at_time(b"hello", 1)
    assert FrameCipher.from_secret(b"s3cret").decrypt(token) == b"hello"
    with pytest.raises(InvalidFrame):
        FrameCipher.from_secret("other").decrypt(token)


@pytest.mark.parametrize("position", [1, 9, 15, 21, 30, -1])
def test_any_changed_byte_is_refused(position: int) -> None:
    cipher = FrameCipher(KEY)
    token = bytearray(cipher.encrypt_at_time(b"x" * 20, 7))
    token[position] ^= 0x01
    with pytest.raises(InvalidFrame):
        cipher.decrypt(bytes(token))


def test_a_forged_timestamp_is_refused_when_the_frame_is_opened() -> None:
    cipher = FrameCipher(KEY)
    token = cipher.encrypt_at_time(b"payload", 7)
    forged = token[:1] + (8).to_bytes(8, "big") + token[9:]
    assert cipher.extract_timestamp(forged) == 8  # read before opening, as pysyncobj does
    with pytest.raises(InvalidFrame):
        cipher.decrypt(forged)


@pytest.mark.parametrize("token", [b"", b"\x01" * 10, b"\x02" + b"\0" * 40, b"gAAAAABk-a-fernet-token"])
def test_what_is_not_a_frame_is_refused(token: bytes) -> None:
    cipher = FrameCipher(KEY)
    with pytest.raises(InvalidFrame):
        cipher.extract_timestamp(token)
    with pytest.raises(InvalidFrame):
        cipher.decrypt(token)


def test_nonces_never_repeat_across_the_counter_wrapping() -> None:
    cipher = FrameCipher(KEY)
    first = {cipher._nonce() for _ in range(1000)}
    cipher._counter = itertools.count((1 << 32) - 2)  # about to wrap
    near_wrap = {cipher._nonce() for _ in range(4)}
    assert len(first) == 1000 and len(near_wrap) == 4 and not first & near_wrap
    assert cipher.decrypt(cipher.encrypt_at_time(b"after the wrap", 1)) == b"after the wrap"


def test_a_key_is_32_bytes() -> None:
    with pytest.raises(ValueError):
        FrameCipher(b"short")
