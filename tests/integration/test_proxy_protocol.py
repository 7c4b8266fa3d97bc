"""PROXY protocol through a real worker: HTTP and HTTPS listeners with `expect_proxy`, and TCP
clusters whose proxy_protocol (from `send_proxy` and the listeners' `expect_proxy`) is
SEND_HEADER, RELAY_HEADER or EXPECT_HEADER.

The worker is driven as in edge_worker.py (the test plays the supervisor), with one HTTP, one
HTTPS and three TCP listeners. Backends live in the test process on 127.0.0.1: an HTTP backend
answering with the headers it received, and a TCP backend recording the bytes of each
connection until the client's end of stream.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
import trustme

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    AddCertificate,
    CertificateAndKey,
    PathRule,
    PathRuleKind,
    Request,
    RequestHttpFrontend,
)
from sozu.worker.protocol.proxy_protocol import Address, Parsed, build_v1, build_v2, parse
from tests.integration.edge_worker import OK, EdgeWorker, spawn
from tests.integration.harness import bind_listener, wait_for

pytestmark = pytest.mark.timeout(60)

Builder = Callable[[Address | None, Address | None], bytes]
CLIENT = ("203.0.113.9", 40123)  # the address a load balancer in front says the client has


class _Headers(http.server.BaseHTTPRequestHandler):
    """HTTP backend answering with the request headers it received."""

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Recorder:
    """TCP backend: keeps the bytes of each connection, read until the client's end."""

    def __init__(self) -> None:
        self.sock, self.address = bind_listener()
        self.received: list[bytes] = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        chunks = []
        with conn:
            try:
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
                conn.sendall(b"recorded")
            except OSError:
                pass
        self.received.append(b"".join(chunks))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def http_backend() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Headers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    backend = Recorder()
    yield backend
    backend.close()


@pytest.fixture(autouse=True)
def fresh_counts(recorder: Recorder) -> None:
    """One worker and its backends serve the whole module; each test starts from zero."""
    _Headers.requests = 0
    recorder.accepted = 0
    recorder.received.clear()


def _config(addresses: dict[str, str], http_backend: str, tcp_backend: str) -> str:
    return f"""
    command_socket = "sozu.sock"
    log_level = "info"
    log_target = "stderr"

    [[listeners]]
    protocol = "http"
    address = "{addresses["http"]}"
    expect_proxy = true
    request_timeout = 1

    [[listeners]]
    protocol = "https"
    address = "{addresses["https"]}"
    expect_proxy = true

    [[listeners]]
    protocol = "tcp"
    address = "{addresses["send"]}"

    [[listeners]]
    protocol = "tcp"
    address = "{addresses["relay"]}"
    expect_proxy = true

    [[listeners]]
    protocol = "tcp"
    address = "{addresses["expect"]}"
    expect_proxy = true

    [clusters.app]
    protocol = "http"
    frontends = []
    backends = [{{ address = "{http_backend}" }}]

    [clusters.send]
    protocol = "tcp"
    send_proxy = true
    frontends = [{{ address = "{addresses["send"]}" }}]
    backends = [{{ address = "{tcp_backend}" }}]

    [clusters.relay]
    protocol = "tcp"
    send_proxy = true
    frontends = [{{ address = "{addresses["relay"]}" }}]
    backends = [{{ address = "{tcp_backend}" }}]

    [clusters.expect]
    protocol = "tcp"
    frontends = [{{ address = "{addresses["expect"]}" }}]
    backends = [{{ address = "{tcp_backend}" }}]
    """


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, http_backend: str, recorder: Recorder
) -> Iterator[EdgeWorker]:
    """A worker with every listener of `_config`, an HTTP(S) frontend for a.example."""
    tmp_path = tmp_path_factory.mktemp("proxy_protocol")
    kinds = {"http": "http", "https": "tls", "send": "tcp", "relay": "tcp", "expect": "tcp"}
    edge = spawn(tmp_path, lambda a: _config(a, http_backend, recorder.address), kinds)
    addresses = edge.addresses
    try:
        leaf = ca.issue_cert("a.example")
        pem = leaf.cert_chain_pems[0].bytes().decode()
        cert = CertificateAndKey(certificate=pem, key=leaf.private_key_pem.bytes().decode())
        https = to_proto(addresses["https"])
        added = edge.call(Request(add_certificate=AddCertificate(address=https, certificate=cert)))
        assert added.status == OK, added.message
        fronts = {
            kind: RequestHttpFrontend(
                cluster_id="app",
                address=to_proto(addresses[kind]),
                hostname="a.example",
                path=PathRule(kind=PathRuleKind.PREFIX, value=""),
            )
            for kind in ("http", "https")
        }
        assert edge.call(Request(add_http_frontend=fronts["http"])).status == OK
        assert edge.call(Request(add_https_frontend=fronts["https"])).status == OK
        yield edge
    finally:
        edge.stop()


def connect(worker: EdgeWorker, name: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", worker.port(name)), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def closed_without_answer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


GET = b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"


def seen_headers(answer: bytes) -> dict[str, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    seen: dict[str, str] = json.loads(body)
    return seen


# --- HTTP and HTTPS listeners with expect_proxy ------------------------------------------------


@pytest.mark.parametrize("build", [build_v1, build_v2])
def test_http_client_address_is_the_header_source(worker: EdgeWorker, build: Builder) -> None:
    header = build(CLIENT, ("127.0.0.2", 8443))  # the address the client reached, per the header
    with connect(worker, "http") as client:
        client.sendall(header + GET)  # one segment: header and request together
        seen = seen_headers(read_all(client))
    assert seen["x-forwarded-for"] == CLIENT[0]
    assert f'for="{CLIENT[0]}:{CLIENT[1]}"' in seen["forwarded"]
    assert "by=127.0.0.2" in seen["forwarded"]  # the header's destination, as Sōzu
    assert seen["x-forwarded-port"] == "8443"


def test_http_header_in_pieces_then_request(worker: EdgeWorker) -> None:
    header = build_v2(CLIENT, ("127.0.0.1", worker.port("http")))
    with connect(worker, "http") as client:
        client.sendall(header[:5])
        client.sendall(header[5:20])
        client.sendall(header[20:])
        client.sendall(GET)
        assert seen_headers(read_all(client))["x-forwarded-for"] == CLIENT[0]


@pytest.mark.parametrize(
    "first_bytes",
    [
        GET,  # no header at all
        b"PROXY TCP4 203.0.113.9 nowhere 1 2\r\n" + GET,
        b"\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x0c" + bytes(12) + GET,  # v2, bad version
        b"PROXY UNKNOWN\r\n" + GET,  # no addresses: Sōzu serves no HTTP on it either
        build_v2(None, None, local=True) + GET,
    ],
)
def test_http_invalid_header_closes_without_contacting_the_backend(
    worker: EdgeWorker, first_bytes: bytes
) -> None:
    with connect(worker, "http") as client:
        client.sendall(first_bytes)
        assert closed_without_answer(client)
    assert _Headers.requests == 0


def test_http_no_complete_header_within_request_timeout_closes(worker: EdgeWorker) -> None:
    with connect(worker, "http") as client:
        client.sendall(b"PROXY TCP4 ")
        client.settimeout(5)  # request_timeout is 1 s
        assert closed_without_answer(client)
    assert _Headers.requests == 0


def test_https_header_then_tls(worker: EdgeWorker, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    raw = connect(worker, "https")
    raw.sendall(build_v2(CLIENT, ("127.0.0.1", worker.port("https"))))
    with context.wrap_socket(raw, server_hostname="a.example") as tls:
        tls.sendall(GET)
        seen = seen_headers(read_all(tls))
    assert seen["x-forwarded-for"] == CLIENT[0]
    assert seen["x-forwarded-proto"] == "https"


def test_https_without_header_is_closed(worker: EdgeWorker, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        context.wrap_socket(connect(worker, "https"), server_hostname="a.example"),
    ):
        pass
    assert _Headers.requests == 0


# --- TCP clusters ------------------------------------------------------------------------------


def test_tcp_send_proxy_writes_a_v2_header_before_the_bytes(
    worker: EdgeWorker, recorder: Recorder
) -> None:
    with connect(worker, "send") as client:
        client.sendall(b"hello backend")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"recorded"
        client_address = client.getsockname()
    wait_for(lambda: recorder.received, 5, "the backend's record")
    received = recorder.received[0]
    header = parse(received)
    assert isinstance(header, Parsed), received
    assert header.version == 2 and not header.local
    assert header.source == client_address
    assert header.destination == ("127.0.0.1", worker.port("send"))
    assert received[header.consumed :] == b"hello backend"


@pytest.mark.parametrize("build", [build_v1, build_v2])
def test_tcp_relay_forwards_the_received_header(
    worker: EdgeWorker, recorder: Recorder, build: Builder
) -> None:
    header = build(CLIENT, ("192.0.2.80", 443))
    with connect(worker, "relay") as client:
        client.sendall(header + b"payload")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"recorded"
    wait_for(lambda: recorder.received, 5, "the backend's record")
    assert recorder.received[0] == header + b"payload"


@pytest.mark.parametrize("local", [False, True])
def test_tcp_expect_consumes_the_header(
    worker: EdgeWorker, recorder: Recorder, local: bool
) -> None:
    # LOCAL (a load balancer's health check): served with the connection's own address
    with connect(worker, "expect") as client:
        client.sendall(build_v2(CLIENT, ("192.0.2.80", 443), local=local) + b"only this")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"recorded"
    wait_for(lambda: recorder.received, 5, "the backend's record")
    assert recorder.received[0] == b"only this"


@pytest.mark.parametrize("name", ["relay", "expect"])
def test_tcp_invalid_header_closes_before_any_backend(
    worker: EdgeWorker, recorder: Recorder, name: str
) -> None:
    with connect(worker, name) as client:
        client.sendall(b"SSH-2.0-OpenSSH\r\n")
        assert closed_without_answer(client)
    assert recorder.accepted == 0
