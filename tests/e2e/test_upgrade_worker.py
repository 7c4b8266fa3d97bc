"""Worker upgrades (issue 6): `sozu upgrade --worker N` under load drops no request."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
from collections.abc import Callable

import psutil

from tests.e2e.conftest import Backends, Sozu, wait_for
from tests.e2e.load import Load
from tests.e2e.test_always_up import HOST, serve_cluster

MakeSozu = Callable[..., Sozu]


def workers(sozu: Sozu) -> dict[int, tuple[int, str]]:
    """Worker id -> (pid, run state) as `sozu status --json` shows them."""
    result = sozu.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)["workers"]["vec"]
    return {entry["id"]: (entry["pid"], entry["run_state"]) for entry in entries}


def test_upgrading_each_worker_under_load_fails_no_request(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2)
    group = backends(2)
    serve_cluster(sozu, group.ports)
    before = workers(sozu)
    with Load(sozu.http_port, HOST, fresh=2, kept=2) as load:
        load.wait_requests(100)
        for worker_id in sorted(before):
            result = sozu.cli("upgrade", "--worker", str(worker_id))
            assert result.returncode == 0, result.stderr + result.stdout
            assert "Upgrade successful" in result.stdout
            old_pid = before[worker_id][0]
            assert not psutil.pid_exists(old_pid) or (
                psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
            ), f"worker {worker_id} (pid {old_pid}) still runs after its upgrade"
            load.wait_requests(100)
    report = load.report
    print("worker upgrades:", report.summary())
    after = workers(sozu)
    running = {wid for wid, (_pid, state) in after.items() if state == "RUNNING"}
    assert len(running) == 2 and not running & set(before), after
    assert report.failures == 0, report.summary()
    assert report.retried == 0, report.summary()  # no keep-alive connection closed under a request


def test_upgrading_a_missing_worker_is_refused(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1)
    result = sozu.cli("upgrade", "--worker", "7")
    assert result.returncode == 1
    assert "Worker 7 does not exist, or is stopping / stopped" in result.stderr
    assert sozu.running_workers() == 1


def test_a_draining_worker_closes_keep_alive_connections_politely(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    """While worker 0 soft-stops: the next request on a keep-alive connection is answered with
    `Connection: close`, a connection that stays idle is closed after the grace, and the
    upgrade answers once the old worker exited."""
    sozu = make_sozu(workers=1)
    group = backends(1)
    serve_cluster(sozu, group.ports)
    kept = http.client.HTTPConnection("127.0.0.1", sozu.http_port, timeout=10)
    idle = socket.create_connection(("127.0.0.1", sozu.http_port), timeout=10)
    try:
        kept.request("GET", "/", headers={"Host": HOST})
        first = kept.getresponse()
        first.read()
        assert first.status == 200 and not first.will_close
        idle.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        old_pid = workers(sozu)[0][0]
        upgrade: list[subprocess.CompletedProcess[str]] = []
        command = ("upgrade", "--worker", "0")
        thread = threading.Thread(target=lambda: upgrade.append(sozu.cli(*command)))
        thread.start()
        wait_for(lambda: workers(sozu).get(0, (0, ""))[1] == "STOPPING", 20, "worker 0 draining")
        kept.request("GET", "/", headers={"Host": HOST})
        last = kept.getresponse()
        last.read()
        assert last.status == 200 and last.will_close  # answered, with Connection: close
        assert last.getheader("Connection") == "close"
        assert idle.recv(65536) == b""  # the idle one is closed after the grace
        thread.join(30)
        assert upgrade and upgrade[0].returncode == 0, upgrade
        assert not psutil.pid_exists(old_pid) or (
            psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
        )
    finally:
        kept.close()
        idle.close()
