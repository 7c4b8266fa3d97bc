"""Main upgrade (issue 6): a new main process takes over the command socket and the workers.

Driven with a raw `UpgradeMain` request (the main part of `sozu upgrade`), under a bounded load
of new and keep-alive connections; sozu runs through a `bin/sozu` launcher in its work folder,
which a test replaces to simulate a broken new binary, or to inject a fault into one of the two
main processes (a launcher that monkeypatches sozu before running its command line).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial

import psutil

from sozu.command.proto import Request, Response, ResponseStatus, RunState, UpgradeMain
from tests.e2e.conftest import Backends, Sozu, wait_for
from tests.e2e.load import Load
from tests.e2e.test_always_up import HOST, serve_cluster

MakeSozu = Callable[..., Sozu]
EXTRA = 'pid_file_path = "sozu.pid"\naudit_logs_json_target = "audit.json"'


def upgrade_main(sozu: Sozu) -> Response:
    answer = sozu.send(Request(upgrade_main=UpgradeMain()), timeout=30)
    if answer.status == ResponseStatus.OK and "pid_file_path" in sozu.config_path.read_text():
        # The new main writes the pid file once told to go ahead, about when we get the answer.
        new_pid = int(answer.message.rsplit(" ", 1)[1])
        wait_for(lambda: sozu.main_pid() == new_pid, 10, "the new main's pid file")
    sozu.remember_pids()
    return answer


def faulty_launcher(process: str, fault: str) -> str:
    """A `bin/sozu` that runs `fault` (Python, at module level) first when it is started as the
    `process` main (`start`: the first main; `main`: the new main of a main upgrade)."""
    body = "\n".join("    " + line for line in fault.strip().splitlines())
    return (
        f"#!{sys.executable}\nimport sys\n\nif {process!r} in sys.argv:\n{body}\n\n"
        "from sozu.cli.main import main\n\nsys.exit(main())\n"
    )


ADOPTING_THE_SECOND_WORKER_FAILS = """
from sozu.supervisor.workers import WorkerPool

adopt = WorkerPool.adopt
adopted = []

def adopt_but_the_second(self, entry):
    adopted.append(entry.id)
    if len(adopted) == 2:
        raise RuntimeError("injected: adopting the second worker failed")
    return adopt(self, entry)

WorkerPool.adopt = adopt_but_the_second
"""

NEVER_CONFIRMS = """
import time
from sozu.supervisor.server import Supervisor

async def stuck(self, entries, confirm, parent_pid):
    time.sleep(60)

Supervisor.run_adopted = stuck
"""

WORKER_LAUNCH_HELD = """
import asyncio
import pathlib
from sozu.supervisor import worker_upgrade

launch = worker_upgrade._launch_replacement

async def held_launch(sup, worker_id):
    pathlib.Path("launching").touch()
    for _ in range(1000):
        if pathlib.Path("go").exists():
            break
        await asyncio.sleep(0.01)
    return await launch(sup, worker_id)

worker_upgrade._launch_replacement = held_launch
"""

WRAP_UP_FAILS = """
from sozu.supervisor import upgrade

notify = upgrade._notify

def notify_then_fail(state):
    notify(state)
    if state.startswith("MAINPID="):
        raise RuntimeError("injected: failure after the new main confirmed")

upgrade._notify = notify_then_fail
"""


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for an init to reap it counts: it serves nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def audit_lines(sozu: Sozu) -> list[dict[str, object]]:
    text = (sozu.workdir / "audit.json").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def running_worker_pids(sozu: Sozu) -> dict[int, int]:
    return {
        worker_id: pid
        for worker_id, (pid, state) in sozu.listed_workers().items()
        if state == RunState.RUNNING
    }


def test_main_upgrade_under_load_keeps_the_workers_and_fails_no_request(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=2, extra=EXTRA, start=False)
    sozu.start(wait_workers=2, launcher=True)
    serve_cluster(sozu, backends(2).ports)
    assert sozu.process is not None
    first_main = sozu.process.pid
    workers = running_worker_pids(sozu)
    assert len(workers) == 2
    with Load(sozu.http_port, HOST) as load:
        load.wait_requests(100)
        answer = upgrade_main(sozu)
        assert answer.status == ResponseStatus.OK, answer.message
        assert "New main process has pid" in answer.message
        assert sozu.process.wait(timeout=10) == 0  # the old main exits by itself, cleanly
        second_main = sozu.main_pid()
        assert second_main not in (None, first_main)
        assert answer.message.endswith(f"pid {second_main}")
        load.wait_requests(150)
        assert running_worker_pids(sozu) == workers  # the very same processes serve on
        status = sozu.cli("status")
        assert status.returncode == 0, status.stderr
        for pid in workers.values():
            assert str(pid) in status.stdout

        answer = upgrade_main(sozu)  # the new main can itself be upgraded
        assert answer.status == ResponseStatus.OK, answer.message
        assert second_main is not None
        wait_for(lambda: gone(second_main), 10, "the second main process to exit")
        third_main = sozu.main_pid()
        assert third_main not in (None, first_main, second_main)
        load.wait_requests(150)
    report = load.report
    print("main upgrade x2:", report.summary())
    assert report.failures == 0, report.summary()
    assert report.requests >= 400
    assert running_worker_pids(sozu) == workers
    assert sozu.cli("status").returncode == 0

    # The third main never started these workers: it still sees one die, and replaces it.
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: (
            len(running_worker_pids(sozu)) == 2 and victim not in running_worker_pids(sozu).values()
        ),
        15,
        "the killed adopted worker to be replaced",
    )

    lines = audit_lines(sozu)
    upgrades = [line for line in lines if line["verb"] == "main_upgraded"]
    assert [(u["result"], u["boot_generation"]) for u in upgrades] == [("ok", 1), ("ok", 2)]
    assert "boot_generation:1" in str(upgrades[0]["target"])
    assert str(sozu.launcher) in str(upgrades[0]["target"])
    assert lines[-1]["boot_generation"] == 2  # audited by the third main
    assert [line["verb"] for line in lines[-2:]] == ["worker_killed", "worker_relaunched"]


def test_a_failing_new_binary_leaves_the_old_main_serving(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    sozu = make_sozu(workers=1, extra=EXTRA, start=False)
    sozu.config_path.write_text(
        sozu.config_path.read_text().replace("worker_timeout = 5", "worker_timeout = 2")
    )
    sozu.start(wait_workers=1, launcher=True)
    serve_cluster(sozu, backends(1).ports)
    assert sozu.process is not None
    main = psutil.Process(sozu.process.pid)
    workers = running_worker_pids(sozu)
    good_launcher = sozu.launcher.read_text()
    with Load(sozu.http_port, HOST, fresh=1, kept=1) as load:
        load.wait_requests(30)

        sozu.replace_launcher("#!/bin/sh\nexit 3\n")
        answer = upgrade_main(sozu)
        assert answer.status == ResponseStatus.FAILURE
        assert "new main process exited with code 3 before confirming" in answer.message
        assert f"current main process (pid {main.pid}) keeps serving" in answer.message
        load.wait_requests(30)

        sozu.replace_launcher("#!/bin/sh\nexec sleep 60\n")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(upgrade_main, sozu)
            # Meanwhile changes and worker queries wait; the main state still answers lists.
            refused = wait_for(lambda: "a main upgrade is in progress" in sozu.cli("status").stderr,
                               5, "status refused during the upgrade")  # fmt: skip
            assert refused
            worker_upgrade = sozu.send(Request(upgrade_worker=next(iter(workers))))
            assert worker_upgrade.message == "a main upgrade is in progress"
            if not pending.done():
                assert sozu.listed_workers()
            answer = pending.result(timeout=30)
        assert answer.status == ResponseStatus.FAILURE
        assert "did not confirm within 2 s (killed)" in answer.message
        assert sozu.process.poll() is None
        assert {child.pid for child in main.children()} == set(workers.values())  # no stray
        assert sozu.main_pid() == main.pid
        assert sozu.cli("status").returncode == 0
        load.wait_requests(30)

        sozu.replace_launcher(good_launcher)
        answer = upgrade_main(sozu)
        assert answer.status == ResponseStatus.OK, answer.message
        assert sozu.process.wait(timeout=10) == 0
        load.wait_requests(30)
    report = load.report
    print("failing new binaries:", report.summary())
    assert report.failures == 0, report.summary()
    assert running_worker_pids(sozu) == workers
    verdicts = [
        (line["result"], line["boot_generation"])
        for line in audit_lines(sozu)
        if line["verb"] == "main_upgraded"
    ]
    assert verdicts == [("err", 0), ("err", 0), ("ok", 1)]


def test_a_stop_signal_during_an_upgrade_applies_once_it_failed(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1, extra=EXTRA, start=False)
    sozu.config_path.write_text(
        sozu.config_path.read_text().replace("worker_timeout = 5", "worker_timeout = 1")
    )
    sozu.start(wait_workers=1, launcher=True)
    assert sozu.process is not None
    sozu.replace_launcher("#!/bin/sh\nexec sleep 60\n")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(upgrade_main, sozu)
        wait_for(lambda: "a main upgrade is in progress" in sozu.cli("status").stderr, 5,
                 "the upgrade to be under way")  # fmt: skip
        sozu.process.send_signal(signal.SIGTERM)  # deferred: channels are being handed over
        answer = pending.result(timeout=30)
    assert answer.status == ResponseStatus.FAILURE
    assert "did not confirm within 1 s" in answer.message
    assert sozu.process.wait(timeout=20) == 0  # then the soft stop ran
    assert not sozu.socket_path.exists()
    assert "stop_signal_deferred" in sozu.log()


def test_systemd_follows_the_new_main_process(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1, extra=EXTRA, start=False)
    notify_path = sozu.workdir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(notify_path))
        systemd.settimeout(10)
        sozu.start(wait_workers=1, launcher=True, env={"NOTIFY_SOCKET": str(notify_path)})
        assert systemd.recv(4096) == b"READY=1"
        answer = upgrade_main(sozu)
        assert answer.status == ResponseStatus.OK, answer.message
        new_main = sozu.main_pid()
        said = [systemd.recv(4096).decode() for _ in range(3)]
    assert said[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert said[1] == f"MAINPID={new_main}"  # from the old main, before it exits
    assert said[2] == f"MAINPID={new_main}\nREADY=1"  # from the new one, once the old is gone


def test_sozu_upgrade_replaces_every_process_under_load_twice(
    make_sozu: MakeSozu, backends: Callable[[int], Backends]
) -> None:
    """`sozu upgrade` (the CLI verb): a new main, then each worker in turn; afterwards no old
    process is left, status answers from the new main, boot_generation went up; twice."""
    sozu = make_sozu(workers=2, extra=EXTRA, start=False)
    sozu.start(wait_workers=2, launcher=True)
    serve_cluster(sozu, backends(2).ports)
    assert sozu.process is not None
    with Load(sozu.http_port, HOST) as load:
        load.wait_requests(100)
        for generation in (1, 2):
            old_main = sozu.main_pid()
            old_workers = running_worker_pids(sozu)
            result = sozu.cli("upgrade", timeout=120)
            sozu.remember_pids()
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Upgrade successful" in result.stdout
            assert old_main is not None
            wait_for(partial(gone, old_main), 10, "the old main to exit")
            new_workers = running_worker_pids(sozu)
            assert len(new_workers) == 2 and not set(new_workers.values()) & set(
                old_workers.values()
            ), (old_workers, new_workers)
            for pid in old_workers.values():
                wait_for(partial(gone, pid), 10, f"old worker {pid} to exit")
            assert sozu.main_pid() not in (None, old_main)
            assert sozu.cli("status").returncode == 0
            assert audit_lines(sozu)[-1]["boot_generation"] == generation
            load.wait_requests(100)
    report = load.report
    print("sozu upgrade x2:", report.summary())
    assert report.failures == 0, report.summary()


def test_a_new_main_failing_before_it_took_over_leaves_everything_to_the_old_one(
    make_sozu: MakeSozu,
) -> None:
    sozu = make_sozu(workers=2, extra=EXTRA, start=False)
    sozu.start(wait_workers=2, launcher=True)
    assert sozu.process is not None
    main = sozu.process.pid
    workers = running_worker_pids(sozu)
    good_launcher = sozu.launcher.read_text()
    sozu.replace_launcher(faulty_launcher("main", ADOPTING_THE_SECOND_WORKER_FAILS))
    result = sozu.cli("upgrade", timeout=60)
    sozu.remember_pids()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "new main process exited with code 1 before confirming" in result.stderr
    assert f"current main process (pid {main}) keeps serving" in result.stderr
    assert "injected: adopting the second worker failed" in sozu.log()
    # It had adopted the first worker and held the socket file: it killed and removed nothing.
    assert sozu.socket_path.exists()
    assert not any(gone(pid) for pid in workers.values())
    assert running_worker_pids(sozu) == workers
    assert sozu.main_pid() == main  # the pid file is written only by a main that took over
    assert sozu.cli("status").returncode == 0

    sozu.replace_launcher(good_launcher)
    answer = upgrade_main(sozu)
    assert answer.status == ResponseStatus.OK, answer.message
    assert sozu.process.wait(timeout=10) == 0
    assert running_worker_pids(sozu) == workers


def test_a_new_main_killed_for_its_silence_never_owned_the_pid_file(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1, extra=EXTRA, start=False)
    sozu.config_path.write_text(
        sozu.config_path.read_text().replace("worker_timeout = 5", "worker_timeout = 1")
    )
    sozu.start(wait_workers=1, launcher=True)
    assert sozu.process is not None
    sozu.replace_launcher(faulty_launcher("main", NEVER_CONFIRMS))
    answer = upgrade_main(sozu)
    assert answer.status == ResponseStatus.FAILURE
    assert "did not confirm within 1 s (killed)" in answer.message
    assert sozu.main_pid() == sozu.process.pid
    sozu.process.send_signal(signal.SIGTERM)
    assert sozu.process.wait(timeout=20) == 0
    assert not (sozu.workdir / "sozu.pid").exists()  # removed: it named the old main


def test_no_main_upgrade_while_a_worker_upgrade_launches_its_new_worker(
    make_sozu: MakeSozu,
) -> None:
    sozu = make_sozu(workers=1, extra=EXTRA, start=False)
    held = faulty_launcher("start", WORKER_LAUNCH_HELD)  # the first main holds worker launches
    sozu.start(wait_workers=1, launcher=True, launcher_script=held)
    assert sozu.process is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sozu.send, Request(upgrade_worker=0), 30)
        wait_for((sozu.workdir / "launching").exists, 10, "the new worker's launch")
        refused = upgrade_main(sozu)
        assert refused.status == ResponseStatus.FAILURE
        assert refused.message == "a worker upgrade is in progress"
        (sozu.workdir / "go").touch()
        upgraded = pending.result(timeout=30)
    assert upgraded.status == ResponseStatus.OK, upgraded.message
    assert sozu.main_pid() == sozu.process.pid
    answer = upgrade_main(sozu)  # the worker upgrade is over: a main upgrade may run
    assert answer.status == ResponseStatus.OK, answer.message


def test_a_failure_after_the_new_main_confirmed_still_hands_over(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1, extra=EXTRA, start=False)
    faulty = faulty_launcher("start", WRAP_UP_FAILS)  # the first main only
    sozu.start(wait_workers=1, launcher=True, launcher_script=faulty)
    assert sozu.process is not None
    workers = running_worker_pids(sozu)
    answer = upgrade_main(sozu)
    assert answer.status == ResponseStatus.OK, answer.message
    assert sozu.process.wait(timeout=10) == 0  # not left gated with `upgrading` set
    assert "main_upgrade_wrap_up_failed" in sozu.log()
    assert sozu.main_pid() != sozu.process.pid
    assert running_worker_pids(sozu) == workers
    assert sozu.cli("status").returncode == 0
