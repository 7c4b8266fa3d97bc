"""The real worker process, driven through Sōzu's start-up handshake by the test itself.

The test plays the supervisor: it binds the listeners, writes the initial state to an unlinked
temp file, starts the worker with `pass_fds`, sends the ServerConfig frame, the listeners over
SCM_RIGHTS and `INITIAL-STATUS-N`, then sends WorkerRequests and real HTTP traffic.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sozu.command.addresses import to_proto
from sozu.command.channel import Channel
from sozu.command.config import parse_config
from sozu.command.framing import FrameError, FrameErrorKind
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    Cluster,
    DeactivateListener,
    HardStop,
    HttpListenerConfig,
    ListenerType,
    PathRule,
    PathRuleKind,
    QueryClusterByDomain,
    QueryClustersHashes,
    QueryMetricsOptions,
    Request,
    RequestHttpFrontend,
    ResponseStatus,
    ServerConfig,
    SoftStop,
    Status,
    WorkerRequest,
    WorkerResponse,
)
from sozu.command.scm import Listeners, send_listeners
from sozu.command.state import ConfigState, canonical
from sozu.worker.server import SOFT_STOP_GRACE
from tests.integration.harness import bind_listener, wait_for

pytestmark = pytest.mark.timeout(60)

WORKER_ID = 3
OK, FAILURE, PROCESSING = ResponseStatus.OK, ResponseStatus.FAILURE, ResponseStatus.PROCESSING


@dataclass
class Worker:
    """A started worker and the supervisor's ends of its sockets."""

    process: subprocess.Popen[bytes]
    channel: Channel[WorkerRequest, WorkerResponse]
    scm: socket.socket
    address: str  # the HTTP listener of the config
    held: dict[str, socket.socket] = field(default_factory=dict)
    counter: int = 0

    def send(self, content: Request) -> str:
        self.counter += 1
        request_id = f"TEST-{self.counter}"
        self.channel.send(WorkerRequest(id=request_id, content=canonical(content)))
        return request_id

    def recv(self, request_id: str, timeout: float = 10.0) -> WorkerResponse:
        response = self.channel.recv(timeout)
        assert response.id == request_id, response
        return response

    def call(self, content: Request, timeout: float = 10.0) -> WorkerResponse:
        """Send one request and return its final answer (PROCESSING ones are skipped)."""
        request_id = self.send(content)
        while True:
            response = self.recv(request_id, timeout)
            if response.status != PROCESSING:
                return response

    def port(self, address: str | None = None) -> int:
        return int((address or self.address).rsplit(":", 1)[1])

    def get(
        self, host: str, path: str = "/", address: str | None = None
    ) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port(address), timeout=5)
        connection.request("GET", path, headers={"Host": host})
        return connection.getresponse()

    def counts(self) -> dict[str, int]:
        response = self.call(Request(query_metrics=QueryMetricsOptions(list=False)))
        assert response.status == OK, response.message
        proxy = response.content.worker_metrics.proxy
        return {
            name: (value.count if value.WhichOneof("inner") == "count" else value.gauge)
            for name, value in proxy.items()
        }


def server_config(
    tmp_path: Path, address: str, extra: str = ""
) -> tuple[ServerConfig, ConfigState]:
    config = parse_config(
        f"""
        command_socket = "sozu.sock"
        log_level = "debug"
        log_target = "stderr"
        {extra}

        [[listeners]]
        protocol = "http"
        address = "{address}"
        """,
        tmp_path / "config.toml",
    )
    state = ConfigState()
    for request in config.requests():
        state.apply(request)
    return config.server_config(), state


def spawn(tmp_path: Path, cli: bool = False, extra: str = "") -> Worker:
    listener, address = bind_listener()
    config, state = server_config(tmp_path, address, extra)
    channel_parent, channel_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    scm_parent, scm_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = (channel_child.fileno(), scm_child.fileno())
    with tempfile.TemporaryFile() as state_file:
        state_file.write(state.initial_state("SAVE").SerializeToString())
        state_file.flush()
        state_file.seek(0)
        args = (WORKER_ID, *fds, state_file.fileno(), 1_000_000, 2_000_000)
        if cli:
            flags = (
                "--id",
                "--fd",
                "--scm",
                "--configuration-state-fd",
                "--command-buffer-size",
                "--max-command-buffer-size",
            )
            argv = [sys.executable, "-m", "sozu", "worker"]
            for flag, value in zip(flags, args, strict=True):
                argv += [flag, str(value)]
        else:
            code = f"from sozu.worker.main import run; raise SystemExit(run{args!r})"
            argv = [sys.executable, "-c", code]
        process = subprocess.Popen(argv, pass_fds=(*fds, state_file.fileno()))
    channel_child.close()
    scm_child.close()
    channel: Channel[WorkerRequest, WorkerResponse] = Channel(channel_parent, WorkerResponse)
    worker = Worker(process, channel, scm_parent, address, {address: listener})
    channel.send(config)  # type: ignore[arg-type]
    send_listeners(scm_parent, Listeners(http={address: listener}))
    status_id = f"INITIAL-STATUS-{WORKER_ID}"
    channel.send(WorkerRequest(id=status_id, content=Request(status=Status())))
    answer = channel.recv(15)
    assert (answer.id, answer.status) == (status_id, OK), answer
    return worker


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def starter(cli: bool = False, extra: str = "") -> Worker:
        worker = spawn(tmp_path, cli, extra)
        started.append(worker)
        return worker

    yield starter
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(5)
        worker.channel.close()
        worker.scm.close()
        for sock in worker.held.values():
            sock.close()


@pytest.fixture
def worker(start: Callable[..., Worker]) -> Worker:
    return start()


def front(address: str, hostname: str, cluster_id: str | None) -> RequestHttpFrontend:
    message = RequestHttpFrontend(
        address=to_proto(address),
        hostname=hostname,
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
    )
    if cluster_id is not None:
        message.cluster_id = cluster_id
    return message


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- tests -----------------------------------------------------------------------------------


def test_unknown_host_gets_sozu_404(worker: Worker) -> None:
    response = worker.get("nowhere.example", "/some/path")
    body = response.read().decode()
    assert response.status == 404
    assert response.getheader("Cache-Control") == "no-cache"
    assert response.getheader("Connection") == "close"
    assert len(response.getheader("Sozu-Id") or "") == 26  # a ULID
    assert '"route": "GET nowhere.example/some/path"' in body
    counts = worker.counts()
    assert counts["http.requests"] == 1 and counts["http.404.errors"] == 1
    assert counts["listener.accepted.total"] == 1


def test_changes_and_queries_answer_from_the_worker_state(worker: Worker) -> None:
    assert worker.call(Request(add_cluster=Cluster(cluster_id="app"))).status == OK
    frontend = Request(add_http_frontend=front(worker.address, "app.example", "app"))
    assert worker.call(frontend).status == OK
    answer = worker.call(Request(query_cluster_by_id="app"))
    assert answer.status == OK
    (info,) = answer.content.clusters.vec
    assert info.configuration.cluster_id == "app"
    assert [f.hostname for f in info.http_frontends] == ["app.example"]
    assert worker.call(Request(query_cluster_by_id="nope")).content.clusters.vec == []
    by_domain = worker.call(
        Request(query_clusters_by_domain=QueryClusterByDomain(hostname="app.example"))
    )
    assert [i.configuration.cluster_id for i in by_domain.content.clusters.vec] == ["app"]
    hashes = worker.call(Request(query_clusters_hashes=QueryClustersHashes()))
    assert list(hashes.content.cluster_hashes.map) == ["app"]

    response = worker.get("app.example")
    assert response.status == 503 and b"No backend available" in response.read()
    backend = AddBackend(cluster_id="app", backend_id="app-0", address=to_proto("127.0.0.1:1"))
    assert worker.call(Request(add_backend=backend)).status == OK
    response = worker.get("APP.example:80")
    assert response.status == 503 and b"No backend available" in response.read()

    deny = Request(add_http_frontend=front(worker.address, "private.example", None))
    assert worker.call(deny).status == OK
    assert worker.get("private.example").status == 401

    refused = worker.call(Request(remove_cluster="ghost"))
    assert refused.status == FAILURE and "ghost" in refused.message
    duplicate = worker.call(frontend)
    assert duplicate.status == FAILURE and "already exists" in duplicate.message
    main_only = worker.call(Request(save_state="/tmp/x"))
    assert main_only.status == FAILURE and "main process" in main_only.message
    empty = worker.call(Request())
    assert empty.status == FAILURE
    assert worker.call(Request(Logging="warn")).status == OK
    assert worker.call(Request(Logging="nonsense")).status == FAILURE
    unknown = ActivateListener(
        address=to_proto("127.0.0.1:1"), proxy=ListenerType.HTTP, from_scm=True
    )
    missing = worker.call(Request(activate_listener=unknown))
    assert missing.status == FAILURE and "127.0.0.1:1" in missing.message
    assert worker.call(Request(status=Status())).status == OK  # still serving


def test_runtime_listener_activation_and_deactivation(worker: Worker) -> None:
    listener, address = bind_listener()
    worker.held[address] = listener
    keep_alive_404 = "HTTP/1.1 404 Not Found\nContent-Length: 0\n\n"
    config = HttpListenerConfig(address=to_proto(address), answers={"404": keep_alive_404})
    assert worker.call(Request(add_http_listener=config)).status == OK
    send_listeners(worker.scm, Listeners(http={address: listener}))
    activate = ActivateListener(address=to_proto(address), proxy=ListenerType.HTTP, from_scm=True)
    assert worker.call(Request(activate_listener=activate)).status == OK

    connection = http.client.HTTPConnection("127.0.0.1", worker.port(address), timeout=5)
    for _ in range(2):  # the listener's template keeps the connection alive
        connection.request("GET", "/", headers={"Host": "x"})
        response = connection.getresponse()
        assert response.status == 404 and response.read() == b""
        assert response.getheader("Content-Length") == "0"
    connection.request("GET", "/", headers={"Host": "x", "Connection": "close"})
    assert connection.getresponse().status == 404
    connection.close()

    deactivate = DeactivateListener(address=to_proto(address), proxy=ListenerType.HTTP)
    assert worker.call(Request(deactivate_listener=deactivate)).status == OK
    listener.close()  # the supervisor closes its copy after the fan-out
    del worker.held[address]
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", worker.port(address))),
    ):
        pass
    assert worker.get("x").status == 404  # the start-up listener still serves
    again = worker.call(Request(deactivate_listener=deactivate))
    assert again.status == OK  # already inactive: nothing to do


def test_invalid_http_gets_400_and_close(worker: Worker) -> None:
    with socket.create_connection(("127.0.0.1", worker.port()), timeout=5) as sock:
        sock.sendall(b"\x00\x01 garbage\r\n\r\n")
        data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in data


def test_max_connections_accepts_and_closes_the_extra_one(start: Callable[..., Worker]) -> None:
    worker = start(extra="max_connections = 1")
    with socket.create_connection(("127.0.0.1", worker.port()), timeout=5) as first:
        first.sendall(b"GET / HTTP/1.1\r\n")  # a request in progress holds the slot
        wait_for(lambda: worker.counts().get("client.connections") == 1, what="first session")
        with socket.create_connection(("127.0.0.1", worker.port()), timeout=5) as second:
            assert read_all(second) == b""
        first.sendall(b"Host: x\r\n\r\n")
        assert read_all(first).startswith(b"HTTP/1.1 404")
    assert worker.counts()["client.connections.rejected"] == 1


def test_hard_stop_answers_then_exits(worker: Worker) -> None:
    with socket.create_connection(("127.0.0.1", worker.port()), timeout=5) as busy:
        busy.sendall(b"GET / HTTP/1.1\r\n")
        wait_for(lambda: worker.counts().get("client.connections") == 1, what="busy session")
        assert worker.call(Request(hard_stop=HardStop())).status == OK
        assert worker.process.wait(10) == 0
        assert read_all(busy) == b""  # cut, not answered


def test_soft_stop_drains_then_exits(worker: Worker) -> None:
    """Busy connections finish; an idle one gets DRAIN_IDLE_GRACE seconds (a request sent in
    that time is answered), then closes without a word; then OK and exit 0. (Keep-alive
    answers with `Connection: close` during a drain: tests/e2e/test_upgrade_worker.py.)"""
    with (
        socket.create_connection(("127.0.0.1", worker.port()), timeout=10) as idle,
        socket.create_connection(("127.0.0.1", worker.port()), timeout=10) as late,
        socket.create_connection(("127.0.0.1", worker.port()), timeout=10) as busy,
    ):
        busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        wait_for(lambda: worker.counts().get("client.connections") == 3, what="three sessions")
        request_id = worker.send(Request(soft_stop=SoftStop()))
        assert worker.recv(request_id).status == PROCESSING
        late.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # on its way as the drain began
        assert read_all(late).startswith(b"HTTP/1.1 404 Not Found\r\n")
        started = time.monotonic()
        assert read_all(idle) == b""  # closed once the grace is over
        assert time.monotonic() - started < SOFT_STOP_GRACE
        assert worker.process.poll() is None  # the busy one is still being served
        busy.sendall(b"\r\n")
        assert read_all(busy).startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert worker.recv(request_id).status == OK
    assert worker.process.wait(10) == 0


def test_a_draining_worker_does_not_start_accepting_again(worker: Worker) -> None:
    """A listener activated while the worker soft-stops (a change made during a worker
    upgrade reaches the old worker too) is recorded, not served by it."""
    with socket.create_connection(("127.0.0.1", worker.port()), timeout=10) as busy:
        busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        wait_for(lambda: worker.counts().get("client.connections") == 1, what="busy session")
        stop_id = worker.send(Request(soft_stop=SoftStop()))
        assert worker.recv(stop_id).status == PROCESSING
        listener, address = bind_listener()
        worker.held[address] = listener
        config = HttpListenerConfig(address=to_proto(address))
        assert worker.call(Request(add_http_listener=config)).status == OK
        send_listeners(worker.scm, Listeners(http={address: listener}))
        activate = ActivateListener(
            address=to_proto(address), proxy=ListenerType.HTTP, from_scm=True
        )
        assert worker.call(Request(activate_listener=activate)).status == OK
        with socket.create_connection(("127.0.0.1", worker.port(address)), timeout=0.5) as new:
            new.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(TimeoutError):
                new.recv(65536)  # queued in the backlog: nobody accepts it any more
        busy.sendall(b"\r\n")
        assert read_all(busy).startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert worker.recv(stop_id).status == OK
    assert worker.process.wait(10) == 0


def test_closing_the_channel_makes_the_worker_exit(worker: Worker) -> None:
    worker.channel.close()
    assert worker.process.wait(10) == 1


def test_started_through_the_cli_entry_point(start: Callable[..., Worker]) -> None:
    worker = start(cli=True)
    assert worker.get("nowhere").status == 404
    assert worker.call(Request(hard_stop=HardStop())).status == OK
    assert worker.process.wait(10) == 0


def test_garbage_on_the_channel_is_skipped(worker: Worker) -> None:
    worker.channel.sock.sendall((12).to_bytes(8, "little") + b"\xff\xff\xff\xff")
    assert worker.call(Request(status=Status())).status == OK
    worker.channel.sock.sendall((3).to_bytes(8, "little"))  # shorter than its own prefix
    with pytest.raises(FrameError) as error:
        worker.channel.recv(10)
    assert error.value.kind == FrameErrorKind.CLOSED
    assert worker.process.wait(10) == 1
