"""One command-socket client, from accept to close.

A session owns the client's channel and its `ClientContext` (who it is, for the audit log). It
reads Requests one at a time and hands each to the request handler, which answers through the
session (PROCESSING notes, then one final OK or FAILURE). Input that is not a Request (garbage,
a length prefix outside the allowed sizes, a frame cut short, undecodable protobuf) is answered
with FAILURE when a whole frame header could be read, logged, audited as `invalid_input`, and
closes this client only. A subscribed client also receives each published Event as a PROCESSING
Response whose message is the event's source (`main` or a worker id), as Sōzu sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from sozu.command.channel import AsyncChannel
from sozu.command.framing import FrameError, FrameErrorKind
from sozu.command.logging import get_logger
from sozu.command.proto import Request, Response, ResponseContent, ResponseStatus
from sozu.supervisor.audit import ClientContext
from sozu.supervisor.events import Subscription

log = get_logger("sozu.supervisor.sessions")

# Frame errors after which the client may still read an answer: a header or a whole frame
# arrived. A truncated frame or a hang-up leaves nobody to answer.
_ANSWERABLE = (FrameErrorKind.TOO_LARGE, FrameErrorKind.TOO_SHORT, FrameErrorKind.UNDECODABLE)

RequestHandler = Callable[["ClientSession", Request], Awaitable[bool]]
BadInputHandler = Callable[["ClientSession", str, str], None]


def _response(
    status: ResponseStatus.ValueType, message: str, content: ResponseContent | None
) -> Response:
    response = Response(status=status, message=message)
    if content is not None:
        response.content.CopyFrom(content)
    return response


class ClientSession:
    """A connected client: its identity, its channel, its event subscription."""

    def __init__(self, context: ClientContext, channel: AsyncChannel[Response, Request]) -> None:
        self.context = context
        self.channel = channel
        self.subscription: Subscription | None = None
        self.closed = False
        self._forwarder: asyncio.Task[None] | None = None

    @property
    def client_id(self) -> int:
        return self.context.client_id

    # --- answering -----------------------------------------------------------------------

    async def send(
        self,
        status: ResponseStatus.ValueType,
        message: str,
        content: ResponseContent | None = None,
    ) -> None:
        """Write one Response and wait for the transport to drain; a gone peer closes us."""
        if self.closed:
            return
        try:
            await self.channel.send(_response(status, message, content))
        except FrameError as error:
            log.info("client_write_failed", client_id=self.client_id, error=str(error))
            self.closed = True

    def send_nowait(
        self,
        status: ResponseStatus.ValueType,
        message: str,
        content: ResponseContent | None = None,
    ) -> None:
        """Queue one Response without waiting (from synchronous callbacks)."""
        if self.closed or self.channel.writer.is_closing():
            return
        try:
            self.channel.send_nowait(_response(status, message, content))
        except FrameError as error:
            log.info("client_write_failed", client_id=self.client_id, error=str(error))

    async def processing(self, message: str, content: ResponseContent | None = None) -> None:
        await self.send(ResponseStatus.PROCESSING, message, content)

    async def ok(self, message: str, content: ResponseContent | None = None) -> None:
        await self.send(ResponseStatus.OK, message, content)

    async def failure(self, message: str) -> None:
        await self.send(ResponseStatus.FAILURE, message)

    # --- events --------------------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Forward every event of `subscription` to this client until it closes."""
        if self.subscription is not None:
            subscription.close()
            return
        self.subscription = subscription
        self._forwarder = asyncio.ensure_future(self._forward_events(subscription))

    async def _forward_events(self, subscription: Subscription) -> None:
        async for published in subscription:
            if self.closed:
                break
            await self.processing(published.source, ResponseContent(event=published.event))

    # --- the read loop -------------------------------------------------------------------

    async def serve(self, handle: RequestHandler, bad_input: BadInputHandler) -> None:
        """Read and handle Requests until the client leaves, errs or is told to go."""
        try:
            while not self.closed:
                try:
                    request = await self.channel.recv()
                except FrameError as error:
                    if error.kind not in (FrameErrorKind.CLOSED, FrameErrorKind.IO):
                        await self._refuse(error, bad_input)
                    break
                if request.WhichOneof("request_type") is None:
                    await self._refuse_empty(bad_input)
                    break
                if not await handle(self, request):
                    break
        finally:
            await self.close()

    async def _refuse(self, error: FrameError, bad_input: BadInputHandler) -> None:
        reason = str(error)
        log.warning("client_bad_input", client_id=self.client_id, error=reason)
        bad_input(self, f"frame:{error.kind.value}", reason)
        if error.kind in _ANSWERABLE:
            await self.failure(f"invalid request: {reason}")

    async def _refuse_empty(self, bad_input: BadInputHandler) -> None:
        reason = "the request sets no known request type"
        log.warning("client_bad_input", client_id=self.client_id, error=reason)
        bad_input(self, "request:empty", reason)
        await self.failure(f"invalid request: {reason}")

    async def close(self) -> None:
        """Drop the subscription and close the channel (idempotent)."""
        self.closed = True
        if self.subscription is not None:
            self.subscription.close()
        if self._forwarder is not None:
            self._forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._forwarder
            self._forwarder = None
        await self.channel.close()
