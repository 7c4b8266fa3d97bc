"""`sozu start`: from a configuration file to a running supervisor, and back to an exit code.

Start-up, in order: load the configuration (an unusable one is one line on stderr, exit 1);
build the main state from it and, when `saved_state` names an existing file, load that file on
top (each record the state refuses is reported); bind the command socket (mode 0600) and every
active listener; with `--daemonize`, detach (python-daemon; the working directory is kept, so
relative paths keep their meaning, and the shell gets its exit status only once the daemon is
ready or has failed); write `pid_file_path`; then run the supervisor on one asyncio loop
(uvloop when importable) until a stop. Whatever the way out, every worker is killed and reaped,
the listening sockets are closed and the command socket and pid files are removed, except when
a new main process took over (main upgrade): then everything is left to it. Likewise a new main
process that never took over leaves everything to the old one.

`sozu main --fd F --upgrade-fd U` (`run_upgraded`) is that new main process: it rebuilds the
supervisor from the upgrade record instead of the configuration file (doc/upgrade.md).

This is the only module that imports python-daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sozu import __version__
from sozu.command.config import Config, load_config
from sozu.command.errors import ConfigError, ExitCode, SozuError
from sozu.command.logging import LoggingError, get_logger, setup_logging
from sozu.command.state import ConfigState, StateError
from sozu.command.state_file import LoadError, parse_records, read_state_file
from sozu.supervisor.audit import AuditLog
from sozu.supervisor.gathering import request_name
from sozu.supervisor.listeners import ListenerSockets
from sozu.supervisor.requests import already_in_place, present_requests
from sozu.supervisor.server import CommandSocket, Supervisor
from sozu.supervisor.upgrade import adoptable_workers, confirm_take_over, executable_command
from sozu.supervisor.upgrade_record import UpgradeRecord, UpgradeRecordError, decode
from sozu.supervisor.workers import WORKER_COMMAND

log = get_logger("sozu.supervisor.main")


@dataclass
class Prepared:
    """What start-up made before the supervisor runs (all of it released by `release`)."""

    state: ConfigState
    counts: collections.Counter[str]
    saved: SavedState | None
    command_socket: CommandSocket
    listeners: ListenerSockets

    def fds(self) -> list[int]:
        return [
            self.command_socket.sock.fileno(),
            *(s.fileno() for s in self.listeners.all().all()),
        ]

    def release(self, *, keep_socket_file: bool = False) -> None:
        """Close our sockets; remove the socket file unless another main process serves it
        (the new one after a hand-over, the old one when we never took over)."""
        self.listeners.close_all()
        self.command_socket.close()
        if not keep_socket_file:
            self.command_socket.remove()


def start(
    config_path: Path, daemonize: bool, *, worker_command: tuple[str, ...] = WORKER_COMMAND
) -> int:
    """Run the supervisor for `config_path`; returns the process exit code.

    `worker_command` is the argv prefix a worker is started with (the worker flags follow).
    """
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # A daemon logs to its real target only once detached: python-daemon closes every file
    # opened before, and a log file's descriptor number could be reused by then.
    early_target = "stderr" if daemonize else config.log_target
    try:
        setup_logging(config.log_level, early_target, config.log_colored, process="main")
        prepared = prepare(config)
    except SozuError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    report: Callable[[str], None] | None = None
    if daemonize:
        try:
            parent_code, report = _detach(prepared.fds())
        except BaseException:
            prepared.release()
            raise
        if parent_code is not None:
            return parent_code
        try:
            setup_logging(config.log_level, config.log_target, config.log_colored, process="main")
        except LoggingError as error:
            report(f"error: {error}")
            prepared.release()
            return int(ExitCode.FAILURE)
    return run(config, prepared, report, worker_command=worker_command)


def prepare(config: Config) -> Prepared:
    """Main state (config, then saved state), command socket, listening sockets."""
    requests = config.requests()
    state = ConfigState.from_requests(requests)
    counts = collections.Counter(request_name(request) for request in requests)
    saved = None
    if config.saved_state is not None and config.saved_state.exists():
        saved = load_saved_state(config.saved_state, state)
        counts.update(saved.applied)
    command_socket = CommandSocket.bind(config.command_socket)
    listeners = ListenerSockets()
    try:
        listeners.bind_active(state)
    except SozuError:
        command_socket.close()
        command_socket.remove()
        raise
    return Prepared(state, counts, saved, command_socket, listeners)


@dataclass
class SavedState:
    """What loading `saved_state` at start-up did."""

    applied: list[str] = field(default_factory=list)  # request names, for the request counts
    in_place: int = 0  # records the configuration had already set up
    errors: list[str] = field(default_factory=list)


def load_saved_state(path: Path, state: ConfigState) -> SavedState:
    """Apply `saved_state` on top of the configuration's state, record by record."""
    result = SavedState()
    parsed, corrupt = parse_records(read_state_file(path))
    result.errors.extend(str(error) for error in corrupt)
    present = present_requests(state)
    for index, record in parsed:
        try:
            state.apply(record.content)
        except StateError as error:
            if already_in_place(present, record.content, error):
                result.in_place += 1
            else:
                result.errors.append(str(LoadError(index, record.id, error.message, refused=True)))
        else:
            result.applied.append(request_name(record.content))
    return result


def _report_saved_state(config: Config, saved: SavedState | None) -> None:
    if saved is None:
        return
    for error in saved.errors:
        log.warning("saved_state_record_skipped", path=str(config.saved_state), error=error)
    log.info(
        "saved_state_loaded",
        path=str(config.saved_state),
        applied=len(saved.applied),
        already_in_place=saved.in_place,
        errors=len(saved.errors),
    )


def run(
    config: Config,
    prepared: Prepared,
    report: Callable[[str], None] | None = None,
    *,
    worker_command: tuple[str, ...] = WORKER_COMMAND,
) -> int:
    """Run the supervisor until it stops; always leaves no worker and no socket file behind."""
    pid_file = PidFile(config)
    pid_file.write()
    audit = AuditLog(
        text_path=config.audit_logs_target,
        json_path=config.audit_logs_json_target,
        boot_generation=0,
        sozu_version=__version__,
        colored=config.log_colored,
    )
    supervisor = Supervisor(
        config,
        prepared.state,
        prepared.listeners,
        prepared.command_socket,
        audit,
        request_counts=prepared.counts,
        worker_command=worker_command,
    )
    supervisor.executable = executable_command()
    _report_saved_state(config, prepared.saved)

    def ready() -> None:
        if report is not None:
            report("ok")

    def failed_start() -> None:
        if report is not None and not supervisor.started:
            report(f"error: {supervisor.startup_error or 'sozu stopped during start-up'}")

    serving = partial(supervisor.run, ready)
    return _serve(supervisor, serving, prepared, audit, pid_file, failed_start)


# --- the new main process of a main upgrade ------------------------------------------------


def run_upgraded(confirm_fd: int, upgrade_fd: int) -> int:
    """`sozu main --fd F --upgrade-fd U`: take over from the main process that started us.

    Reads the upgrade record from U, adopts the command socket, listeners and workers it names,
    confirms with a framed `true` on F and waits for the old main's go-ahead byte, then writes
    the pid file and serves. Any failure before the go-ahead is exit 1 (one line on stderr when
    foreseen) and touches nothing we only borrowed: the old main process keeps serving.
    """
    parent_pid = os.getppid()
    try:
        record = _read_record(upgrade_fd)
    except (OSError, UpgradeRecordError) as error:
        print(f"error: cannot read the upgrade record: {error}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    config = record.config
    try:
        setup_logging(config.log_level, config.log_target, config.log_colored, process="main")
        prepared = _adopt(record)
    except (SozuError, OSError) as error:
        print(f"error: cannot take over: {error}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    confirm_sock = socket.socket(fileno=confirm_fd)
    confirm_sock.set_inheritable(False)
    pid_file = PidFile(config)
    audit = AuditLog(
        text_path=config.audit_logs_target,
        json_path=config.audit_logs_json_target,
        boot_generation=record.boot_generation,
        sozu_version=__version__,
        colored=config.log_colored,
    )
    supervisor = Supervisor(
        config, prepared.state, prepared.listeners, prepared.command_socket, audit,
        request_counts=prepared.counts, owned=False,
    )  # fmt: skip
    supervisor.executable = executable_command()
    supervisor.resume_counters(record.next_client_id, record.next_task_id)
    supervisor.workers.next_id = record.next_worker_id
    entries = adoptable_workers(record.workers)

    def confirm() -> bool:
        # The old main gave itself worker_timeout from our start; twice that, plus a margin,
        # means a go-ahead sent late (a stalled loop) is still heard rather than lost.
        wait = 2.0 * float(config.worker_timeout) + 1.0
        if not confirm_take_over(confirm_sock, config.max_command_buffer_size, wait):
            return False
        pid_file.write()
        return True

    return _serve(
        supervisor,
        partial(supervisor.run_adopted, entries, confirm, parent_pid),
        prepared,
        audit,
        pid_file,
    )


def _read_record(upgrade_fd: int) -> UpgradeRecord:
    os.lseek(upgrade_fd, 0, os.SEEK_SET)
    with os.fdopen(upgrade_fd, "rb") as record_file:
        return decode(record_file.read())


def _adopt(record: UpgradeRecord) -> Prepared:
    """The state, command socket and listening sockets of the record (workers come later)."""
    try:
        state = ConfigState.from_requests(record.requests)
    except StateError as error:
        raise SozuError(f"the state in the upgrade record is refused: {error}") from None
    command_socket = CommandSocket.adopt(record.command_socket_fd, record.config.command_socket)
    listeners = ListenerSockets()
    for kind, table in record.listeners.items():
        for address, fd in table.items():
            listeners.adopt(kind, address, fd)
    counts = collections.Counter(record.request_counts)
    return Prepared(state, counts, None, command_socket, listeners)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# --- pid file ------------------------------------------------------------------------------


class PidFile:
    """`pid_file_path`: written once we are the main process, removed only while it names us."""

    def __init__(self, config: Config) -> None:
        self.path = Path(config.pid_file_path).absolute() if config.pid_file_path else None
        self.written = False

    def write(self) -> None:
        if self.path is None:
            return
        try:
            self.path.write_text(f"{os.getpid()}\n")
        except OSError as error:
            log.error("pid_file_not_written", path=str(self.path), error=str(error))
            return
        self.written = True

    def remove(self) -> None:
        if self.path is None or not self.written:
            return
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()


# --- daemonizing ---------------------------------------------------------------------------


def _detach(preserve: list[int]) -> tuple[int | None, Callable[[str], None]]:
    """Fork, and detach the child with python-daemon.

    In the original process, returns (exit code, _) once the daemon reported `ok` (0) or an
    error (1, printed on stderr). In the daemon, returns (None, report) where `report(text)`
    sends that one status line to the original process.
    """
    import daemon

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        chunks = []
        with os.fdopen(read_end, "rb") as status:
            while chunk := status.read(4096):
                chunks.append(chunk)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        text = b"".join(chunks).decode("utf-8", errors="replace").strip()
        if text == "ok":
            return int(ExitCode.OK), _ignore
        print(text or "error: sozu exited during start-up", file=sys.stderr)
        return int(ExitCode.FAILURE), _ignore
    os.close(read_end)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        context = daemon.DaemonContext(
            working_directory=os.getcwd(),
            umask=umask,
            detach_process=True,
            files_preserve=[write_end, *preserve],
            signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
        )
        context.open()
        # python-daemon points 0, 1 and 2 at /dev/null with descriptors that are close-on-exec
        # when they land on their own number; workers must inherit them.
        for fd in (0, 1, 2):
            os.set_inheritable(fd, True)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.write(write_end, f"error: cannot daemonize: {error}\n".encode())
        os._exit(int(ExitCode.FAILURE))

    def report(text: str) -> None:
        nonlocal write_end
        if write_end < 0:
            return
        with contextlib.suppress(OSError):
            os.write(write_end, (text + "\n").encode())
            os.close(write_end)
        write_end = -1

    return None, report


def _ignore(_text: str) -> None:
    return None


def _serve(
    supervisor: Supervisor,
    serving: Callable[[], Coroutine[Any, Any, int]],
    prepared: Prepared,
    audit: AuditLog,
    pid_file: PidFile,
    on_exit: Callable[[], None] | None = None,
) -> int:
    """Run the supervisor's loop, then clean up whatever the way out: workers killed and
    reaped, sockets released, audit closed, pid file gone; but a main process that handed over
    to a new one, or a new one that never took over, leaves workers and files to the other."""
    code = int(ExitCode.FAILURE)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(serving())
    except KeyboardInterrupt:
        code = int(ExitCode.FAILURE)
    finally:
        owner = supervisor.owns_everything
        if owner:
            supervisor.workers.kill_all_now()
        prepared.release(keep_socket_file=not owner)
        audit.close()
        if owner:
            pid_file.remove()
        if on_exit is not None:
            on_exit()
        log.info("supervisor_stopped", code=code)
    return code
