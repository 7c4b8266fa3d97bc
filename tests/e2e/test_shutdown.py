"""Shutdown (issue 6): `sozu shutdown` drains, `--hard` cuts, the socket file goes away."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.e2e.conftest import Sozu, wait_for
from tests.e2e.slow_backend import SLOW_SECONDS, SlowBackend, request_in_background, serve_slow

MakeSozu = Callable[..., Sozu]


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_soft_shutdown_finishes_requests_in_flight(
    make_sozu: MakeSozu, slow_backend: SlowBackend
) -> None:
    sozu = make_sozu(workers=2)
    serve_slow(sozu, slow_backend)
    thread, outcome = request_in_background(sozu.http_port)
    assert slow_backend.received.wait(10)
    result = sozu.cli("shutdown")
    assert result.returncode == 0, result.stderr
    thread.join(15)
    assert outcome == [(200, b"slow but sure\n")]  # the exchange in flight completed
    assert sozu.process is not None and sozu.process.wait(15) == 0
    assert not sozu.socket_path.exists()  # the command socket file is removed
    assert refused(sozu.http_port)


def test_hard_shutdown_stops_at_once(make_sozu: MakeSozu, slow_backend: SlowBackend) -> None:
    sozu = make_sozu(workers=1)
    serve_slow(sozu, slow_backend)
    thread, outcome = request_in_background(sozu.http_port)
    assert slow_backend.received.wait(10)
    started = time.monotonic()
    result = sozu.cli("shutdown", "--hard")
    assert result.returncode == 0, result.stderr
    assert sozu.process is not None and sozu.process.wait(15) == 0
    assert time.monotonic() - started < SLOW_SECONDS  # it did not wait for the exchange
    thread.join(15)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome  # cut
    wait_for(lambda: not sozu.socket_path.exists(), 5, "the socket file removed")
    assert refused(sozu.http_port)
