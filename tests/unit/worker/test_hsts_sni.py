"""HSTS header lines and the strict SNI binding's host check (sans-io)."""

from __future__ import annotations

from sozu.command.proto import HstsConfig
from sozu.worker.protocol.headers import response_head, with_hsts
from sozu.worker.protocol.http1 import cert_covers
from sozu.worker.router import hsts_line

LINE = b"Strict-Transport-Security: max-age=5\r\n"


def test_hsts_line() -> None:
    assert hsts_line(None) is None
    assert hsts_line(HstsConfig(enabled=False, max_age=5)) == (b"", False)
    assert hsts_line(HstsConfig(enabled=True)) == (
        b"Strict-Transport-Security: max-age=31536000\r\n",
        False,
    )
    full = HstsConfig(
        enabled=True, max_age=600, include_subdomains=True, preload=True, force_replace_backend=True
    )
    assert hsts_line(full) == (
        b"Strict-Transport-Security: max-age=600; includeSubDomains; preload\r\n",
        True,
    )


def test_with_hsts_adds_keeps_or_replaces_the_backend_header() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
    assert with_hsts(head, (LINE, False)) == head + LINE
    own = b"HTTP/1.1 200 OK\r\nstrict-transport-security: max-age=1\r\nContent-Length: 0\r\n"
    assert with_hsts(own, (LINE, False)) == own
    assert with_hsts(own, (LINE, True)) == head + LINE


def test_response_head_hsts() -> None:
    def head(headers: list[tuple[bytes, bytes]], hsts: tuple[bytes, bool] | None) -> bytes:
        return response_head(
            200,
            b"OK",
            headers,
            request_id=b"id",
            id_header=b"Sozu-Id",
            chunked=False,
            set_cookie=None,
            connection=None,
            hsts=hsts,
        )

    assert LINE in head([], (LINE, False))
    assert b"Strict" not in head([], None)
    backend = [(b"Strict-Transport-Security", b"max-age=1")]
    assert head(backend, (LINE, False)).count(b"Strict-Transport-Security") == 1
    assert b"max-age=1" in head(backend, (LINE, False))
    replaced = head(backend, (LINE, True))
    assert LINE in replaced and b"max-age=1" not in replaced


def test_cert_covers() -> None:
    names = ("a.example", "*.w.example")
    assert cert_covers(names, "a.example")
    assert cert_covers(names, "A.EXAMPLE.")
    assert cert_covers(names, "x.w.example")
    assert not cert_covers(names, "w.example")
    assert not cert_covers(names, "y.x.w.example")
    assert not cert_covers(names, "b.example")
    assert not cert_covers((), "a.example")
