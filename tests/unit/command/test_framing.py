"""Frame codec: round trips under any fragmentation, and every declared-length error."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sozu.command.framing import (
    PREFIX_SIZE,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    encode_frame,
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def test_length_counts_the_prefix() -> None:
    assert encode_frame(b"") == b"\x08\x00\x00\x00\x00\x00\x00\x00"
    assert encode_frame(b"abc") == struct.pack("<Q", 11) + b"abc"


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_fragmented_and_coalesced_frames_round_trip(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(buffer_size=64, max_buffer_size=4096)
    received = []
    for piece in split_at(stream, cuts):
        decoder.feed(piece)
        while (payload := decoder.next_payload()) is not None:
            received.append(payload)
    assert received == payloads
    assert decoder.pending == 0


def test_buffer_grows_by_doubling_up_to_the_maximum() -> None:
    decoder = FrameDecoder(buffer_size=16, max_buffer_size=100)
    decoder.feed(encode_frame(b"x" * 50))
    assert decoder.next_payload() == b"x" * 50
    assert decoder.capacity == 64
    decoder.feed(encode_frame(b"y" * 90))
    assert decoder.next_payload() == b"y" * 90
    assert decoder.capacity == 100


def test_declared_length_over_maximum_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(buffer_size=16, max_buffer_size=100)
    decoder.feed(struct.pack("<Q", 101))
    with pytest.raises(FrameError) as caught:
        decoder.next_payload()
    assert caught.value.kind is FrameErrorKind.TOO_LARGE
    assert "101" in str(caught.value)
    assert not caught.value.stream_usable


@pytest.mark.parametrize("declared", [0, 1, 7])
def test_declared_length_under_the_prefix_is_refused(declared: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack("<Q", declared))
    with pytest.raises(FrameError) as caught:
        decoder.next_payload()
    assert caught.value.kind is FrameErrorKind.TOO_SHORT


def test_encode_refuses_a_frame_over_the_maximum() -> None:
    with pytest.raises(FrameError) as caught:
        encode_frame(b"z" * 100, max_size=100)
    assert caught.value.kind is FrameErrorKind.TOO_LARGE
    assert encode_frame(b"z" * 92, max_size=100)[:PREFIX_SIZE] == struct.pack("<Q", 100)


def test_end_of_stream_tells_a_clean_close_from_a_truncated_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.end_of_stream().kind is FrameErrorKind.CLOSED
    decoder.feed(encode_frame(b"hello")[:-2])
    assert decoder.next_payload() is None
    error = decoder.end_of_stream()
    assert error.kind is FrameErrorKind.TRUNCATED
    assert "11 bytes" in str(error)


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(buffer_size=4)
    with pytest.raises(ValueError):
        FrameDecoder(buffer_size=100, max_buffer_size=50)
