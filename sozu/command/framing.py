"""Sans-io codec for command-channel frames: an 8-byte little-endian length, then a payload.

The length counts the 8 bytes of the prefix itself (Sōzu's convention), so a frame carrying an
empty protobuf message is exactly 8 bytes long. The decoder owns the receive buffer and its size
policy: it starts at `command_buffer_size` and doubles, up to `max_command_buffer_size`, when a
frame announces more than it holds. Every protocol violation surfaces as one `FrameError` whose
`kind` says what went wrong; the codec never reads from a socket and never sleeps.
"""

from __future__ import annotations

import enum
import struct

from sozu.command.errors import SozuError

PREFIX_SIZE = 8
DEFAULT_BUFFER_SIZE = 1_000_000
DEFAULT_MAX_BUFFER_SIZE = 2_000_000
_PREFIX = struct.Struct("<Q")


class FrameErrorKind(enum.Enum):
    """What was wrong with a frame; the caller chooses to answer FAILURE and/or close."""

    TOO_LARGE = "too_large"  # declared length over the maximum buffer size: stream unusable
    TOO_SHORT = "too_short"  # declared length under the 8-byte prefix: stream unusable
    UNDECODABLE = "undecodable"  # a whole frame arrived but its payload is not the expected message
    TRUNCATED = "truncated"  # the peer hung up in the middle of a frame
    CLOSED = "closed"  # the peer hung up between frames (a clean end, not a protocol fault)
    TIMEOUT = "timeout"  # no whole frame within the caller's deadline
    IO = "io"  # the socket itself failed


class FrameError(SozuError):
    """A precise description of a failed read or write on a channel."""

    def __init__(self, kind: FrameErrorKind, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"

    @property
    def stream_usable(self) -> bool:
        """True when the next frame can still be read (the bad one was consumed whole)."""
        return self.kind in (FrameErrorKind.UNDECODABLE, FrameErrorKind.TIMEOUT)


def encode_frame(payload: bytes, max_size: int = DEFAULT_MAX_BUFFER_SIZE) -> bytes:
    """Prefix `payload` with its length; refuse a frame the peer's buffer could never hold."""
    total = len(payload) + PREFIX_SIZE
    if total > max_size:
        raise FrameError(
            FrameErrorKind.TOO_LARGE,
            f"message of {total} bytes exceeds the maximum frame size of {max_size} bytes",
        )
    return _PREFIX.pack(total) + payload


class FrameDecoder:
    """Accumulates received bytes and cuts them into frame payloads.

    `feed()` appends bytes; `next_payload()` returns the payload of the next whole frame, `None`
    when more bytes are needed, or raises `FrameError` for a declared length outside
    [8, max_size]. After such an error the stream cannot be resynchronised.
    """

    def __init__(
        self, buffer_size: int = DEFAULT_BUFFER_SIZE, max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE
    ) -> None:
        if buffer_size < PREFIX_SIZE or max_buffer_size < buffer_size:
            raise ValueError("need 8 <= buffer_size <= max_buffer_size")
        self._buffer = bytearray()
        self._start = 0
        self.capacity = buffer_size
        self.max_capacity = max_buffer_size

    @property
    def pending(self) -> int:
        """Bytes received and not yet consumed by a frame."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        self._buffer += data

    def next_payload(self) -> bytes | None:
        """Payload of the next whole frame, or None when it has not fully arrived yet."""
        if self.pending < PREFIX_SIZE:
            return None
        (declared,) = _PREFIX.unpack_from(self._buffer, self._start)
        if declared > self.max_capacity:
            raise FrameError(
                FrameErrorKind.TOO_LARGE,
                f"declared frame length {declared} exceeds the maximum of {self.max_capacity}",
            )
        if declared < PREFIX_SIZE:
            raise FrameError(
                FrameErrorKind.TOO_SHORT,
                f"declared frame length {declared} is shorter than the {PREFIX_SIZE}-byte prefix",
            )
        while declared > self.capacity:
            self.capacity = min(self.capacity * 2, self.max_capacity)
        if self.pending < declared:
            return None
        begin = self._start + PREFIX_SIZE
        end = self._start + declared
        payload = bytes(self._buffer[begin:end])
        self._start = end
        if self._start > self.capacity:
            del self._buffer[: self._start]
            self._start = 0
        return payload

    def end_of_stream(self) -> FrameError:
        """The error that describes a hang-up, given what is left in the buffer."""
        if self.pending:
            return FrameError(
                FrameErrorKind.TRUNCATED,
                f"peer closed the channel with {self.pending} bytes of an unfinished frame",
            )
        return FrameError(FrameErrorKind.CLOSED, "peer closed the channel")
