"""Access logs end to end: JSON records from real workers, and reopening them on SIGHUP.

A real `sozu start` with a cluster whose backend is the demo backend; requests go through the
proxy with http.client; the access log file is read as an operator would read it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Backends, Sozu, wait_for
from tests.e2e.test_traffic import get

MakeSozu = Callable[..., Sozu]

CLUSTER = """
[clusters.app]
protocol = "http"
frontends = [{{ address = "127.0.0.1:{port}", hostname = "app.test" }}]
backends = [{{ address = "127.0.0.1:{backend}", backend_id = "app-b0" }}]
"""


@pytest.fixture
def backend() -> Iterator[Backends]:
    group = Backends(1)
    yield group
    group.close()


def start(make_sozu: MakeSozu, backend: Backends, target: Path, workers: int, fmt: str) -> Sozu:
    sozu = make_sozu(
        workers=workers,
        extra=f'access_logs_target = "{target}"\naccess_logs_format = "{fmt}"',
        start=False,
    )
    sozu.config_path.write_text(
        sozu.config_path.read_text() + CLUSTER.format(port=sozu.http_port, backend=backend.ports[0])
    )
    sozu.start(wait_workers=workers)
    return sozu


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_access_log_has_one_object_per_request_even_after_a_worker_crash(
    make_sozu: MakeSozu, backend: Backends, tmp_path: Path
) -> None:
    target = tmp_path / "access.json"
    sozu = start(make_sozu, backend, target, workers=1, fmt="json")
    assert get(sozu.http_port, "app.test", "/first?x=1")[0] == 200
    first = wait_for(lambda: records(target), what=f"a JSON record; log:\n{sozu.log()}")
    assert isinstance(first, list) and len(first) == 1
    record = first[0]
    assert record["protocol"] == "HTTP"
    assert (record["method"], record["host"], record["path"]) == ("GET", "app.test", "/first?x=1")
    assert record["status"] == 200
    assert (record["cluster_id"], record["backend_id"]) == ("app", "app-b0")
    assert record["backend_address"] == f"127.0.0.1:{backend.ports[0]}"
    assert record["client_address"].startswith("127.0.0.1:")
    assert record["bytes_out"] > 0 and record["request_time_us"] >= 0
    (crashed,) = sozu.worker_pids()
    assert record["pid"] == crashed

    os.kill(crashed, signal.SIGKILL)  # the replacement must log JSON too
    wait_for(lambda: sozu.worker_pids() not in ([], [crashed]) and sozu.running_workers() == 1,
             what="a replacement worker")  # fmt: skip
    assert get(sozu.http_port, "app.test", "/second")[0] == 200
    both = wait_for(lambda: len(records(target)) == 2 and records(target), what="a 2nd record")
    assert isinstance(both, list)
    assert both[1]["path"] == "/second" and both[1]["pid"] != crashed


def test_sighup_to_the_main_process_makes_every_worker_reopen_its_access_log(
    make_sozu: MakeSozu, backend: Backends, tmp_path: Path
) -> None:
    target = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    sozu = start(make_sozu, backend, target, workers=2, fmt="json")
    assert get(sozu.http_port, "app.test", "/before")[0] == 200
    wait_for(lambda: records(target), what="the first record")
    target.rename(rotated)  # logrotate's move

    assert sozu.process is not None
    sozu.process.send_signal(signal.SIGHUP)
    wait_for(lambda: sozu.log().count("logs_reopened") >= 3,  # the main and both workers
             what=f"every worker reopening; log:\n{sozu.log()}")  # fmt: skip
    for index in range(4):  # both workers serve some of them
        assert get(sozu.http_port, "app.test", f"/after/{index}")[0] == 200
    wait_for(lambda: len(records(target)) == 4, what="4 records in the new file")
    assert [r["path"] for r in records(rotated)] == ["/before"]
    assert sorted(r["path"] for r in records(target)) == [f"/after/{i}" for i in range(4)]
    assert sozu.process.poll() is None and len(sozu.worker_pids()) == 2  # nobody died of it
