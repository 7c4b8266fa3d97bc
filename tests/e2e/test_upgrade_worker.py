"""Worker upgrades (issue 6): `sozu upgrade --worker N` under load drops no request."""

from __future__ import annotations

import json
from collections.abc import Callable

import psutil

from tests.e2e.conftest import Backends, Sozu
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


def test_upgrading_a_missing_worker_is_refused(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1)
    result = sozu.cli("upgrade", "--worker", "7")
    assert result.returncode == 1
    assert "Worker 7 does not exist, or is stopping / stopped" in result.stderr
    assert sozu.running_workers() == 1
