"""The supervisor as a real process (`python -m sozu -c CONFIG start`) with real workers.

Clients here are built from `sozu.command.channel` and the protobuf schema only. Every process a
test starts is killed by pid when it ends; waits poll a condition, never sleep a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from sozu.command.addresses import to_proto
from sozu.command.channel import Channel
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    Cluster,
    CountRequests,
    DeactivateListener,
    EventKind,
    HardStop,
    ListenerType,
    ListListeners,
    ListWorkers,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    PathRule,
    PathRuleKind,
    QueryClustersHashes,
    Request,
    RequestHttpFrontend,
    Response,
    ResponseStatus,
    RulePosition,
    RunState,
    Status,
    SubscribeEvents,
    TcpListenerConfig,
)

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def launch_command(config: Path, *extra: str) -> list[str]:
    """`sozu -c CONFIG start ...`, as an operator types it."""
    return [sys.executable, "-m", "sozu", "-c", str(config), "start", *extra]


def call(socket_path: Path, request: Request, timeout: float = 15.0) -> Response:
    """Send one Request on a new connection; the final (non-PROCESSING) Response."""
    channel: Channel[Request, Response] = Channel.connect(str(socket_path), Response)
    with channel:
        channel.send(request)
        while True:
            response = channel.recv(timeout=timeout)
            if response.status != ResponseStatus.PROCESSING:
                return response


@dataclass
class Proxy:
    """One `sozu start` process on a temporary configuration."""

    workdir: Path
    http_port: int
    extra: str = ""
    clusters: str = ""
    workers: int = 2
    worker_timeout: int = 5
    process: subprocess.Popen[bytes] | None = None
    children: set[int] = field(default_factory=set)

    @property
    def config(self) -> Path:
        return self.workdir / "config.toml"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "sozu.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sozu.log"

    def write_config(self) -> None:
        self.config.write_text(
            f'command_socket = "sozu.sock"\n'
            f"worker_count = {self.workers}\n"
            f"worker_timeout = {self.worker_timeout}\n"
            f'audit_logs_target = "{self.workdir / "audit.log"}"\n'
            f'audit_logs_json_target = "{self.workdir / "audit.json"}"\n'
            f"{self.extra}\n"
            f"[[listeners]]\n"
            f'protocol = "http"\n'
            f'address = "127.0.0.1:{self.http_port}"\n'
            f"{self.clusters}\n"
        )

    def start(self, *extra: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.write_config()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                launch_command(self.config, *extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, **(env or {})},
            )
        if wait:
            wait_for(lambda: self.running() == self.workers, f"workers; log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, request: Request, timeout: float = 15.0) -> Response:
        return call(self.socket_path, request, timeout)

    def worker_infos(self) -> list[tuple[int, int, int]]:
        response = self.call(Request(list_workers=ListWorkers()))
        return [(w.id, w.pid, w.run_state) for w in response.content.workers.vec]

    def running(self) -> int:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"sozu exited with {self.process.returncode}:\n{self.log()}")
        try:
            infos = self.worker_infos()
        except Exception:
            return 0
        self.children.update(pid for _id, pid, _state in infos)
        return sum(1 for _id, _pid, state in infos if state == RunState.RUNNING)

    def audit_lines(self) -> list[str]:
        path = self.workdir / "audit.log"
        return path.read_text().splitlines() if path.exists() else []

    def audit_records(self) -> list[dict[str, object]]:
        path = self.workdir / "audit.json"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                self.children.update(c.pid for c in psutil.Process(self.process.pid).children())
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(**options: object) -> Proxy:
        workdir = tmp_path / f"proxy{len(made)}"
        workdir.mkdir()
        proxy = Proxy(workdir, free_port(), **options)  # type: ignore[arg-type]
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.cleanup()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cluster(cluster_id: str) -> Request:
    return Request(
        add_cluster=Cluster(
            cluster_id=cluster_id,
            sticky_session=False,
            https_redirect=False,
            load_balancing=LoadBalancingAlgorithms.ROUND_ROBIN,
        )
    )


def views(proxy: Proxy, cluster_id: str) -> dict[str, int]:
    """Per process (`main` and each worker id): how many clusters `cluster_id` it has."""
    response = proxy.call(Request(query_cluster_by_id=cluster_id))
    assert response.status == ResponseStatus.OK, response.message
    return {
        key: len(content.clusters.vec)
        for key, content in response.content.worker_responses.map.items()
    }


# --- start-up, status, stop ----------------------------------------------------------------


def test_start_status_notify_and_soft_stop(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(extra='pid_file_path = "sozu.pid"')
    notify_path = proxy.workdir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(WAIT)
    with notify:
        proxy.start(env={"NOTIFY_SOCKET": str(notify_path)})
        assert notify.recv(256) == b"READY=1"
        info = proxy.socket_path.lstat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert proxy.process is not None
        assert (proxy.workdir / "sozu.pid").read_text().strip() == str(proxy.process.pid)

        response = proxy.call(Request(status=Status()))
        assert response.status == ResponseStatus.OK
        workers = response.content.workers.vec
        assert [(w.id, w.run_state) for w in workers] == [
            (0, RunState.RUNNING),
            (1, RunState.RUNNING),
        ]
        children = {c.pid for c in psutil.Process(proxy.process.pid).children()}
        assert {w.pid for w in workers} == children

        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.wait_exit() == 0
        assert notify.recv(256) == b"STOPPING=1"
    assert not any(alive(pid) for pid in children)
    assert not proxy.socket_path.exists()
    assert not (proxy.workdir / "sozu.pid").exists()
    assert any("verb=sozu_stop_requested" in line and "target=stop:soft" in line
               for line in proxy.audit_lines())  # fmt: skip


def test_hard_stop_request_answers_then_exits(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    proxy.start()
    pids = [pid for _id, pid, _state in proxy.worker_infos()]
    response = proxy.call(Request(hard_stop=HardStop()))
    assert response.status == ResponseStatus.OK
    assert "stopping the main process" in response.message
    assert proxy.wait_exit() == 0
    assert not any(alive(pid) for pid in pids)
    assert not proxy.socket_path.exists()


def test_sigint_is_a_hard_stop(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=1)
    proxy.start()
    assert proxy.process is not None
    pids = [pid for _id, pid, _state in proxy.worker_infos()]
    proxy.process.send_signal(signal.SIGINT)
    assert proxy.wait_exit() == 0
    assert not any(alive(pid) for pid in pids)
    assert any("target=stop:hard" in line for line in proxy.audit_lines())


def test_command_socket_refusals(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=1)
    proxy.start()
    # A second sozu on the same socket path: refused while the first one answers.
    second = subprocess.run(
        launch_command(proxy.config), cwd=proxy.workdir, capture_output=True, text=True,
        timeout=WAIT,
    )  # fmt: skip
    assert second.returncode == 1
    assert "already running on command socket" in second.stderr
    assert "Traceback" not in second.stderr
    assert proxy.call(Request(list_workers=ListWorkers())).status == ResponseStatus.OK

    # A path that is not a socket is never replaced.
    other = make_proxy(workers=1)
    other.write_config()
    other.socket_path.write_text("precious")
    third = subprocess.run(
        launch_command(other.config), cwd=other.workdir, capture_output=True, text=True,
        timeout=WAIT,
    )  # fmt: skip
    assert third.returncode == 1
    assert "is not a socket" in third.stderr
    assert other.socket_path.read_text() == "precious"


def test_stale_socket_is_replaced_and_bad_config_is_one_line(
    make_proxy: Callable[..., Proxy],
) -> None:
    proxy = make_proxy(workers=1)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(proxy.socket_path))
    stale.close()  # the file stays, nobody listens
    proxy.start()
    assert proxy.call(Request(list_workers=ListWorkers())).status == ResponseStatus.OK

    broken = make_proxy(workers=1, extra="worker_count = ")
    broken.write_config()
    result = subprocess.run(
        launch_command(broken.config), cwd=broken.workdir, capture_output=True, text=True,
        timeout=WAIT,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_daemonize_writes_pid_file_and_keeps_listening(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=1, extra='pid_file_path = "sozu.pid"')
    proxy.write_config()
    result = subprocess.run(
        launch_command(proxy.config, "--daemonize"), cwd=proxy.workdir, capture_output=True,
        text=True, timeout=WAIT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pid = int((proxy.workdir / "sozu.pid").read_text())
    proxy.children.add(pid)
    try:
        assert proxy.running() == 1  # ready before the shell got its exit status
        proxy.children.update(p for _i, p, _s in proxy.worker_infos())
        with socket.create_connection(("127.0.0.1", proxy.http_port), timeout=5):
            pass
        assert psutil.Process(pid).ppid() != os.getpid()
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), "the daemon to exit")
        assert not proxy.socket_path.exists()
    finally:
        for child in proxy.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


# --- changes, queries, audit ---------------------------------------------------------------


def test_changes_reach_every_worker_and_are_audited(make_proxy: Callable[..., Proxy]) -> None:
    state_file = "state.json"
    proxy = make_proxy(extra=f'saved_state = "{state_file}"\nautomatic_state_save = true')
    proxy.start()
    assert proxy.call(cluster("app")).status == ResponseStatus.OK
    backend = AddBackend(
        cluster_id="app", backend_id="app-0", address=to_proto("127.0.0.1:1"),
        load_balancing_parameters=LoadBalancingParams(weight=100),
    )  # fmt: skip
    assert proxy.call(Request(add_backend=backend)).status == ResponseStatus.OK
    front = RequestHttpFrontend(
        cluster_id="app", address=to_proto(f"127.0.0.1:{proxy.http_port}"),
        hostname="example.com", path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        position=RulePosition.TREE,
    )  # fmt: skip
    assert proxy.call(Request(add_http_frontend=front)).status == ResponseStatus.OK
    assert views(proxy, "app") == {"main": 1, "0": 1, "1": 1}

    refused = proxy.call(Request(remove_cluster="nope"))
    assert refused.status == ResponseStatus.FAILURE
    assert "not found" in refused.message

    saved = (proxy.workdir / state_file).read_text()
    assert '"ADD_CLUSTER":{"cluster_id":"app"' in saved and '"backend_id":"app-0"' in saved

    lines = [line for line in proxy.audit_lines() if "verb=cluster_added" in line]
    assert len(lines) == 2  # attempt and completion share the bracket
    assert lines[0].split("\t")[0] == lines[1].split("\t")[0]
    assert "fanout=ok, workers=2/0/2" in lines[1] and f"actor_uid={os.getuid()}" in lines[1]
    records = proxy.audit_records()
    removal = [r for r in records if r["verb"] == "cluster_removed"]
    # logrotate: move the files away, SIGHUP, and the next records go to new files.
    assert proxy.process is not None
    (proxy.workdir / "audit.log").rename(proxy.workdir / "audit.log.1")
    proxy.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "logs_reopened" in proxy.log(), "the logs to be reopened")
    assert proxy.call(Request(remove_cluster="app")).status == ResponseStatus.OK
    assert sum("verb=cluster_removed" in line for line in proxy.audit_lines()) == 2
    assert len(removal) == 1 and removal[0]["result"] == "err"
    assert removal[0]["extras"]["error_code"] == "dispatch_error"  # type: ignore[index]


def test_bad_input_closes_only_that_client(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=1)
    proxy.start()
    steady: Channel[Request, Response] = Channel.connect(str(proxy.socket_path), Response)
    with steady:
        answers = []
        for payload in (
            b"\xff" * 8 + b"garbage",  # declared length far over the maximum
            (3).to_bytes(8, "little"),  # declared length under the prefix
            (16).to_bytes(8, "little") + b"\xff" * 8,  # undecodable protobuf
            (8).to_bytes(8, "little"),  # a Request without any variant
            (11).to_bytes(8, "little") + b"\xba\x3e\x00",  # only an unknown field (999)
        ):
            bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            bad.connect(str(proxy.socket_path))
            bad.sendall(payload)
            bad.settimeout(5)
            raw = b""
            while chunk := bad.recv(65536):
                raw += chunk
            bad.close()
            reply = Response()
            reply.ParseFromString(raw[8:])
            answers.append(reply)
        truncated = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        truncated.connect(str(proxy.socket_path))
        truncated.sendall((100).to_bytes(8, "little") + b"abc")
        truncated.close()
        assert all(a.status == ResponseStatus.FAILURE for a in answers), answers
        assert all(a.message.startswith("invalid request") for a in answers)
        steady.send(Request(list_workers=ListWorkers()))
        assert steady.recv(timeout=10).status == ResponseStatus.OK
    wait_for(lambda: sum('"invalid_input"' in line for line in
                         (proxy.workdir / "audit.json").read_text().splitlines()) >= 6,
             "six invalid_input audit records")  # fmt: skip
    assert proxy.running() == 1


def test_uid_outside_allowed_list_is_refused_and_audited(
    make_proxy: Callable[..., Proxy],
) -> None:
    other_uid = os.getuid() + 4242
    proxy = make_proxy(workers=1, extra=f"command_allowed_uids = [{other_uid}]")
    proxy.start(wait=False)
    wait_for(lambda: "supervisor_ready" in proxy.log(), f"start-up; log:\n{proxy.log()}")
    refused = proxy.call(cluster("nope"))
    assert refused.status == ResponseStatus.FAILURE
    assert f"actor UID {os.getuid()} not in command_allowed_uids" in refused.message
    records = [r for r in proxy.audit_records() if r["result"] == "err"]
    assert records and records[0]["verb"] == "cluster_added"
    assert records[0]["actor"]["uid"] == os.getuid()  # type: ignore[index]


def test_events_reach_subscribers(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=1)
    proxy.start()
    subscriber: Channel[Request, Response] = Channel.connect(str(proxy.socket_path), Response)
    with subscriber:
        subscriber.send(Request(subscribe_events=SubscribeEvents()))
        first = subscriber.recv(timeout=10)
        assert first.status == ResponseStatus.PROCESSING
        assert first.content.event.kind == EventKind.EVENTS_SUBSCRIBED
        assert proxy.call(cluster("evented")).status == ResponseStatus.OK
        event = subscriber.recv(timeout=10)
        assert event.status == ResponseStatus.PROCESSING and event.message == "main"
        assert event.content.event.kind == EventKind.CLUSTER_ADDED
        assert event.content.event.cluster_id == "evented"


def test_listener_activation_binds_in_the_supervisor(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=2)
    proxy.start()
    port = free_port()
    address = to_proto(f"127.0.0.1:{port}")
    listener = TcpListenerConfig(
        address=address, expect_proxy=False, front_timeout=60, back_timeout=30,
        connect_timeout=3, active=False,
    )  # fmt: skip
    assert proxy.call(Request(add_tcp_listener=listener)).status == ResponseStatus.OK
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    activate = ActivateListener(address=address, proxy=ListenerType.TCP, from_scm=False)
    response = proxy.call(Request(activate_listener=activate))
    assert response.status == ResponseStatus.OK, response.message
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    deactivate = DeactivateListener(address=address, proxy=ListenerType.TCP, to_scm=False)
    assert proxy.call(Request(deactivate_listener=deactivate)).status == ResponseStatus.OK
    wait_for(lambda: not _accepts(port), "the listener to close everywhere")
    # A port already taken elsewhere: FAILURE, nothing changes.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = to_proto(f"127.0.0.1:{taken.getsockname()[1]}")
        listener.address.CopyFrom(busy)
        assert proxy.call(Request(add_tcp_listener=listener)).status == ResponseStatus.OK
        refused = proxy.call(
            Request(activate_listener=ActivateListener(address=busy, proxy=ListenerType.TCP,
                                                       from_scm=False))
        )  # fmt: skip
        assert refused.status == ResponseStatus.FAILURE
        assert "cannot bind tcp listener" in refused.message


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_killed_worker_is_replaced_with_the_current_state(
    make_proxy: Callable[..., Proxy],
) -> None:
    proxy = make_proxy(workers=2)
    proxy.start()
    assert proxy.call(cluster("before-kill")).status == ResponseStatus.OK
    victim = next(pid for worker_id, pid, _ in proxy.worker_infos() if worker_id == 0)
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: any(i == 2 and s == RunState.RUNNING for i, _p, s in proxy.worker_infos()),
        "worker 2 to replace worker 0",
    )
    assert time.monotonic() - started < 5
    infos = {worker_id: state for worker_id, _pid, state in proxy.worker_infos()}
    assert infos == {0: RunState.STOPPED, 1: RunState.RUNNING, 2: RunState.RUNNING}
    assert views(proxy, "before-kill") == {"main": 1, "1": 1, "2": 1}
    verbs = [record["verb"] for record in proxy.audit_records()]
    assert "worker_killed" in verbs and "worker_relaunched" in verbs


def test_save_stop_start_load_and_reload(make_proxy: Callable[..., Proxy]) -> None:
    first = make_proxy(workers=1)
    first.start()
    assert first.call(cluster("kept")).status == ResponseStatus.OK
    saved = first.workdir / "saved.state"
    response = first.call(Request(save_state=str(saved)))
    assert response.status == ResponseStatus.OK and str(saved) in response.message
    # Loading it back where it came from: every record is already in place, none is an error.
    again = first.call(Request(load_state=str(saved)))
    assert again.status == ResponseStatus.OK, again.message
    assert again.message.endswith("3 ok messages, 0 errors")
    assert first.call(Request(hard_stop=HardStop())).status == ResponseStatus.OK
    assert first.wait_exit() == 0

    second = make_proxy(workers=1)
    second.start()
    assert views(second, "kept") == {"main": 0, "0": 0}
    loaded = second.call(Request(load_state=str(saved)))
    assert loaded.status == ResponseStatus.OK, loaded.message
    assert views(second, "kept") == {"main": 1, "0": 1}
    record = [r for r in second.audit_records() if r["verb"] == "state_loaded"][-1]
    assert str(record["target"]).startswith(f"file:{saved} ok:")

    # reload: the config file is the truth; what it lacks is removed, what it has is added.
    second.clusters = (
        '[clusters.fromfile]\nprotocol = "tcp"\nfrontends = []\n'
        'backends = [{ address = "127.0.0.1:9" }]\n'
    )
    second.write_config()
    reloaded = second.call(Request(reload_configuration=""))
    assert reloaded.status == ResponseStatus.OK, reloaded.message
    assert views(second, "fromfile") == {"main": 1, "0": 1}
    assert views(second, "kept") == {"main": 0, "0": 0}


def test_concurrent_clients_logging_and_local_queries(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=2, extra="handle_process_affinity = true")
    proxy.start()
    cpus = sorted(os.sched_getaffinity(0))
    for worker_id, pid, _state in proxy.worker_infos():
        assert psutil.Process(pid).cpu_affinity() == [cpus[worker_id % len(cpus)]]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda n: proxy.call(cluster(f"c{n}")), range(32)))
    assert all(answer.status == ResponseStatus.OK for answer in answers)
    hashes = proxy.call(Request(query_clusters_hashes=QueryClustersHashes()))
    per_process = {
        k: dict(v.cluster_hashes.map) for k, v in hashes.content.worker_responses.map.items()
    }
    assert set(per_process) == {"main", "0", "1"}
    assert len(per_process["main"]) == 32
    assert per_process["0"] == per_process["main"] == per_process["1"]

    counts = proxy.call(Request(count_requests=CountRequests())).content.request_counts.map
    assert counts["AddCluster"] == 32 and counts["AddHttpListener"] == 1
    listeners = proxy.call(Request(list_listeners=ListListeners())).content.listeners_list
    assert len(listeners.http_listeners) == 1

    assert proxy.call(Request(Logging="debug")).status == ResponseStatus.OK
    bad = proxy.call(Request(Logging="loud"))
    assert bad.status == ResponseStatus.FAILURE
    codes = [r["extras"]["error_code"] for r in proxy.audit_records()  # type: ignore[index]
             if r["verb"] == "logging_level_changed"]  # fmt: skip
    assert codes == [None, "invalid_input"]


def test_a_silent_worker_is_named_in_the_failure(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(workers=2, worker_timeout=1)
    proxy.start()
    frozen = next(pid for worker_id, pid, _ in proxy.worker_infos() if worker_id == 1)
    os.kill(frozen, signal.SIGSTOP)
    try:
        answer = proxy.call(cluster("late"))
        assert answer.status == ResponseStatus.FAILURE
        assert answer.message == "worker 1: timeout"
        status = proxy.call(Request(status=Status())).content.workers.vec
        assert {w.id: w.run_state for w in status} == {
            0: RunState.RUNNING,
            1: RunState.NOT_ANSWERING,
        }
    finally:
        os.kill(frozen, signal.SIGCONT)
    completion = [r for r in proxy.audit_records() if r["verb"] == "cluster_added"][-1]
    extras = completion["extras"]
    assert completion["result"] == "err"
    assert extras["error_code"] == "worker_timeout"  # type: ignore[index]
    assert extras["fanout"] == {  # type: ignore[index]
        "status": "timeout", "workers_ok": 1, "workers_err": 1, "workers_expected": 2,
    }  # fmt: skip
    assert views(proxy, "late") == {"main": 1, "0": 1, "1": 1}  # it caught up
    assert proxy.running() == 2  # and answering again is being RUNNING again
