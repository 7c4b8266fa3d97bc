"""End-to-end fixtures: a real `sozu start` subprocess on a temporary config, driven by the CLI.

Every process a test starts is stopped by pid when the test ends (the current main process first
with SIGTERM, then every main and worker pid ever seen with SIGKILL: after a main upgrade they
are nobody's children here), so a failing test leaves no worker serving.

`start(launcher=True)` starts sozu through an executable `bin/sozu` script in the work folder, so
that a main upgrade re-executes that file: a test replaces it to simulate a broken new binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from sozu.command.channel import Channel
from sozu.command.proto import Request, Response, ResponseStatus
from sozu.demo.backend import serve

if TYPE_CHECKING:
    from tests.e2e.slow_backend import SlowBackend

STARTUP_SECONDS = 30.0


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Sozu:
    """One running supervisor and the means to talk to it."""

    workdir: Path
    config_path: Path
    socket_path: Path
    http_port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    launcher: Path = field(init=False)
    seen_pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "sozu.log"
        self.launcher = self.workdir / "bin" / "sozu"

    def start(
        self,
        wait_workers: int | None = None,
        *,
        launcher: bool = False,
        env: dict[str, str] | None = None,
        launcher_script: str | None = None,
    ) -> None:
        """`launcher_script` (with `launcher=True`): what `bin/sozu` holds instead of LAUNCHER."""
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "sozu"]
        if launcher:
            self.replace_launcher(launcher_script or LAUNCHER.format(python=sys.executable))
            command = [str(self.launcher)]
        self.process = subprocess.Popen(
            [*command, "-c", str(self.config_path), "start"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=None if env is None else {**os.environ, **env},
        )
        log.close()
        if wait_workers is not None:
            wait_for(lambda: self.running_workers() == wait_workers, STARTUP_SECONDS,
                     f"{wait_workers} running workers; log:\n{self.log()}")  # fmt: skip

    def replace_launcher(self, script: str) -> None:
        """Atomically install `script` as `bin/sozu` (what the next main upgrade starts)."""
        self.launcher.parent.mkdir(exist_ok=True)
        fresh = self.launcher.with_name("sozu.new")
        fresh.write_text(script)
        fresh.chmod(0o755)
        os.replace(fresh, self.launcher)

    def main_pid(self) -> int | None:
        """The current main process: the pid file's (after upgrades), else the one we started."""
        pid_file = self.workdir / "sozu.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None if self.process is None else self.process.pid

    def listed_workers(self) -> dict[int, tuple[int, int]]:
        """worker id -> (pid, run state), as the main process lists them ({} if it does not)."""
        from sozu.command.proto import ListWorkers

        try:
            response = self.send(Request(list_workers=ListWorkers()), timeout=5)
        except Exception:
            return {}
        return {info.id: (info.pid, info.run_state) for info in response.content.workers.vec}

    def remember_pids(self) -> None:
        """Note the current main and worker pids, for `stop()` to kill whatever outlives it."""
        main = self.main_pid()
        if main is not None:
            self.seen_pids.add(main)
        self.seen_pids.update(pid for pid, _state in self.listed_workers().values())
        self.seen_pids.update(self.worker_pids())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *words: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `sozu -c CONFIG WORDS...` as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "sozu", "-c", str(self.config_path), *words],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def send(self, request: Request, timeout: float = 10.0) -> Response:
        """Send one Request on a fresh connection and return the final (non-PROCESSING) answer."""
        channel: Channel[Request, Response] = Channel.connect(str(self.socket_path), Response)
        with channel:
            channel.send(request)
            while True:
                response = channel.recv(timeout=timeout)
                if response.status != ResponseStatus.PROCESSING:
                    return response

    def running_workers(self) -> int:
        """Workers the supervisor reports RUNNING, 0 while it does not answer yet."""
        from sozu.command.proto import ListWorkers, RunState

        if not self.socket_path.exists():
            return 0
        try:
            response = self.send(Request(list_workers=ListWorkers()), timeout=2)
        except (OSError, Exception):
            return 0
        infos = response.content.workers.vec
        return sum(1 for info in infos if info.run_state == RunState.RUNNING)

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left of the supervisor and its workers."""
        if self.process is None:
            return
        leftovers = self.worker_pids()
        current = self.main_pid()
        if current is not None and current != self.process.pid:  # upgraded: not our child
            self.remember_pids()
            with contextlib.suppress(psutil.Error):
                main = psutil.Process(current)
                main.terminate()
                psutil.wait_procs([main], timeout=10)
        for pid in self.seen_pids - {self.process.pid}:
            with contextlib.suppress(psutil.Error):
                if "sozu" in " ".join(psutil.Process(pid).cmdline()):
                    os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


LAUNCHER = """#!{python}
import sys

from sozu.cli.main import main

sys.exit(main())
"""

BASE_CONFIG = """
command_socket = "sozu.sock"
worker_count = {workers}
worker_timeout = 5
log_level = "info"
{extra}

[[listeners]]
protocol = "http"
address = "127.0.0.1:{http_port}"
"""


@pytest.fixture
def make_sozu(tmp_path: Path) -> Iterator[Callable[..., Sozu]]:
    """Factory: write a config (with an http listener on a free port) and start sozu on it."""
    started: list[Sozu] = []

    def make(workers: int = 2, extra: str = "", clusters: str = "", start: bool = True) -> Sozu:
        workdir = tmp_path / f"sozu{len(started)}"
        workdir.mkdir()
        port = free_port()
        config = workdir / "config.toml"
        config.write_text(
            BASE_CONFIG.format(workers=workers, extra=extra, http_port=port) + clusters
        )
        sozu = Sozu(workdir, config, workdir / "sozu.sock", port)
        started.append(sozu)
        if start:
            sozu.start(wait_workers=workers)
        return sozu

    yield make
    for sozu in started:
        sozu.stop()


class Backends:
    """Demo backends, each answering with its own name, on a loop in a background thread."""

    def __init__(self, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = [
            asyncio.run_coroutine_threadsafe(
                serve("127.0.0.1", port, f"b{index}"), self.loop
            ).result(10)
            for index, port in enumerate(self.ports)
        ]

    def close(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def backends() -> Iterator[Callable[[int], Backends]]:
    made: list[Backends] = []

    def make(count: int) -> Backends:
        made.append(Backends(count))
        return made[-1]

    yield make
    for group in made:
        group.close()


@pytest.fixture
def slow_backend() -> Iterator[SlowBackend]:
    """A backend answering after SLOW_SECONDS (tests/e2e/slow_backend.py)."""
    from tests.e2e.slow_backend import SlowBackend

    backend = SlowBackend()
    yield backend
    backend.close()
