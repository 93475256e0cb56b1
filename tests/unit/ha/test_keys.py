from __future__ import annotations

import pytest

from ha.keys import decode_continue, encode_continue, prefix_end


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        pytest.param(b"/registry/pods/", b"/registry/pods0", id="plain"),
        pytest.param(b"a\xff", b"b", id="carries"),
        pytest.param(b"\xff\xff", b"\0", id="all-ff-means-everything-after"),
    ],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_continue_token_round_trip() -> None:
    token = encode_continue(42, b"/a/b\0", b"/a0")
    assert decode_continue(token) == (42, b"/a/b\0", b"/a0")


@pytest.mark.parametrize("token", ["", "!!", "AAAA", encode_continue(1, b"k", b"")[:-4] + "@@@@"])
def test_malformed_continue_tokens(token: str) -> None:
    with pytest.raises(ValueError, match="continue token"):
        decode_continue(token)
