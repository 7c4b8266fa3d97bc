"""HTTPS listeners of a real worker: SNI selection across runtime certificate changes, TLS
versions, ALPN, and connections that outlive a certificate replacement.

Certificates come from a trustme CA; clients are `ssl.create_default_context()` trusting it
(and `openssl s_client -servername` when installed). The test plays the supervisor
(tests/integration/edge_worker.py).
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from sozu.command.addresses import to_proto
from sozu.command.certificate import fingerprint_hex
from sozu.command.proto import (
    AddCertificate,
    CertificateAndKey,
    HstsConfig,
    PathRule,
    PathRuleKind,
    RemoveCertificate,
    ReplaceCertificate,
    Request,
    RequestHttpFrontend,
)
from sozu.worker.tls import hsts_value
from tests.integration.edge_worker import FAILURE, OK, EdgeWorker, spawn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pair(ca: trustme.CA, *names: str) -> tuple[str, CertificateAndKey]:
    leaf = ca.issue_cert(*names)
    pem = leaf.cert_chain_pems[0].bytes().decode()
    key = leaf.private_key_pem.bytes().decode()
    return fingerprint_hex(pem), CertificateAndKey(certificate=pem, key=key)


def config(tls_versions: str = "") -> Callable[[dict[str, str]], str]:
    def render(addresses: dict[str, str]) -> str:
        return f"""
        command_socket = "sozu.sock"
        log_level = "info"
        log_target = "stderr"

        [[listeners]]
        protocol = "https"
        address = "{addresses["https"]}"
        {tls_versions}

        [[listeners]]
        protocol = "tcp"
        address = "{addresses["tcp"]}"
        """

    return render


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., EdgeWorker]]:
    started: list[EdgeWorker] = []

    def starter(tls_versions: str = "") -> EdgeWorker:
        worker = spawn(tmp_path, config(tls_versions))
        started.append(worker)
        return worker

    yield starter
    for worker in started:
        worker.stop()


def add(worker: EdgeWorker, cert: CertificateAndKey) -> None:
    address = to_proto(worker.addresses["https"])
    response = worker.call(
        Request(add_certificate=AddCertificate(address=address, certificate=cert))
    )
    assert response.status == OK, response.message


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def handshake(
    worker: EdgeWorker,
    ca: trustme.CA,
    name: str | None,
    context: ssl.SSLContext | None = None,
) -> ssl.SSLSocket:
    """A TLS connection to the HTTPS listener (no hostname check: the test checks the cert)."""
    context = context or client_context(ca)
    context.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", worker.port("https")), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


def served(worker: EdgeWorker, ca: trustme.CA, name: str | None) -> str:
    """Fingerprint of the certificate the listener serves for SNI `name`."""
    with handshake(worker, ca, name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    pem = ssl.DER_cert_to_PEM_cert(der)
    return fingerprint_hex(pem)


def http_status(tls: ssl.SSLSocket, host: str) -> bytes:
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_sni_selects_hot_added_certificates(
    start: Callable[..., EdgeWorker], ca: trustme.CA
) -> None:
    worker = start()
    fp_a, cert_a = pair(ca, "a.example")
    add(worker, cert_a)
    assert served(worker, ca, "a.example") == fp_a
    fp_b, cert_b = pair(ca, "b.example")
    fp_w, cert_w = pair(ca, "*.wild.example")
    add(worker, cert_b)
    add(worker, cert_w)
    assert served(worker, ca, "a.example") == fp_a
    assert served(worker, ca, "B.Example") == fp_b
    assert served(worker, ca, "x.wild.example") == fp_w
    # the wildcard covers one label only; unknown names and no SNI get the default (oldest)
    assert served(worker, ca, "y.x.wild.example") == fp_a
    assert served(worker, ca, "unknown.example") == fp_a
    assert served(worker, ca, None) == fp_a
    # a verifying client accepts the chosen certificate, and HTTP is served over it
    with client_context(ca).wrap_socket(
        socket.create_connection(("127.0.0.1", worker.port("https")), timeout=5),
        server_hostname="b.example",
    ) as tls:
        assert http_status(tls, "b.example").startswith(b"HTTP/1.1 ")


def test_replace_and_remove_certificates_at_runtime(
    start: Callable[..., EdgeWorker], ca: trustme.CA
) -> None:
    worker = start()
    fp_a, cert_a = pair(ca, "a.example")
    fp_b, cert_b = pair(ca, "b.example")
    add(worker, cert_a)
    add(worker, cert_b)
    established = handshake(worker, ca, "a.example")
    try:
        fp_a2, cert_a2 = pair(ca, "a.example")
        assert fp_a2 != fp_a
        address = to_proto(worker.addresses["https"])
        replace = ReplaceCertificate(address=address, new_certificate=cert_a2, old_fingerprint=fp_a)
        assert worker.call(Request(replace_certificate=replace)).status == OK
        assert served(worker, ca, "a.example") == fp_a2
        assert served(worker, ca, "b.example") == fp_b
        assert served(worker, ca, None) == fp_a2  # the replacement keeps the default's place
        # the connection made before the replacement still works
        assert http_status(established, "a.example").startswith(b"HTTP/1.1 ")
    finally:
        established.close()
    remove = RemoveCertificate(address=to_proto(worker.addresses["https"]), fingerprint=fp_b)
    assert worker.call(Request(remove_certificate=remove)).status == OK
    # b.example now gets the listener's default
    assert served(worker, ca, "b.example") == fp_a2


def test_unusable_certificate_is_refused(start: Callable[..., EdgeWorker], ca: trustme.CA) -> None:
    worker = start()
    _, cert_a = pair(ca, "a.example")
    _, cert_b = pair(ca, "b.example")
    mismatched = CertificateAndKey(certificate=cert_a.certificate, key=cert_b.key)
    address = to_proto(worker.addresses["https"])
    response = worker.call(
        Request(add_certificate=AddCertificate(address=address, certificate=mismatched))
    )
    assert response.status == FAILURE
    assert "refused" in response.message


def test_tls_versions_restrict_the_handshake(
    start: Callable[..., EdgeWorker], ca: trustme.CA
) -> None:
    worker = start('tls_versions = ["TLS_V13"]')
    _, cert = pair(ca, "a.example")
    add(worker, cert)
    with handshake(worker, ca, "a.example") as tls:
        assert tls.version() == "TLSv1.3"
    old = client_context(ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(worker, ca, "a.example", old).close()


def test_tls12_only_listener(start: Callable[..., EdgeWorker], ca: trustme.CA) -> None:
    worker = start(
        'tls_versions = ["TLS_V12"]\ncipher_list = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]'
    )
    _, cert = pair(ca, "a.example")
    add(worker, cert)
    with handshake(worker, ca, "a.example") as tls:
        assert tls.version() == "TLSv1.2"
        cipher = tls.cipher()
        assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_alpn_offers_http11_only(start: Callable[..., EdgeWorker], ca: trustme.CA) -> None:
    worker = start()
    _, cert = pair(ca, "a.example")
    add(worker, cert)
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(worker, ca, "a.example", context) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client_gets_the_certificate_of_its_servername(
    start: Callable[..., EdgeWorker], ca: trustme.CA, tmp_path: Path
) -> None:
    worker = start()
    _, cert_a = pair(ca, "a.example")
    _, cert_b = pair(ca, "b.example")
    add(worker, cert_a)
    add(worker, cert_b)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{worker.port('https')}",
            "-servername",
            "b.example",
            "-CAfile",
            str(ca_file),
            "-alpn",
            "h2,http/1.1",
            "-verify_return_error",
            "-verify_hostname",
            "b.example",
        ],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    out = result.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out + result.stderr.decode(errors="replace")
    assert "ALPN protocol: http/1.1" in out


def test_hsts_header_values() -> None:
    assert hsts_value(None) is None
    assert hsts_value(HstsConfig(enabled=False, max_age=5)) is None
    assert hsts_value(HstsConfig(enabled=True)) == b"max-age=31536000"
    full = HstsConfig(enabled=True, max_age=600, include_subdomains=True, preload=True)
    assert hsts_value(full) == b"max-age=600; includeSubDomains; preload"
    assert hsts_value(HstsConfig(enabled=True, max_age=0)) == b"max-age=0"


class _Echo(http.server.BaseHTTPRequestHandler):
    """Backend answering with the request headers it received."""

    def do_GET(self) -> None:
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_https_requests_reach_the_backend_with_forwarded_proto(
    tmp_path: Path, ca: trustme.CA
) -> None:
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    backend_address = f"127.0.0.1:{backend.server_address[1]}"

    def render(addresses: dict[str, str]) -> str:
        return (
            config()(addresses)
            + f"""
        [clusters.app]
        protocol = "http"
        frontends = []
        backends = [{{ address = "{backend_address}" }}]
        """
        )

    worker = spawn(tmp_path, render)
    try:
        _, cert = pair(ca, "a.example")
        add(worker, cert)
        front = RequestHttpFrontend(
            cluster_id="app",
            address=to_proto(worker.addresses["https"]),
            hostname="a.example",
            path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        )
        assert worker.call(Request(add_https_frontend=front)).status == OK
        with client_context(ca).wrap_socket(
            socket.create_connection(("127.0.0.1", worker.port("https")), timeout=10),
            server_hostname="a.example",
        ) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer
        seen = {k.lower(): v for k, v in json.loads(body).items()}
        assert seen["x-forwarded-proto"] == "https"
    finally:
        worker.stop()
        backend.shutdown()
        backend.server_close()


@pytest.fixture
def echo() -> Iterator[str]:
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{backend.server_address[1]}"
    backend.shutdown()
    backend.server_close()


def app_worker(tmp_path: Path, backend: str, listener_extra: str) -> EdgeWorker:
    def render(addresses: dict[str, str]) -> str:
        return (
            config(listener_extra)(addresses)
            + f"""
        [clusters.app]
        protocol = "http"
        frontends = []
        backends = [{{ address = "{backend}" }}]
        """
        )

    return spawn(tmp_path, render)


def add_front(worker: EdgeWorker, hostname: str, hsts: HstsConfig | None = None) -> None:
    front = RequestHttpFrontend(
        cluster_id="app",
        address=to_proto(worker.addresses["https"]),
        hostname=hostname,
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        hsts=hsts,
    )
    assert worker.call(Request(add_https_frontend=front)).status == OK


def get(worker: EdgeWorker, ca: trustme.CA, sni: str | None, host: str) -> tuple[int, bytes]:
    """Status and head of the answer to `GET /` with this SNI and Host."""
    context = client_context(ca)
    context.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", worker.port("https")), timeout=10)
    with context.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0]
    return int(head.split(b" ", 2)[1]), head


def test_hsts_from_the_listener_and_frontend_overrides(
    tmp_path: Path, ca: trustme.CA, echo: str
) -> None:
    worker = app_worker(tmp_path, echo, "hsts = { enabled = true, max_age = 600 }")
    try:
        add(worker, pair(ca, "*.example")[1])
        add_front(worker, "inherit.example")
        add_front(worker, "off.example", HstsConfig(enabled=False))
        own = HstsConfig(enabled=True, max_age=42, include_subdomains=True, preload=True)
        add_front(worker, "own.example", own)
        status, head = get(worker, ca, "inherit.example", "inherit.example")
        assert status == 200
        assert b"\r\nStrict-Transport-Security: max-age=600\r\n" in head
        status, head = get(worker, ca, "off.example", "off.example")
        assert status == 200
        assert b"strict-transport-security" not in head.lower()
        status, head = get(worker, ca, "own.example", "own.example")
        assert b"\r\nStrict-Transport-Security: max-age=42; includeSubDomains; preload\r\n" in head
    finally:
        worker.stop()


def test_no_hsts_when_neither_listener_nor_frontend_asks(
    tmp_path: Path, ca: trustme.CA, echo: str
) -> None:
    worker = app_worker(tmp_path, echo, "")
    try:
        add(worker, pair(ca, "a.example")[1])
        add_front(worker, "a.example")
        status, head = get(worker, ca, "a.example", "a.example")
        assert status == 200
        assert b"strict-transport-security" not in head.lower()
    finally:
        worker.stop()


def test_host_not_covered_by_the_served_certificate_gets_421(
    tmp_path: Path, ca: trustme.CA, echo: str
) -> None:
    worker = app_worker(tmp_path, echo, "")
    try:
        add(worker, pair(ca, "a.example", "*.w.example")[1])
        add(worker, pair(ca, "b.example")[1])
        for host in ("a.example", "b.example", "x.w.example"):
            add_front(worker, host)
        assert get(worker, ca, "a.example", "a.example")[0] == 200
        assert get(worker, ca, "a.example", "A.Example:443")[0] == 200
        assert get(worker, ca, "a.example", "x.w.example")[0] == 200  # same certificate
        status, head = get(worker, ca, "a.example", "b.example")  # another tenant's host
        assert status == 421, head
        assert get(worker, ca, "b.example", "b.example")[0] == 200
        assert get(worker, ca, "x.w.example", "w.example")[0] == 421  # `*.` needs a label
        assert get(worker, ca, None, "b.example")[0] == 200  # no SNI: nothing to bind to
    finally:
        worker.stop()


def test_strict_sni_binding_off_lets_any_host_through(
    tmp_path: Path, ca: trustme.CA, echo: str
) -> None:
    worker = app_worker(tmp_path, echo, "strict_sni_binding = false")
    try:
        add(worker, pair(ca, "a.example")[1])
        add_front(worker, "b.example")
        assert get(worker, ca, "a.example", "b.example")[0] == 200
    finally:
        worker.stop()
