"""The demo backend: a tiny HTTP/1.1 server whose answer shows that a request went through sozu.

It answers every request with 200 and a short text naming the backend, the request's method,
path and Host, and the `X-Forwarded-For` / `Sozu-Id` headers the proxy adds. Keep-alive is
supported so the proxy's connection pool has something to reuse. Demo and tests only.
"""

from __future__ import annotations

import asyncio
import contextlib

import httptools


class DemoBackendProtocol(asyncio.Protocol):
    """One client connection; parses with httptools and answers each request in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[str, str] = {}
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()

    def on_message_begin(self) -> None:
        self.headers = {}
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        method = self.parser.get_method().decode("latin-1")
        body = (
            f"Hello from the sozu-py demo backend {self.name}\n"
            f"request: {method} {self.url.decode('latin-1')} host={self.headers.get('host', '-')}\n"
            f"x-forwarded-for: {self.headers.get('x-forwarded-for', '-')}\n"
            f"sozu-id: {self.headers.get('sozu-id', '-')}\n"
        ).encode()
        keep_alive = self.parser.should_keep_alive()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        if not keep_alive:
            self.transport.close()


async def serve(host: str = "127.0.0.1", port: int = 8081, name: str = "demo") -> asyncio.Server:
    """Start listening; the caller keeps the returned server open as long as it needs it."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: DemoBackendProtocol(name), host, port)


def run_forever(host: str = "127.0.0.1", port: int = 8081, name: str = "demo") -> None:
    """Serve until interrupted (used by `sozu demo`, which runs it in a child process)."""

    async def main() -> None:
        server = await serve(host, port, name)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
