"""Typed protobuf channels over a connected AF_UNIX stream socket, blocking and asyncio flavours.

A channel sends messages of one type and receives messages of another (a CLI sends `Request` and
receives `Response`; a worker receives `WorkerRequest` and sends `WorkerResponse`). Framing and
buffer sizing belong to `sozu.command.framing`; this module only moves bytes and turns every
failure (bad frame, undecodable payload, hang-up, timeout, socket error) into a `FrameError`, so a
caller handles one exception type and decides whether to answer FAILURE and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from sozu.command.framing import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_BUFFER_SIZE,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    encode_frame,
)

Rx = TypeVar("Rx", bound=Message)
Rx2 = TypeVar("Rx2", bound=Message)
Tx = TypeVar("Tx", bound=Message)

_READ_CHUNK = 65536


def _missing_fields(message: Message) -> str:
    """Names of unset required fields (a runtime method that the type stubs do not declare)."""
    errors: list[str] = message.FindInitializationErrors()  # type: ignore[attr-defined]
    return ", ".join(errors)


def decode_payload(payload: bytes, message_type: type[Rx]) -> Rx:
    """Parse one frame payload, mapping every protobuf failure to FrameError(UNDECODABLE)."""
    message = message_type()
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise FrameError(
            FrameErrorKind.UNDECODABLE,
            f"{len(payload)}-byte payload is not a valid {message_type.__name__}: {error}",
        ) from None
    if not message.IsInitialized():
        raise FrameError(
            FrameErrorKind.UNDECODABLE,
            f"{message_type.__name__} lacks required fields: {_missing_fields(message)}",
        )
    return message


def encode_message(message: Message, max_size: int) -> bytes:
    """Serialize and frame one message; a message missing required fields is refused."""
    if not message.IsInitialized():
        raise FrameError(
            FrameErrorKind.UNDECODABLE,
            f"refusing to send {type(message).__name__} without required fields: "
            f"{_missing_fields(message)}",
        )
    return encode_frame(message.SerializeToString(), max_size)


class Channel(Generic[Tx, Rx]):
    """Blocking channel: `send()` writes one whole frame, `recv()` returns one whole message."""

    def __init__(
        self,
        sock: socket.socket,
        rx_type: type[Rx],
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.rx_type = rx_type
        self.max_buffer_size = max_buffer_size
        self._decoder = FrameDecoder(buffer_size, max_buffer_size)

    @classmethod
    def connect(
        cls,
        path: str,
        rx_type: type[Rx],
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> Channel[Tx, Rx]:
        """Connect to a unix socket path (the command socket); OSError if nobody listens."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock, rx_type, buffer_size, max_buffer_size)

    def fileno(self) -> int:
        return self.sock.fileno()

    def retyped(self, rx_type: type[Rx2]) -> Channel[Tx, Rx2]:
        """The same socket and receive buffer, reading another message type from now on.

        The worker handshake needs it: the first frame is a `ServerConfig`, then `WorkerRequest`s
        follow, possibly already in the buffer.
        """
        other: Channel[Tx, Rx2] = Channel(self.sock, rx_type, max_buffer_size=self.max_buffer_size)
        other._decoder = self._decoder
        return other

    def close(self) -> None:
        self.sock.close()

    def send(self, message: Tx) -> None:
        """Write one framed message; FrameError(IO) when the peer is gone."""
        frame = encode_message(message, self.max_buffer_size)
        try:
            self.sock.sendall(frame)
        except OSError as error:
            raise FrameError(FrameErrorKind.IO, f"write failed: {error}") from None

    def recv(self, timeout: float | None = None) -> Rx:
        """Read one message, waiting at most `timeout` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            payload = self._decoder.next_payload()
            if payload is not None:
                return decode_payload(payload, self.rx_type)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FrameError(FrameErrorKind.TIMEOUT, f"no message within {timeout} s")
                self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(_READ_CHUNK)
            except TimeoutError:
                raise FrameError(FrameErrorKind.TIMEOUT, f"no message within {timeout} s") from None
            except OSError as error:
                raise FrameError(FrameErrorKind.IO, f"read failed: {error}") from None
            finally:
                if deadline is not None:
                    self.sock.settimeout(None)
            if not data:
                raise self._decoder.end_of_stream()
            self._decoder.feed(data)

    def __enter__(self) -> Channel[Tx, Rx]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncChannel(Generic[Tx, Rx]):
    """asyncio channel over stream reader/writer; one reader task at a time per channel."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rx_type: type[Rx],
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.rx_type = rx_type
        self.max_buffer_size = max_buffer_size
        self._decoder = FrameDecoder(buffer_size, max_buffer_size)

    @classmethod
    async def from_socket(
        cls,
        sock: socket.socket,
        rx_type: type[Rx],
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> AsyncChannel[Tx, Rx]:
        """Wrap an already connected unix socket (a socketpair end, an accepted client)."""
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=max_buffer_size)
        return cls(reader, writer, rx_type, buffer_size, max_buffer_size)

    @classmethod
    async def connect(
        cls,
        path: str,
        rx_type: type[Rx],
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> AsyncChannel[Tx, Rx]:
        """Connect to a unix socket path; OSError if nobody listens."""
        reader, writer = await asyncio.open_unix_connection(path, limit=max_buffer_size)
        return cls(reader, writer, rx_type, buffer_size, max_buffer_size)

    def send_nowait(self, message: Tx) -> None:
        """Queue one framed message on the transport without waiting for it to drain."""
        frame = encode_message(message, self.max_buffer_size)
        try:
            self.writer.write(frame)
        except (OSError, RuntimeError) as error:
            raise FrameError(FrameErrorKind.IO, f"write failed: {error}") from None

    async def send(self, message: Tx) -> None:
        """Write one framed message and wait until the transport drained below its mark."""
        self.send_nowait(message)
        try:
            await self.writer.drain()
        except (OSError, RuntimeError) as error:
            raise FrameError(FrameErrorKind.IO, f"write failed: {error}") from None

    async def recv(self, timeout: float | None = None) -> Rx:
        """Read one message, waiting at most `timeout` seconds (None: forever)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._recv()
        except TimeoutError:
            raise FrameError(FrameErrorKind.TIMEOUT, f"no message within {timeout} s") from None

    async def _recv(self) -> Rx:
        while True:
            payload = self._decoder.next_payload()
            if payload is not None:
                return decode_payload(payload, self.rx_type)
            try:
                data = await self.reader.read(_READ_CHUNK)
            except OSError as error:
                raise FrameError(FrameErrorKind.IO, f"read failed: {error}") from None
            if not data:
                raise self._decoder.end_of_stream()
            self._decoder.feed(data)

    # --- pausing (a main upgrade hands this socket over between two frames) ---------------

    def pause_reading(self) -> None:
        """Stop taking bytes from the socket; what the kernel holds stays there for anyone."""
        pause = getattr(self.writer.transport, "pause_reading", None)
        if pause is not None:
            pause()

    def resume_reading(self) -> None:
        resume = getattr(self.writer.transport, "resume_reading", None)
        if resume is not None:
            resume()

    def unread(self) -> int:
        """Bytes taken from the socket that no `recv()` has looked at yet."""
        return len(getattr(self.reader, "_buffer", b""))

    def buffered(self) -> int:
        """Bytes taken from the socket and not yet returned as a whole message."""
        return self.unread() + self._decoder.pending

    async def close(self) -> None:
        """Close the transport; errors while closing a dead peer are of no interest."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
