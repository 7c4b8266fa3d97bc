"""The client against a scripted fake supervisor: answers, PROCESSING, and every error path.

In-process tests drive `Client` and `sozu.cli.main.main`; the subprocess tests run
`python -m sozu` as an operator does and check that each failure is one line and exit code 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from sozu.cli.client import Client, ClientError, RequestFailed, timeout_seconds
from sozu.cli.main import main
from sozu.command.proto import (
    Cluster,
    ClusterInformation,
    ClusterInformations,
    Event,
    EventKind,
    LoadBalancingAlgorithms,
    Request,
    ResponseStatus,
    RunState,
    Status,
    WorkerInfo,
    WorkerInfos,
)
from tests.unit.cli.fake_sozu import CLOSE, READ, FakeSozu, Step, failure, frame, ok, processing

WORKERS = WorkerInfos(
    vec=[
        WorkerInfo(id=1, pid=4242, run_state=RunState.RUNNING),
        WorkerInfo(id=0, pid=4241, run_state=RunState.NOT_ANSWERING),
    ]
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: unix socket paths are limited to about 100 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="sozu-cli-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sock(short_dir: Path) -> Path:
    return short_dir / "sozu.sock"


@pytest.fixture
def config(short_dir: Path, sock: Path) -> Path:
    path = short_dir / "config.toml"
    path.write_text(f'command_socket = "{sock}"\nctl_command_timeout = 2000\n')
    return path


def status() -> Request:
    return Request(status=Status())


# -- Client ---------------------------------------------------------------------------------------


def test_timeout_resolution() -> None:
    assert timeout_seconds(None, None) == 1.0
    assert timeout_seconds(250, None) == 0.25
    assert timeout_seconds(0, None) is None


def test_not_running_no_socket_file(sock: Path) -> None:
    with pytest.raises(ClientError) as error, Client(sock):
        pass
    text = str(error.value)
    assert text.startswith(f"cannot reach sozu at {sock}: ")
    assert "is sozu running?" in text


def test_not_running_stale_socket_file(sock: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: connection refused
    with pytest.raises(ClientError, match=r"cannot reach sozu at .*refused"), Client(sock):
        pass


def test_ok_answer_and_request_on_the_wire(sock: Path) -> None:
    with FakeSozu(sock, [ok("done", workers=WORKERS)]) as fake, Client(sock, 2.0) as client:
        answer = client.call(status())
    assert answer.status == ResponseStatus.OK
    assert answer.content.workers == WORKERS
    assert fake.requests == [status()]


def test_failure_answer(sock: Path) -> None:
    with (
        FakeSozu(sock, [failure("cluster app not found")]),
        Client(sock, 2.0) as client,
        pytest.raises(RequestFailed, match="cluster app not found") as raised,
    ):
        client.call(status())
    assert raised.value.response.status == ResponseStatus.FAILURE


def test_processing_then_ok_prints_progress_on_stderr(
    sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script: list[Step] = [processing("Querying status of workers..."), processing(""), ok("done")]
    with FakeSozu(sock, script), Client(sock, 2.0) as client:
        assert client.call(status()).message == "done"
    assert capsys.readouterr().err == "Querying status of workers...\n"


def test_processing_is_silent_when_quiet(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeSozu(sock, [processing("working"), ok()]), Client(sock, 2.0, quiet=True) as client:
        client.call(status())
    assert capsys.readouterr().err == ""


def test_processing_restarts_the_timeout(sock: Path) -> None:
    script: list[Step] = [0.3, processing("a"), 0.3, processing("b"), 0.3, ok("late but fine")]
    started = time.monotonic()
    with FakeSozu(sock, script), Client(sock, 0.5, quiet=True) as client:
        assert client.call(status()).message == "late but fine"
    assert time.monotonic() - started > 0.8


def test_timeout(sock: Path) -> None:
    with (
        FakeSozu(sock, [5.0]),
        Client(sock, 0.2) as client,
        pytest.raises(ClientError, match=r"^no answer within 200 ms$"),
    ):
        client.call(status())


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([frame(b"\xff\xff\xff garbage")], "unreadable answer from sozu"),
        ([struct.pack("<Q", 4)], "unreadable answer from sozu"),
        ([struct.pack("<Q", 10**12)], "unreadable answer from sozu"),
        ([frame(b"")], "unreadable answer from sozu"),  # a Response without its required fields
        ([CLOSE], "closed the connection .*without answering"),
        ([struct.pack("<Q", 100) + b"short", CLOSE], "in the middle of an answer"),
    ],
)
def test_garbage_and_hang_ups(sock: Path, script: list[Step], message: str) -> None:
    with (
        FakeSozu(sock, script),
        Client(sock, 2.0) as client,
        pytest.raises(ClientError, match=message),
    ):
        client.call(status())


def test_stream_yields_events_until_the_server_closes(sock: Path) -> None:
    event = Event(kind=EventKind.CLUSTER_ADDED, cluster_id="app")
    script: list[Step] = [processing("main", event=event), processing("0", event=event), CLOSE]
    with FakeSozu(sock, script), Client(sock, 0.1) as client:
        seen = []
        with pytest.raises(ClientError, match="closed the stream"):
            for answer in client.stream(Request()):
                seen.append(answer.message)
    assert seen == ["main", "0"]


# -- main() in process ---------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    code = main(list(words))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_table(sock: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeSozu(sock, [processing("querying"), ok("done", workers=WORKERS)]):
        code, out, err = run(capsys, "-c", str(config), "status")
    assert code == 0
    assert out.splitlines() == [
        "WORKER  PID   RUN STATE",
        "0       4241  NOT_ANSWERING",
        "1       4242  RUNNING",
    ]
    assert err == "querying\n"


def test_status_json(sock: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    with FakeSozu(sock, [processing("querying"), ok("done", workers=WORKERS)]):
        code, out, err = run(capsys, "status", "-c", str(config), "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == {
        "workers": {
            "vec": [
                {"id": 1, "pid": 4242, "run_state": "RUNNING"},
                {"id": 0, "pid": 4241, "run_state": "NOT_ANSWERING"},
            ]
        }
    }


def test_change_prints_the_message(
    sock: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeSozu(sock, [ok("Successfully removed cluster")]) as fake:
        code, out, _ = run(capsys, "-c", str(config), "cluster", "remove", "-i", "app")
    assert (code, out) == (0, "Successfully removed cluster\n")
    assert fake.requests == [Request(remove_cluster="app")]


def test_failure_is_one_line(sock: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeSozu(sock, [failure("no cluster app")]):
        code, out, err = run(capsys, "-c", str(config), "cluster", "remove", "-i", "app")
    assert (code, out, err) == (1, "", "error: no cluster app\n")


def test_invalid_input_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-c", str(config), "cluster", "list", "-i", "a", "-d", "b")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1


def test_upgrade_main_then_each_worker(
    sock: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first: list[Step] = [ok("main upgraded")]
    second: list[Step] = [ok("", workers=WORKERS), READ, ok("w0"), READ, failure("worker 1 stuck")]
    with FakeSozu(sock, first, second) as fake:
        code, out, err = run(capsys, "-c", str(config), "upgrade")
    assert [r.WhichOneof("request_type") for r in fake.requests] == [
        "upgrade_main",
        "list_workers",
        "upgrade_worker",
        "upgrade_worker",
    ]
    assert [r.upgrade_worker for r in fake.requests[2:]] == [0, 1]
    assert code == 1
    assert "worker 0 upgraded" in out
    assert err == "error: upgrade incomplete: worker 1: worker 1 stuck\n"


def test_cluster_h2_enable(sock: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = Cluster(
        cluster_id="app",
        sticky_session=True,
        https_redirect=False,
        load_balancing=LoadBalancingAlgorithms.RANDOM,
    )
    infos = ClusterInformations(vec=[ClusterInformation(configuration=app)])
    with FakeSozu(sock, [ok("", clusters=infos), READ, ok("updated")]) as fake:
        code, out, _ = run(capsys, "-c", str(config), "cluster", "h2", "enable", "-i", "app")
    assert (code, out) == (0, "updated\n")
    expected = Cluster()
    expected.CopyFrom(app)
    expected.http2 = True
    assert fake.requests == [Request(query_cluster_by_id="app"), Request(add_cluster=expected)]


def test_events_in_process(sock: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = Event(kind=EventKind.BACKEND_DOWN, cluster_id="app", backend_id="app-0")
    script: list[Step] = [processing("subscribed"), processing("1", event=event), CLOSE]
    with FakeSozu(sock, script) as fake:
        code, out, err = run(capsys, "-c", str(config), "events")
    assert fake.requests[0].WhichOneof("request_type") == "subscribe_events"
    assert out == "1: backend down cluster=app backend=app-0\n"
    assert code == 1
    assert err.endswith("closed the stream\n")


def test_metrics_answer_is_printed(
    sock: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeSozu(sock, [failure("metrics are not supported yet")]):
        code, _, err = run(capsys, "-c", str(config), "metrics", "get")
    assert (code, err) == (1, "error: metrics are not supported yet\n")


def test_main_with_an_unreadable_record_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as record, ours, theirs:
        record.write(b"{")
        record.flush()
        upgrade_fd = os.dup(record.fileno())  # `sozu main` closes it once read
        code, _, err = run(
            capsys, "main", "--fd", str(theirs.fileno()), "--upgrade-fd", str(upgrade_fd)
        )
    assert code == 1 and "cannot read the upgrade record: upgrade record is not JSON" in err


def test_not_yet_supported_words(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "top")
    assert code == 1 and "tui extra" in err


# -- python -m sozu -------------------------------------------------------------------------------


def sozu(*words: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOZU_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "sozu", *words],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_subprocess_not_running(config: Path, sock: Path) -> None:
    result = sozu("-c", str(config), "status")
    assert_one_line_error(result, f"cannot reach sozu at {sock}")
    assert result.stdout == ""


def test_subprocess_failure(config: Path, sock: Path) -> None:
    with FakeSozu(sock, [processing("working"), failure("listener 127.0.0.1:80 exists")]):
        result = sozu("-c", str(config), "listener", "http", "add", "-a", "127.0.0.1:80")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr == "working\nerror: listener 127.0.0.1:80 exists\n"


def test_subprocess_timeout(config: Path, sock: Path) -> None:
    with FakeSozu(sock, [10.0]):
        result = sozu("-c", str(config), "-t", "300", "status")
    assert_one_line_error(result, "no answer within 300 ms")


def test_subprocess_garbage_answer(config: Path, sock: Path) -> None:
    with FakeSozu(sock, [frame(b"\x08\x07")]):
        result = sozu("-c", str(config), "status", "--json")
    assert_one_line_error(result, "unreadable answer from sozu")


def test_subprocess_ok(config: Path, sock: Path) -> None:
    with FakeSozu(sock, [ok("done", workers=WORKERS)]):
        result = sozu("-c", str(config), "status")
    assert result.returncode == 0, result.stderr
    assert "4242" in result.stdout and "RUNNING" in result.stdout


def test_subprocess_events_until_ctrl_c(config: Path, sock: Path) -> None:
    event = Event(kind=EventKind.CLUSTER_ADDED, cluster_id="app")
    with FakeSozu(sock, [processing("main", event=event), 30.0]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sozu", "-c", str(config), "events"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert line == "main: cluster added cluster=app\n"
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_subprocess_missing_config() -> None:
    result = sozu("status")
    assert_one_line_error(result, "-c FILE")


def test_subprocess_usage_error() -> None:
    result = sozu("cluster", "add", "-i", "a", "--load-balancing-policy", "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown load balancing policy" in result.stderr


# -- process entry points (modules replaced, so these tests do not start anything) ----------------


def test_start_and_worker_call_their_entry_points(
    monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    calls: list[tuple[object, ...]] = []

    def start(path: Path, daemonize: bool) -> int:
        calls.append(("start", path, daemonize))
        return 0

    def run_worker(*numbers: int, access_logs_format: str | None = None) -> int:
        calls.append(("run", *numbers, access_logs_format))
        return 3

    supervisor = types.ModuleType("sozu.supervisor.main")
    supervisor.start = start  # type: ignore[attr-defined]
    worker = types.ModuleType("sozu.worker.main")
    worker.run = run_worker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sozu.supervisor.main", supervisor)
    monkeypatch.setitem(sys.modules, "sozu.worker.main", worker)
    assert main(["-c", str(config), "start", "--daemonize"]) == 0
    words = ["worker", "--id", "2", "--fd", "5", "--scm", "6", "--configuration-state-fd", "7"]
    assert main(words) == 3
    assert main([*words, "--command-buffer-size", "10", "--max-command-buffer-size", "40"]) == 3
    assert main([*words, "--access-logs-format", "json"]) == 3  # the sozu-py extension
    assert calls == [
        ("start", config, True),
        ("run", 2, 5, 6, 7, 1_000_000, 2_000_000, None),
        ("run", 2, 5, 6, 7, 10, 40, None),
        ("run", 2, 5, 6, 7, 1_000_000, 2_000_000, "json"),
    ]


def test_unloadable_entry_point_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sozu.worker.main", None)
    words = ["worker", "--id", "0", "--fd", "3", "--scm", "4", "--configuration-state-fd", "5"]
    code, _, err = run(capsys, *words)
    assert code == 1
    assert err.startswith("error: the worker cannot be loaded") and err.count("\n") == 1
