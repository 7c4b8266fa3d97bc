"""A real worker process with HTTPS and TCP listeners, for the TLS, TCP and access log tests.

The test plays the supervisor as in test_worker.py: it binds the listeners of a TOML config,
writes the initial state, starts `sozu worker`-equivalent code with `pass_fds`, sends the
ServerConfig, the listening sockets and `INITIAL-STATUS-N`, then WorkerRequests and traffic.

`run_worker` (executed in the child) starts `sozu.worker.main.run`; if the worker server does
not build an `Edge` itself yet, it wires one in from outside with the hooks listed in
`sozu.worker.listeners.Edge` (the same three calls `server.py` is to make), so these tests
exercise the TLS and TCP code whether or not server.py has been wired already.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sozu.command.channel import Channel
from sozu.command.config import parse_config
from sozu.command.proto import (
    ListenerType,
    Request,
    ResponseStatus,
    Status,
    WorkerRequest,
    WorkerResponse,
)
from sozu.command.scm import Listeners, send_listeners
from sozu.command.state import ConfigState, canonical
from tests.integration.harness import bind_listener

WORKER_ID = 4
OK, FAILURE, PROCESSING = ResponseStatus.OK, ResponseStatus.FAILURE, ResponseStatus.PROCESSING


@dataclass
class EdgeWorker:
    process: subprocess.Popen[bytes]
    channel: Channel[WorkerRequest, WorkerResponse]
    scm: socket.socket
    addresses: dict[str, str]  # "https" / "tcp" -> listener address
    held: list[socket.socket] = field(default_factory=list)
    counter: int = 0

    def call(self, content: Request, timeout: float = 10.0) -> WorkerResponse:
        self.counter += 1
        request_id = f"EDGE-{self.counter}"
        self.channel.send(WorkerRequest(id=request_id, content=canonical(content)))
        while True:
            response = self.channel.recv(timeout)
            assert response.id == request_id, response
            if response.status != PROCESSING:
                return response

    def port(self, kind: str) -> int:
        return int(self.addresses[kind].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        self.channel.close()
        self.scm.close()
        for sock in self.held:
            sock.close()


def spawn(
    tmp_path: Path,
    toml: Callable[[dict[str, str]], str],
    listeners: dict[str, str] | None = None,
) -> EdgeWorker:
    """Start a worker whose config is `toml(addresses)`. `listeners` maps a name to a kind
    (`http`, `tls`, `tcp`): each is bound on a free port, named in `addresses` and sent over
    SCM; by default "https" (tls) and "tcp"."""
    kinds = listeners if listeners is not None else {"https": "tls", "tcp": "tcp"}
    bound = {name: bind_listener() for name in kinds}
    addresses = {name: address for name, (_, address) in bound.items()}
    config = parse_config(toml(addresses), tmp_path / "config.toml")
    state = ConfigState()
    for request in config.requests():
        state.apply(request)
    channel_parent, channel_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    scm_parent, scm_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = (channel_child.fileno(), scm_child.fileno())
    with tempfile.TemporaryFile() as state_file:
        state_file.write(state.initial_state("SAVE").SerializeToString())
        state_file.flush()
        state_file.seek(0)
        args = (WORKER_ID, *fds, state_file.fileno(), 1_000_000, 2_000_000)
        code = f"from tests.integration.edge_worker import run_worker; run_worker{args!r}"
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(*fds, state_file.fileno()),
            cwd=Path(__file__).resolve().parents[2],
        )
    channel_child.close()
    scm_child.close()
    channel: Channel[WorkerRequest, WorkerResponse] = Channel(channel_parent, WorkerResponse)
    worker = EdgeWorker(process, channel, scm_parent, addresses, [s for s, _ in bound.values()])
    try:
        channel.send(config.server_config())  # type: ignore[arg-type]
        by_kind: dict[str, dict[str, socket.socket]] = {"http": {}, "tls": {}, "tcp": {}}
        for name, kind in kinds.items():
            by_kind[kind][addresses[name]] = bound[name][0]
        send_listeners(scm_parent, Listeners(**by_kind))
        status_id = f"INITIAL-STATUS-{WORKER_ID}"
        channel.send(WorkerRequest(id=status_id, content=Request(status=Status())))
        answer = channel.recv(15)
        assert (answer.id, answer.status) == (status_id, OK), answer
    except BaseException:
        worker.stop()
        raise
    return worker


def run_worker(*args: Any) -> None:
    """The child: sozu.worker.main.run, with the Edge hooks wired in if server.py lacks them."""
    from sozu.worker import server as server_module

    cls = server_module.WorkerServer
    if not _wired(cls):
        _wire(cls)
    from sozu.worker.main import run

    raise SystemExit(run(*args))


def _wired(cls: type) -> bool:
    import inspect

    source = inspect.getsource(cls)
    return re.search(r"\bEdge\(", source) is not None


def _wire(cls: Any) -> None:
    from sozu.worker.access_log import AccessLog
    from sozu.worker.listeners import Edge
    from sozu.worker.server import failure
    from sozu.worker.session import HttpSession, new_request_id

    init, factory, change = cls.__init__, cls._factory, cls._change

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.access_log = AccessLog.from_server_config(self.config, tag=f"WRK-{self.id:02d}")
        backends = getattr(self, "backends", None)
        self.edge = Edge(self.state, self.hub, backends, self.access_log, new_request_id)
        pool, edge = self.pool, self.edge
        activate = pool.activate

        async def activate_tls(kind: int, address: str, make: Any, ssl_context: Any = None) -> None:
            if ssl_context is None and kind == ListenerType.HTTPS:
                ssl_context = edge.ssl_context(address)
            await activate(kind, address, make, ssl_context)

        pool.activate = activate_tls

    def _factory(self: Any, kind: int, address: str) -> Any:
        if kind == ListenerType.HTTPS:
            view = self._listener_view(kind, address)
            hub = self.hub
            return lambda: HttpSession(hub, view)
        if kind == ListenerType.TCP:
            return self.edge.tcp_factory(address)
        return factory(self, kind, address)

    def _change(self: Any, request: WorkerRequest) -> WorkerResponse:
        response = change(self, request)
        if response.status == OK:
            problems = self.edge.changed(request.content)
            if problems:
                return failure(request.id, "; ".join(problems))
        return cast(WorkerResponse, response)

    cls.__init__, cls._factory, cls._change = __init__, _factory, _change
