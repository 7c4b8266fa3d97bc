"""Issue 4 end to end: a real supervisor, real workers, the real CLI, real audit files."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from sozu.command.proto import ListWorkers, Request, ResponseStatus
from tests.e2e.conftest import Sozu, free_port, wait_for

MakeSozu = Callable[..., Sozu]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def worker_views(sozu: Sozu, cluster_id: str) -> dict[str, int]:
    """Per worker (main excluded): how many clusters named `cluster_id` it knows."""
    response = sozu.send(Request(query_cluster_by_id=cluster_id))
    assert response.status == ResponseStatus.OK, response.message
    views = response.content.worker_responses.map
    return {
        worker: sum(1 for c in content.clusters.vec if c.configuration.cluster_id == cluster_id)
        for worker, content in views.items()
        if worker != "main"  # the supervisor's own view, as in Sōzu
    }


def http_status(port: int, host: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_status_socket_mode_and_default_answer(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=2)
    assert stat.S_IMODE(sozu.socket_path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(sozu.socket_path.stat().st_mode)
    out = ok(sozu.cli("status"))
    for pid in sozu.worker_pids():
        assert str(pid) in out
    listed = json.loads(ok(sozu.cli("--json", "status")))
    assert listed
    assert http_status(sozu.http_port, "unknown.example") == 404


def test_live_changes_reach_every_worker(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=2)
    backend_port = free_port()
    ok(sozu.cli("cluster", "add", "--id", "app", "--load-balancing-policy", "round_robin"))
    ok(sozu.cli("backend", "add", "--id", "app", "--backend-id", "app-0",
                "--address", f"127.0.0.1:{backend_port}"))  # fmt: skip
    ok(sozu.cli("frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
                "--hostname", "app.example", "id", "app"))  # fmt: skip
    assert worker_views(sozu, "app") == {"0": 1, "1": 1}
    listed = ok(sozu.cli("frontend", "list"))
    assert "app.example" in listed
    # The frontend now routes: no backend answers, so 503 (proxying is the next issue), not 404.
    assert http_status(sozu.http_port, "app.example") in (502, 503)

    new_port = free_port()
    ok(sozu.cli("listener", "http", "add", "-a", f"127.0.0.1:{new_port}"))
    ok(sozu.cli("listener", "http", "activate", "-a", f"127.0.0.1:{new_port}"))
    assert http_status(new_port, "nobody.example") == 404
    assert str(new_port) in ok(sozu.cli("listener", "list"))
    ok(sozu.cli("listener", "http", "deactivate", "-a", f"127.0.0.1:{new_port}"))
    ok(sozu.cli("listener", "http", "remove", "-a", f"127.0.0.1:{new_port}"))

    ok(sozu.cli("frontend", "http", "remove", "--address", f"127.0.0.1:{sozu.http_port}",
                "--hostname", "app.example", "id", "app"))  # fmt: skip
    ok(sozu.cli("backend", "remove", "--id", "app", "--backend-id", "app-0",
                "--address", f"127.0.0.1:{backend_port}"))  # fmt: skip
    ok(sozu.cli("cluster", "remove", "--id", "app"))
    assert worker_views(sozu, "app") == {"0": 0, "1": 0}

    refused = sozu.cli("cluster", "remove", "--id", "app")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error:") and refused.stderr.count("\n") == 1


def test_state_survives_save_shutdown_start_load(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1)
    ok(sozu.cli("cluster", "add", "--id", "kept", "--load-balancing-policy", "random"))
    ok(sozu.cli("frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
                "--hostname", "kept.example", "id", "kept"))  # fmt: skip
    state = sozu.workdir / "saved.state"
    ok(sozu.cli("state", "save", "--file", str(state)))
    assert b"\n\0" in state.read_bytes()
    ok(sozu.cli("shutdown"))
    assert sozu.process is not None
    sozu.process.wait(timeout=20)
    assert not sozu.socket_path.exists()

    sozu.start(wait_workers=1)
    assert worker_views(sozu, "kept") == {"1": 0} or all(
        v == 0 for v in worker_views(sozu, "kept").values()
    )
    ok(sozu.cli("state", "load", "--file", str(state)))
    assert all(v == 1 for v in worker_views(sozu, "kept").values())
    assert http_status(sozu.http_port, "kept.example") in (502, 503)


def test_audit_lines_text_and_json(make_sozu: MakeSozu, tmp_path: Path) -> None:
    text_log = tmp_path / "audit.log"
    json_log = tmp_path / "audit.json"
    sozu = make_sozu(
        workers=2,
        extra=f'audit_logs_target = "{text_log}"\naudit_logs_json_target = "{json_log}"',
    )
    ok(sozu.cli("cluster", "add", "--id", "audited", "--load-balancing-policy", "round_robin"))
    lines = [line for line in text_log.read_text().splitlines() if "audited" in line]
    assert len(lines) == 2, lines  # attempt-time and completion-time
    for field in ("verb=cluster_added", f"actor_uid={os.getuid()}", f"actor_gid={os.getgid()}",
                  "actor_pid=", "actor_user=", "actor_comm=", "client_id=", "socket=",
                  "target=cluster:audited", "result=ok", "sozu_version="):  # fmt: skip
        assert all(field in line for line in lines), field
    assert "\tAUDIT\t" in lines[0]
    assert lines[0].split("]")[0] == lines[1].split("]")[0]
    assert "fanout=ok" in lines[1] and "workers=2/0/2" in lines[1]
    assert "fanout=" not in lines[0]
    records = [json.loads(line) for line in json_log.read_text().splitlines()]
    mine = [r for r in records if r["cluster_id"] == "audited"]
    assert len(mine) == 2
    keys = {"ts", "boot_generation", "session_ulid", "request_ulid", "actor", "client_id",
            "connect_ts", "socket", "verb", "target", "result", "cluster_id", "backend_id",
            "sozu_version", "build_git_sha", "extras"}  # fmt: skip
    for record in mine:
        assert keys <= set(record)
        assert record["actor"]["uid"] == os.getuid()
        assert record["verb"] == "cluster_added"
    assert mine[1]["extras"]["fanout"]["workers_expected"] == 2

    # A cluster id holding control characters yields one text line and one JSON record.
    ok(sozu.cli("cluster", "add", "--id", "evil\nverb=forged\tx", "--load-balancing-policy",
                "round_robin"))  # fmt: skip
    text = text_log.read_text()
    assert "verb=forged" not in [part for line in text.splitlines() for part in line.split(", ")]
    evil = [line for line in text.splitlines() if "evil" in line]
    assert len(evil) == 2 and all("evil?verb=forged?x" in line for line in evil)
    evil_records = [
        json.loads(line) for line in json_log.read_text().splitlines() if "evil" in line
    ]
    assert len(evil_records) == 2

    # A refused change is audited with result=err.
    assert sozu.cli("cluster", "remove", "--id", "never-added").returncode == 1
    assert any("never-added" in line and "result=err" in line
               for line in text_log.read_text().splitlines())  # fmt: skip


def test_uid_outside_the_allowed_list_is_refused_and_audited(
    make_sozu: MakeSozu, tmp_path: Path
) -> None:
    text_log = tmp_path / "audit.log"
    other_uid = os.getuid() + 4242
    sozu = make_sozu(
        workers=1,
        extra=f'command_allowed_uids = [{other_uid}]\naudit_logs_target = "{text_log}"',
        start=False,
    )
    sozu.start()
    wait_for(sozu.socket_path.exists, 30, "the command socket")
    refused = sozu.cli("status")
    assert refused.returncode == 1
    assert str(os.getuid()) in refused.stderr
    wait_for(lambda: text_log.exists() and "result=err" in text_log.read_text(), 10, "audit line")


def test_events_show_a_change_made_by_another_client(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1)
    events = subprocess.Popen(
        [sys.executable, "-m", "sozu", "-c", str(sozu.config_path), "events"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert events.stdout is not None
        # The first event is the subscription itself: from then on, changes reach us.
        assert "subscribed" in events.stdout.readline()
        ok(sozu.cli("cluster", "add", "--id", "seen", "--load-balancing-policy", "random"))
        line = events.stdout.readline()
        assert "cluster added" in line and "seen" in line, line
    finally:
        events.send_signal(signal.SIGINT)
        events.wait(timeout=10)
    assert "Traceback" not in (events.stderr.read() if events.stderr else "")


def test_garbage_on_the_command_socket_leaves_everyone_served(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=1)
    path = str(sozu.socket_path)
    bystander = socket.socket(socket.AF_UNIX)
    bystander.connect(path)
    payloads = [
        b"\xde\xad\xbe\xef" * 8,  # declared length absurd
        struct.pack("<Q", 4),  # shorter than the prefix
        struct.pack("<Q", 20) + b"\xff" * 12,  # undecodable protobuf
        struct.pack("<Q", 8),  # an empty Request: no variant
        struct.pack("<Q", 100) + b"\x08",  # truncated, then hang up
    ]
    for payload in payloads:
        with socket.socket(socket.AF_UNIX) as bad:
            bad.connect(path)
            bad.sendall(payload)
            bad.shutdown(socket.SHUT_WR)
            bad.settimeout(5)
            while bad.recv(65536):
                pass
    ok(sozu.cli("status"))
    frame = Request(list_workers=ListWorkers()).SerializeToString()
    bystander.sendall(struct.pack("<Q", len(frame) + 8) + frame)
    bystander.settimeout(5)
    assert len(bystander.recv(65536)) > 8
    bystander.close()


def test_killed_worker_is_replaced_with_the_current_state(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=2)
    ok(sozu.cli("cluster", "add", "--id", "survivor", "--load-balancing-policy", "round_robin"))
    before = set(sozu.worker_pids())
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(sozu.worker_pids()) - before) == 1 and sozu.running_workers() == 2,
             10, "a replacement worker")  # fmt: skip
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie"
    views = worker_views(sozu, "survivor")
    assert len(views) == 2 and all(count == 1 for count in views.values())
    assert http_status(sozu.http_port, "unknown.example") == 404


def test_no_orphans_after_shutdown(make_sozu: MakeSozu) -> None:
    sozu = make_sozu(workers=2)
    workers = sozu.worker_pids()
    assert len(workers) == 2
    ok(sozu.cli("shutdown", "--hard"))
    assert sozu.process is not None
    sozu.process.wait(timeout=20)
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                             for p in workers), 10, "workers to exit")  # fmt: skip
    assert not sozu.socket_path.exists()
