"""Always up (issue 6): traffic under a bounded load while the proxy is changed or repaired.

Each test runs `tests.e2e.load.Load` (new connections and keep-alive ones, 127.0.0.1 only) and
prints its request and failure counts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from sozu.command.certificate import self_signed
from sozu.worker.server import SOFT_STOP_GRACE
from tests.e2e.conftest import Backends, Sozu, free_port, wait_for
from tests.e2e.load import Load
from tests.e2e.slow_backend import SlowBackend, request_in_background, serve_slow
from tests.e2e.test_traffic import ok

MakeSozu = Callable[..., Sozu]
HOST = "up.example"


def serve_cluster(sozu: Sozu, ports: list[int], https_port: int | None = None) -> None:
    ok(sozu, "cluster", "add", "--id", "up", "--load-balancing-policy", "round_robin")
    for index, port in enumerate(ports):
        ok(sozu, "backend", "add", "--id", "up", "--backend-id", f"up-{index}",
           "--address", f"127.0.0.1:{port}")  # fmt: skip
    ok(sozu, "frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
       "--hostname", HOST, "id", "up")  # fmt: skip


def write_certificate(folder: Path, name: str) -> tuple[Path, Path, Path]:
    certificate, key = self_signed(HOST)
    paths = (folder / f"{name}.pem", folder / f"{name}-chain.pem", folder / f"{name}-key.pem")
    paths[0].write_text(certificate)
    paths[1].write_text("")
    paths[2].write_text(key)
    return paths


def served_fingerprint(port: int) -> str:
    """SHA-256 of the certificate a new TLS connection gets for HOST."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_twenty_backend_add_remove_cycles_fail_no_request(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2)
    group = backends(3)
    serve_cluster(sozu, group.ports[:2])
    extra = f"127.0.0.1:{group.ports[2]}"
    with Load(sozu.http_port, HOST) as load:
        load.wait_requests(50)
        for _ in range(20):
            ok(sozu, "backend", "add", "--id", "up", "--backend-id", "up-extra", "--address", extra)
            load.wait_requests(20)
            ok(sozu, "backend", "remove", "--id", "up", "--backend-id", "up-extra",
               "--address", extra)  # fmt: skip
            load.wait_requests(20)
    report = load.report
    print("backend cycles:", report.summary())
    assert report.requests >= 850
    assert report.failures == 0, report.summary()
    assert report.served_by["b2"] > 0  # the cycling backend did carry traffic


def test_certificate_replacement_fails_no_request(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2)
    group = backends(2)
    serve_cluster(sozu, group.ports)
    address = f"127.0.0.1:{free_port()}"
    ok(sozu, "listener", "https", "add", "-a", address)
    ok(sozu, "listener", "https", "activate", "-a", address)
    cert, chain, key = write_certificate(sozu.workdir, "first")
    ok(sozu, "certificate", "add", "-a", address, "--certificate", str(cert),
       "--certificate-chain", str(chain), "--key", str(key))  # fmt: skip
    ok(sozu, "frontend", "https", "add", "-a", address, "--hostname", HOST, "id", "up")
    port = int(address.rsplit(":", 1)[1])
    with Load(port, HOST, tls=True) as load:
        load.wait_requests(50)
        old = cert
        for round_ in range(3):
            before = served_fingerprint(port)
            new, new_chain, new_key = write_certificate(sozu.workdir, f"next{round_}")
            ok(sozu, "certificate", "replace", "-a", address, "--new-certificate", str(new),
               "--new-certificate-chain", str(new_chain), "--new-key", str(new_key),
               "--old-certificate", str(old))  # fmt: skip
            assert served_fingerprint(port) != before  # new connections get the new one
            old = new
            load.wait_requests(50)
    report = load.report
    print("certificate replacement:", report.summary())
    assert report.requests >= 200
    assert report.failures == 0, report.summary()


def test_killed_worker_fails_only_its_exchanges_in_flight(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2)
    group = backends(2)
    serve_cluster(sozu, group.ports)
    clients = 6
    with Load(sozu.http_port, HOST, fresh=3, kept=3) as load:
        load.wait_requests(100)
        victim = sozu.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in sozu.worker_pids(), 10, "the killed worker reaped")
        killed_at = time.monotonic()
        failed_at_kill = load.report.failures
        wait_for(lambda: sozu.running_workers() == 2, 10, "a replacement worker")
        load.wait_requests(300)
    report = load.report
    print(f"worker kill: {report.summary()} (failures at the kill: {failed_at_kill})")
    # at most one exchange in flight per client thread could be on the killed worker
    assert failed_at_kill <= clients, report.summary()
    late = [at for at in report.failed_at if at > killed_at]
    assert not late, f"{len(late)} failures after the kill was over: {report.summary()}"


def test_killed_main_leaves_workers_that_finish_their_exchanges_and_exit(
    make_sozu: MakeSozu, slow_backend: SlowBackend
) -> None:
    """Chosen behaviour (doc/upgrade.md): a worker whose main process is gone serves what it
    has in flight, accepts nothing new, and exits; no orphan keeps a stale configuration."""
    sozu = make_sozu(workers=2)
    serve_slow(sozu, slow_backend)
    workers = sozu.worker_pids()
    thread, outcome = request_in_background(sozu.http_port)
    assert slow_backend.received.wait(10)
    assert sozu.process is not None
    sozu.process.kill()
    sozu.process.wait(10)
    thread.join(15)
    assert outcome == [(200, b"slow but sure\n")]  # the exchange in flight completed
    wait_for(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                for p in workers
            )
        ),
        SOFT_STOP_GRACE + 5,
        "the orphaned workers to exit",
    )


def test_removing_a_backend_lets_its_requests_in_flight_finish(
    make_sozu: MakeSozu, slow_backend: SlowBackend
) -> None:
    sozu = make_sozu(workers=1)
    serve_slow(sozu, slow_backend)
    thread, outcome = request_in_background(sozu.http_port)
    assert slow_backend.received.wait(10)
    ok(sozu, "backend", "remove", "--id", "slow", "--backend-id", "slow-0",
       "--address", f"127.0.0.1:{slow_backend.port}")  # fmt: skip
    thread.join(15)
    assert outcome == [(200, b"slow but sure\n")]  # it was answered, not cut
    thread, outcome = request_in_background(sozu.http_port)
    thread.join(15)
    assert len(outcome) == 1 and outcome[0][0] == 503  # type: ignore[index]


def test_other_clusters_and_frontends_coming_and_going_fail_no_request(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2)
    group = backends(3)
    serve_cluster(sozu, group.ports[:2])
    other = f"127.0.0.1:{group.ports[2]}"
    front = ["--address", f"127.0.0.1:{sozu.http_port}", "--hostname", "other.example"]
    with Load(sozu.http_port, HOST) as load:
        load.wait_requests(50)
        for _ in range(10):
            ok(sozu, "cluster", "add", "--id", "other", "--load-balancing-policy", "random")
            ok(sozu, "backend", "add", "--id", "other", "--backend-id", "o-0", "--address", other)
            ok(sozu, "frontend", "http", "add", *front, "id", "other")
            load.wait_requests(20)
            ok(sozu, "frontend", "http", "remove", *front, "id", "other")
            ok(sozu, "cluster", "remove", "--id", "other")
            load.wait_requests(20)
    report = load.report
    print("other clusters and frontends:", report.summary())
    assert report.failures == 0, report.summary()
    assert "b2" not in report.served_by  # the load never went to the other cluster
