"""The CLI's side of the command socket: send one Request, read Responses until the final one.

A `Client` wraps a blocking `Channel[Request, Response]`. The supervisor may answer PROCESSING any
number of times before its final OK or FAILURE; each PROCESSING restarts the timeout (Sōzu's
`ctl_command_timeout`, overridden by `-t`, 0 = wait forever) and its message goes to stderr
unless JSON output was asked for. Every way this can go wrong (no proxy, refused connection, a
timeout, a hang-up, an unreadable frame, a FAILURE answer) is raised as one `ClientError` whose
text is the single line the operator sees; nothing here prints a traceback or exits.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sozu.command.channel import Channel
from sozu.command.config import Config
from sozu.command.errors import SozuError
from sozu.command.framing import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_BUFFER_SIZE,
    FrameError,
    FrameErrorKind,
)
from sozu.command.proto import Request, Response, ResponseStatus

ProcessingHook = Callable[[Response], None]


class _Default(enum.Enum):
    """Marks "use the client's own timeout" (None already means "wait forever")."""

    CLIENT = 0


class ClientError(SozuError):
    """A command that could not be carried out; `str()` is the one line shown to the operator."""


class RequestFailed(ClientError):
    """The supervisor answered FAILURE; `response` is that answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.message or "the request failed (no reason given)")
        self.response = response


def timeout_seconds(flag_ms: int | None, config: Config | None) -> float | None:
    """The per-answer timeout: `-t MS`, else the config's ctl_command_timeout; 0 = none."""
    milliseconds = flag_ms
    if milliseconds is None:
        milliseconds = config.ctl_command_timeout if config is not None else 1_000
    return None if milliseconds == 0 else milliseconds / 1000


class Client:
    """One connection to the command socket of a running supervisor."""

    def __init__(
        self,
        socket_path: Path | str,
        timeout: float | None = 1.0,
        *,
        quiet: bool = False,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self.quiet = quiet
        self.buffer_size = buffer_size
        self.max_buffer_size = max_buffer_size
        self._channel: Channel[Request, Response] | None = None

    @classmethod
    def from_config(
        cls, config: Config, timeout_ms: int | None = None, *, quiet: bool = False
    ) -> Client:
        """A client for the command socket named by a loaded configuration."""
        return cls(
            config.command_socket,
            timeout_seconds(timeout_ms, config),
            quiet=quiet,
            buffer_size=config.command_buffer_size,
            max_buffer_size=config.max_command_buffer_size,
        )

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection; ClientError when nobody listens on the socket."""
        self.close()
        try:
            self._channel = Channel.connect(
                self.socket_path, Response, self.buffer_size, self.max_buffer_size
            )
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            hint = (
                " (is sozu running?)"
                if isinstance(error, FileNotFoundError | ConnectionRefusedError)
                else ""
            )
            raise ClientError(f"cannot reach sozu at {self.socket_path}: {reason}{hint}") from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> Client:
        if self._channel is None:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def channel(self) -> Channel[Request, Response]:
        if self._channel is None:
            self.connect()
        assert self._channel is not None
        return self._channel

    # -- exchanges ----------------------------------------------------------------------------

    def send(self, request: Request) -> None:
        """Write one Request."""
        try:
            self.channel.send(request)
        except FrameError as error:
            if error.kind is FrameErrorKind.TOO_LARGE:
                raise ClientError(f"the request is too large to send: {error.detail}") from None
            raise ClientError(
                f"lost the connection to sozu at {self.socket_path}: {error.detail}"
            ) from None

    def receive(self, timeout: float | None) -> Response:
        """Read one Response (final or not) within `timeout` seconds (None: wait forever)."""
        try:
            return self.channel.recv(timeout)
        except FrameError as error:
            raise self._read_error(error, timeout) from None

    def _read_error(self, error: FrameError, timeout: float | None) -> ClientError:
        kind = error.kind
        if kind is FrameErrorKind.TIMEOUT:
            milliseconds = round((timeout or 0) * 1000)
            return ClientError(f"no answer within {milliseconds} ms")
        if kind is FrameErrorKind.CLOSED:
            return ClientError(
                f"sozu closed the connection at {self.socket_path} without answering"
            )
        if kind is FrameErrorKind.TRUNCATED:
            return ClientError("sozu closed the connection in the middle of an answer")
        if kind is FrameErrorKind.IO:
            return ClientError(f"lost the connection to sozu at {self.socket_path}: {error.detail}")
        return ClientError(f"unreadable answer from sozu: {error.detail}")

    def _report_processing(self, response: Response) -> None:
        if not self.quiet and response.message:
            print(response.message, file=sys.stderr, flush=True)

    def call(
        self,
        request: Request,
        *,
        timeout: float | _Default | None = _Default.CLIENT,
        on_processing: ProcessingHook | None = None,
    ) -> Response:
        """Send `request` and return the final OK answer; RequestFailed on FAILURE.

        `timeout` (seconds, None = forever) bounds each read and defaults to the client's;
        every PROCESSING answer restarts it and is handed to `on_processing` (default: its
        message on stderr unless quiet).
        """
        limit = self.timeout if timeout is _Default.CLIENT else timeout
        hook = on_processing or self._report_processing
        self.send(request)
        while True:
            response = self.receive(limit)
            if response.status == ResponseStatus.PROCESSING:
                hook(response)
                continue
            if response.status == ResponseStatus.FAILURE:
                raise RequestFailed(response)
            return response

    def stream(self, request: Request) -> Iterator[Response]:
        """Send `request` and yield every PROCESSING answer, waiting forever (events).

        Ends when a final OK arrives; a FAILURE raises RequestFailed, a hang-up ClientError.
        """
        self.send(request)
        while True:
            try:
                response = self.channel.recv(None)
            except FrameError as error:
                if error.kind is FrameErrorKind.CLOSED:
                    raise ClientError(f"sozu at {self.socket_path} closed the stream") from None
                raise self._read_error(error, None) from None
            if response.status == ResponseStatus.PROCESSING:
                yield response
                continue
            if response.status == ResponseStatus.FAILURE:
                raise RequestFailed(response)
            return
