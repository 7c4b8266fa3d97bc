"""Issue 5 end to end: `sozu start`, configured live with the CLI, real backends, real clients."""

from __future__ import annotations

import collections
import http.client
import socket
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Backends, Sozu, free_port

MakeSozu = Callable[..., Sozu]
TIMEOUTS = "front_timeout = 1\nrequest_timeout = 1\nback_timeout = 2\nconnect_timeout = 1"


def ok(sozu: Sozu, *words: str) -> None:
    result = sozu.cli(*words)
    assert result.returncode == 0, result.stderr


def cluster_with_backends(sozu: Sozu, group: Backends, policy: str, host: str) -> None:
    ok(sozu, "cluster", "add", "--id", host, "--load-balancing-policy", policy)
    for index, port in enumerate(group.ports):
        ok(sozu, "backend", "add", "--id", host, "--backend-id", f"{host}-{index}",
           "--address", f"127.0.0.1:{port}")  # fmt: skip
    ok(sozu, "frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
       "--hostname", host, "id", host)  # fmt: skip


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host, "Connection": "close"})
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()


def served_by(body: str) -> str:
    return body.split("\n", 1)[0].rsplit(" ", 1)[-1]


@pytest.mark.parametrize("policy", ["round_robin", "random", "least_loaded", "power_of_two"])
def test_each_policy_serves_through_every_backend(
    make_sozu: MakeSozu, backends: Callable[[int], Backends], policy: str
) -> None:
    sozu = make_sozu(workers=1)
    group = backends(3)
    cluster_with_backends(sozu, group, policy, "lb.example")
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(60):
        status, body = get(sozu.http_port, "lb.example")
        assert status == 200, body
        counts[served_by(body)] += 1
    print(policy, dict(counts))
    if policy == "round_robin":
        assert counts == {"b0": 20, "b1": 20, "b2": 20}
    elif policy == "least_loaded":
        # One request at a time: every backend is idle, so the tie goes to the first, as Sōzu.
        assert sum(counts.values()) == 60 and len(counts) >= 1
    else:
        assert set(counts) == {"b0", "b1", "b2"}
        assert min(counts.values()) >= 5


def test_removing_a_backend_takes_it_out_of_rotation(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2)
    group = backends(2)
    cluster_with_backends(sozu, group, "round_robin", "rm.example")
    ok(sozu, "backend", "remove", "--id", "rm.example", "--backend-id", "rm.example-0",
       "--address", f"127.0.0.1:{group.ports[0]}")  # fmt: skip
    seen = {served_by(get(sozu.http_port, "rm.example")[1]) for _ in range(10)}
    assert seen == {"b1"}


def test_deny_frontend_answers_401_and_unknown_host_404(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1)
    ok(sozu, "frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
       "--hostname", "denied.example", "deny")  # fmt: skip
    assert get(sozu.http_port, "denied.example")[0] == 401
    assert get(sozu.http_port, "nobody.example")[0] == 404


def test_request_timeout_answers_408_and_front_timeout_closes_idle_clients(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=1, extra=TIMEOUTS)
    cluster_with_backends(sozu, backends(1), "round_robin", "kept.example")
    with socket.create_connection(("127.0.0.1", sozu.http_port), timeout=10) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x.example\r\n")  # the head never ends
        started = time.monotonic()
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5
    # After a first exchange, an idle keep-alive connection is closed silently (Sōzu: 408 only
    # while a request is awaited on a connection that never completed one).
    connection = http.client.HTTPConnection("127.0.0.1", sozu.http_port, timeout=10)
    connection.request("GET", "/", headers={"Host": "kept.example"})
    assert connection.getresponse().read().startswith(b"Hello")
    assert connection.sock is not None
    started = time.monotonic()
    assert connection.sock.recv(4096) == b""
    assert time.monotonic() - started < 5
    connection.close()


def test_dead_backend_gives_503_and_the_proxy_keeps_serving(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=1, extra=TIMEOUTS)
    ok(sozu, "cluster", "add", "--id", "dead", "--load-balancing-policy", "round_robin")
    ok(sozu, "backend", "add", "--id", "dead", "--backend-id", "dead-0",
       "--address", f"127.0.0.1:{free_port()}")  # fmt: skip
    ok(sozu, "frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
       "--hostname", "dead.example", "id", "dead")  # fmt: skip
    assert get(sozu.http_port, "dead.example")[0] == 503
    group = backends(1)
    cluster_with_backends(sozu, group, "random", "alive.example")
    assert get(sozu.http_port, "alive.example")[0] == 200
