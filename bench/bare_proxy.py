"""The "bare prototype": a keep-alive HTTP/1.1 proxy on uvloop + httptools and nothing else.

No routing, no header rewriting beyond dropping Connection, no timeouts: the floor that sozu-py's
full feature set is measured against. Usage: bare_proxy.py PORT BACKEND_PORT [TLS_PORT CERT KEY]
"""

import asyncio
import ssl
import sys

import httptools
import uvloop

HOP = {b"connection", b"keep-alive"}
POOL: list["Backend"] = []


class Backend(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.client = transport, None
        self.parser = httptools.HttpResponseParser(self)

    def data_received(self, data):
        if self.first and not self.client.keep_alive:  # tell the client this connection ends
            self.first, line = False, data.find(b"\r\n") + 2
            data = b"%sConnection: close\r\n%s" % (data[:line], data[line:])
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self):
        client, self.client = self.client, None
        self.parser = httptools.HttpResponseParser(self)
        if not self.transport.is_reading():  # paused by the client's back-pressure
            self.transport.resume_reading()
        POOL.append(self)
        client.response_done()

    def connection_lost(self, exc):
        if self in POOL:
            POOL.remove(self)
        elif self.client is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.backend = transport, None
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.head = []

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        if name.lower() not in HOP:
            self.head.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self):
        self.keep_alive = self.parser.should_keep_alive()
        self.transport.pause_reading()  # one request at a time
        line = b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), self.url)
        self.out = [line, *self.head, b"\r\n"]

    def on_body(self, body):
        self.out.append(body)

    def on_message_complete(self):
        if POOL:
            self.send(POOL.pop(), b"".join(self.out))
        else:
            self.task = asyncio.ensure_future(self.forward(b"".join(self.out)))

    async def forward(self, data):
        _, backend = await asyncio.get_running_loop().create_connection(
            Backend, "127.0.0.1", BACKEND_PORT
        )
        self.send(backend, data)

    def send(self, backend, data):
        self.backend, backend.client, backend.first = backend, self, True
        backend.transport.write(data)

    def response_done(self):
        self.backend = None
        if self.keep_alive:
            self.transport.resume_reading()
        else:
            self.transport.close()

    def pause_writing(self):
        if self.backend is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self):
        if self.backend is not None:
            self.backend.transport.resume_reading()

    def connection_lost(self, exc):
        if self.backend is not None:
            self.backend.transport.close()


async def main(port, tls_port, context):
    loop = asyncio.get_running_loop()
    await loop.create_server(Client, "127.0.0.1", port, backlog=1024)
    if context is not None:
        await loop.create_server(Client, "127.0.0.1", tls_port, ssl=context, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    BACKEND_PORT = int(sys.argv[2])
    context = None
    if len(sys.argv) > 5:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[3]) if context else 0, context))
