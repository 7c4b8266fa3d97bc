"""A bounded HTTP load for "always up" tests: clients on 127.0.0.1 that count every failure.

`Load` runs a few client threads against one proxy port until stopped, or until its request or
time bound is reached: `fresh` threads open a new connection per request (`Connection: close`),
`kept` threads send request after request on one keep-alive connection. Every answer must be a
200 whose body names one of the expected backends; anything else is a failure, recorded with
its reason and the time it happened.

A keep-alive client follows HTTP's rules for reused connections (RFC 9112 §9.3.1, what browsers
and curl do): when the proxy closes an idle keep-alive connection before a request sent on it got
a single byte of answer, the request is sent again on a new connection. Those are counted apart
(`retried`), never hidden: a drain that closes idle connections is allowed to cause them, a
dropped exchange is not (that one would be a failure: bytes of answer, then nothing).
"""

from __future__ import annotations

import collections
import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10.0
"""Seconds a client waits for an answer before it counts a failure."""


@dataclass
class LoadReport:
    """What the clients saw."""

    requests: int = 0
    failures: int = 0
    retried: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_at: list[float] = field(default_factory=list)  # time.monotonic() of each failure
    served_by: collections.Counter[str] = field(default_factory=collections.Counter)

    def summary(self) -> str:
        return (
            f"requests={self.requests} failures={self.failures} retried={self.retried}"
            f" reasons={dict(self.reasons)} served_by={dict(self.served_by)}"
        )


class _Stale(Exception):
    """A reused keep-alive connection was closed before any byte of the answer."""


class Load:
    """Client threads sending GETs through the proxy (module docstring)."""

    def __init__(
        self,
        port: int,
        host: str,
        *,
        fresh: int = 2,
        kept: int = 2,
        max_requests: int = 50_000,
        interval: float = 0.01,
        max_seconds: float = 120.0,
        check_body: Callable[[str], str | None] | None = None,
        tls: bool = False,
    ) -> None:
        self.port = port
        self.tls: ssl.SSLContext | None = None
        if tls:  # the tests' certificates are self-signed
            self.tls = ssl.create_default_context()
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE
        self.host = host
        self.max_requests = max_requests
        self.interval = interval
        self.max_seconds = max_seconds
        self.check_body = check_body
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(False,), daemon=True) for _ in range(fresh)
        ] + [threading.Thread(target=self._run, args=(True,), daemon=True) for _ in range(kept)]
        self._deadline = 0.0

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)
        return self.report

    def requests(self) -> int:
        with self._lock:
            return self.report.requests

    def wait_requests(self, count: int, timeout: float = 30.0) -> None:
        """Block until `count` more requests were answered (or fail after `timeout` s)."""
        target = self.requests() + count
        deadline = time.monotonic() + timeout
        while self.requests() < target:
            if time.monotonic() > deadline or self._stop.is_set():
                raise AssertionError(
                    f"load made no progress to {target} requests: {self.report.summary()}"
                )
            time.sleep(0.01)

    # --- clients -------------------------------------------------------------------------

    def _running(self) -> bool:
        if self._stop.is_set() or time.monotonic() > self._deadline:
            return False
        with self._lock:
            return self.report.requests < self.max_requests

    def _run(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while self._running():
            if self.interval:
                self._stop.wait(self.interval)  # paced: the proxy under test shares 2 CPUs
            reused = connection is not None
            if connection is None:
                connection = self._connection()
            try:
                body, server_closes = self._exchange(connection, keep_alive, reused)
            except _Stale:
                connection.close()
                connection = None
                with self._lock:
                    self.report.retried += 1
                continue
            except (OSError, http.client.HTTPException) as error:
                self._record(None, f"{type(error).__name__}: {error}")
                connection.close()
                connection = None
                continue
            self._record(body, None)
            if not keep_alive or server_closes:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT, context=self.tls
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)

    def _exchange(
        self, connection: http.client.HTTPConnection, keep_alive: bool, reused: bool
    ) -> tuple[str, bool]:
        headers = {"Host": self.host}
        if not keep_alive:
            headers["Connection"] = "close"
        try:
            connection.request("GET", "/", headers=headers)
            answer = connection.getresponse()
        except (
            http.client.RemoteDisconnected,
            ConnectionResetError,
            BrokenPipeError,
            ssl.SSLEOFError,
        ):
            if reused:  # closed while idle, before any byte of answer: send it again
                raise _Stale() from None
            raise
        body = answer.read().decode(errors="replace")
        if answer.status != 200:
            raise http.client.HTTPException(f"status {answer.status}: {body[:80]!r}")
        return body, answer.will_close

    def _record(self, body: str | None, failure: str | None) -> None:
        if body is not None and self.check_body is not None:
            failure = self.check_body(body)
        with self._lock:
            report = self.report
            report.requests += 1
            if failure is not None:
                report.failures += 1
                report.reasons[failure[:120]] += 1
                report.failed_at.append(time.monotonic())
            elif body is not None:
                report.served_by[body.split("\n", 1)[0].rsplit(" ", 1)[-1]] += 1
