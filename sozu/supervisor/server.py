"""The supervisor: the main state, the command socket, the workers, and how it all stops.

`CommandSocket` binds the unix socket clients talk to (mode 0600; a stale socket file is
replaced, anything else at that path is refused). `Supervisor` owns everything the main process
holds at run time: the `ConfigState`, the listening sockets, the worker pool, the audit log and
the event hub. It accepts any number of concurrent clients (one task per client, requests of a
client handled in order), applies changes to the main state together with their side effects on
listening sockets, replaces workers that die, and runs the stop sequence (SIGTERM or SoftStop:
drain; SIGINT, SIGQUIT or HardStop: close now). What each verb does lives in `requests.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sozu.command import logging as sozu_logging
from sozu.command.channel import AsyncChannel
from sozu.command.config import Config
from sozu.command.errors import SozuError
from sozu.command.logging import get_logger
from sozu.command.proto import (
    Event,
    EventKind,
    HardStop,
    Request,
    Response,
    ResponseStatus,
    RunState,
    ServerConfig,
    SoftStop,
    Status,
    WorkerRequest,
)
from sozu.command.scm import ScmError
from sozu.command.state import Applied, ConfigState, StateError
from sozu.command.state_file import StateFileError, save_state
from sozu.supervisor import notify, requests
from sozu.supervisor.audit import (
    ERROR_OTHER,
    RESULT_ERR,
    RESULT_OK,
    AuditLog,
    AuditSubject,
    ClientContext,
    describe,
    new_ulid,
)
from sozu.supervisor.events import EventHub
from sozu.supervisor.gathering import Scatter, request_name, scatter
from sozu.supervisor.listeners import ListenerSockets
from sozu.supervisor.peer import peer_credentials
from sozu.supervisor.sessions import ClientSession
from sozu.supervisor.upgrade_record import WorkerEntry
from sozu.supervisor.workers import (
    WORKER_COMMAND,
    ProcessingCallback,
    Worker,
    WorkerPool,
    WorkerSpawnError,
)

log = get_logger("sozu.supervisor.server")

SOCKET_MODE = 0o600
ACCEPT_BACKLOG = 128
PROBE_SECONDS = 1.0
QUICK_DEATH_SECONDS = 1.0
MAX_RESTART_DELAY = 10.0
CLIENT_CLOSE_SECONDS = 2.0
PARENT_EXIT_SECONDS = 5.0

_ADD_LISTENER = frozenset(
    {"add_http_listener", "add_https_listener", "add_tcp_listener", "add_udp_listener"}
)


class CommandSocketError(SozuError):
    """The command socket cannot be created."""


class CommandSocket:
    """The listening unix socket of the command channel, and the file it lives at."""

    def __init__(self, path: Path, sock: socket.socket, identity: tuple[int, int]) -> None:
        self.path = path
        self.sock = sock
        self._identity = identity

    @classmethod
    def bind(cls, path: Path) -> CommandSocket:
        """Bind `path` with mode 0600, replacing a stale socket; refuse anything else there."""
        text = str(path)
        try:
            info: os.stat_result | None = os.lstat(text)
        except FileNotFoundError:
            info = None
        except OSError as error:
            raise CommandSocketError(
                f"cannot use command socket {text}: {error.strerror}"
            ) from None
        if info is not None:
            if not stat.S_ISSOCK(info.st_mode):
                raise CommandSocketError(
                    f"command socket path {text} exists and is not a socket; refusing to replace it"
                )
            if _socket_answers(text):
                raise CommandSocketError(
                    f"another sozu is already running on command socket {text}"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(text)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            sock.bind(text)
            os.chmod(text, SOCKET_MODE)
            sock.listen(ACCEPT_BACKLOG)
            sock.setblocking(False)
            created = os.stat(text)
        except OSError as error:
            sock.close()
            reason = error.strerror or str(error)
            raise CommandSocketError(f"cannot bind command socket {text}: {reason}") from None
        finally:
            os.umask(previous)
        return cls(path, sock, (created.st_dev, created.st_ino))

    @classmethod
    def adopt(cls, fd: int, path: Path) -> CommandSocket:
        """The listening socket a previous main process bound at `path` (main upgrade)."""
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        try:
            bound = sock.getsockname()
            if bound != str(path):
                raise CommandSocketError(
                    f"descriptor {fd} is bound to {bound!r}, not the command socket {path}"
                )
            sock.setblocking(False)
            created = os.stat(path)
        except OSError as error:
            sock.close()
            raise CommandSocketError(f"cannot adopt command socket {path}: {error}") from None
        except CommandSocketError:
            sock.close()
            raise
        return cls(path, sock, (created.st_dev, created.st_ino))

    def close(self) -> None:
        self.sock.close()

    def remove(self) -> None:
        """Unlink the socket file, unless another process replaced it since."""
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)


def _socket_answers(path: str) -> bool:
    """True when something accepts connections on the unix socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_SECONDS)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # a live process with a full accept queue
    except OSError as error:
        raise CommandSocketError(
            f"cannot tell whether command socket {path} is in use: {error.strerror}"
        ) from None
    finally:
        probe.close()
    return True


class Supervisor:
    """Everything the main process holds while it runs; see the module docstring."""

    def __init__(
        self,
        config: Config,
        state: ConfigState,
        listeners: ListenerSockets,
        command_socket: CommandSocket,
        audit: AuditLog,
        *,
        request_counts: collections.Counter[str] | None = None,
        worker_command: tuple[str, ...] = WORKER_COMMAND,
        owned: bool = True,
    ) -> None:
        self.config = config
        self.state = state
        self.listeners = listeners
        self.command_socket = command_socket
        self.audit = audit
        self.events = EventHub()
        self.request_counts: collections.Counter[str] = request_counts or collections.Counter()
        self.log_level = config.log_level
        self.max_connections_per_ip = config.max_connections_per_ip
        self.workers = WorkerPool(
            server_config=self.server_config,
            initial_state=lambda: self.state.initial_state("SAVE"),
            listeners=self.listeners.all,
            on_event=self._worker_event,
            on_lost=self._worker_lost,
            buffer_size=config.command_buffer_size,
            max_buffer_size=config.max_command_buffer_size,
            process_affinity=config.handle_process_affinity,
            command=worker_command,
            extra_arguments=config.worker_arguments(),
        )
        self.sessions: set[ClientSession] = set()
        self.stopping = False
        self.upgrading = False  # a main upgrade is in progress: other changes wait
        self.handed_over = False  # a new main process took over: leave workers and socket be
        # False in a new main process until the old one let it take over: until then the
        # workers, sockets and files it holds are only borrowed, never to be killed or removed.
        self.owned = owned
        self.worker_upgrades = 0  # `UpgradeWorker` requests under way (a main upgrade waits)
        self.executable: tuple[str, ...] = ()  # what a main upgrade starts (set at start-up)
        self.started = False
        self.startup_error: str | None = None
        self._hard = False
        self._stop_task: asyncio.Task[None] | None = None
        self._stop_requesters: list[ClientSession] = []
        self._done: asyncio.Event | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._restart_handle: asyncio.TimerHandle | None = None
        self._quick_deaths = 0
        self._deferred_signal: int | None = None
        self._successor_pid: int | None = None
        self._next_client_id = 0
        self._next_task_id = 0

    # --- running -------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start the workers, serve the command socket until a stop completes; exit code."""
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._install_signals(loop)
        try:
            try:
                for _ in range(self.config.worker_count):
                    self.workers.spawn()
            except WorkerSpawnError as error:
                self.startup_error = str(error)
                log.error("startup_failed", error=self.startup_error)
                return 1
            started = await self._wait_started()
            if self.stopping:  # a stop signal during start-up
                await self._done.wait()
                return 0
            if not started:
                return 1
            self.started = True
            if not self.stopping:
                self._accept_task = asyncio.ensure_future(self._accept_loop())
                requests.notify_safely(notify.READY)
                log.info(
                    "supervisor_ready",
                    workers=len(self.workers.alive()),
                    listeners=self.listeners.count(),
                    command_socket=str(self.command_socket.path),
                )
                if on_ready is not None:
                    on_ready()
            await self._done.wait()
            return 0
        finally:
            self._remove_signals(loop)
            await self._shutdown()

    async def run_adopted(
        self, entries: list[WorkerEntry], confirm: Callable[[], bool], parent_pid: int
    ) -> int:
        """The new main of a main upgrade: adopt the workers, confirm, then serve until a stop.

        Nothing is read from a shared socket (command socket, worker channels) before `confirm()`
        succeeded: until then the previous main process may still decide to go on serving, and
        whatever happens here (an exception, a signal) leaves everything to it (`owned`).
        """
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self.upgrading = True  # a stop signal waits until we hold everything
        self._install_signals(loop)
        try:
            adopted = [self.workers.adopt(entry) for entry in entries]
            if not confirm():
                return 1
            self.owned = True
            for worker in adopted:
                self.workers.watch_adopted(worker)
            self.started = True
            self._accept_task = asyncio.ensure_future(self._accept_loop())
            self.upgrade_ended(None)
            log.info(
                "supervisor_took_over",
                workers=len(adopted),
                listeners=self.listeners.count(),
                boot_generation=self.audit.boot_generation,
            )
            self._background(self._announce_ready(parent_pid))
            self._background(self._check_adopted(adopted))
            await self._done.wait()
            return 0
        finally:
            self._remove_signals(loop)
            await self._shutdown()

    @property
    def owns_everything(self) -> bool:
        """True when the workers and the socket file are ours to kill and remove at exit."""
        return self.owned and not self.handed_over

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    async def _announce_ready(self, parent_pid: int) -> None:
        """`MAINPID` + `READY=1` once the previous main process is gone (bounded)."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(parent_pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            gone: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not gone.done():
                    gone.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await asyncio.wait_for(gone, timeout=PARENT_EXIT_SECONDS)
            except TimeoutError:
                log.warning("previous_main_still_running", pid=parent_pid)
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        requests.notify_safely(f"MAINPID={os.getpid()}\n{notify.READY}")

    async def _check_adopted(self, adopted: list[Worker]) -> None:
        """Ask each adopted worker for its status, then top the pool up to `worker_count`."""
        futures = {
            worker: worker.send(
                WorkerRequest(id=f"UPGRADE-STATUS-{worker.id}", content=Request(status=Status()))
            )
            for worker in adopted
        }
        if futures:
            await asyncio.wait(futures.values(), timeout=self.config.worker_timeout)
        for worker, future in futures.items():
            answered = (
                future.done()
                and not future.cancelled()
                and future.exception() is None
                and future.result().status == ResponseStatus.OK
            )
            if not future.done():
                worker.forget(f"UPGRADE-STATUS-{worker.id}")
            if not answered and not worker.lost:
                log.warning("adopted_worker_not_answering", worker_id=worker.id, pid=worker.pid)
                worker.run_state = RunState.NOT_ANSWERING
        self._restart_workers()

    async def stop_accepting(self) -> None:
        """Accept no more clients (the new main process accepts them from now on)."""
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None

    def resume_accepting(self) -> None:
        """Accept clients again (a main upgrade failed after `stop_accepting`)."""
        if self._accept_task is None and not self.handed_over and not self.stopping:
            self._accept_task = asyncio.ensure_future(self._accept_loop())

    def hand_over(self) -> None:
        """A new main process took over: exit, leaving workers, sockets and files untouched."""
        self.handed_over = True
        if self._restart_handle is not None:
            self._restart_handle.cancel()
            self._restart_handle = None
        assert self._done is not None
        self._done.set()

    def upgrade_ended(self, new_main_pid: int | None) -> None:
        """After a main upgrade: act on a stop signal received meanwhile (see `_on_signal`)."""
        self.upgrading = False
        self._successor_pid = new_main_pid
        signum, self._deferred_signal = self._deferred_signal, None
        if signum is None:
            return
        if new_main_pid is None:
            self._on_signal(signum)
        else:
            with contextlib.suppress(OSError):
                os.kill(new_main_pid, signum)

    def counters(self) -> tuple[int, int]:
        """(next client id, last task id): they carry over to a new main process."""
        return self._next_client_id, self._next_task_id

    def resume_counters(self, next_client_id: int, next_task_id: int) -> None:
        self._next_client_id = next_client_id
        self._next_task_id = next_task_id

    async def _wait_started(self) -> bool:
        workers = self.workers.alive()
        futures = [worker.initial_status for worker in workers if worker.initial_status]
        if futures:
            await asyncio.wait(futures, timeout=self.config.worker_timeout)
        problems = []
        for worker in workers:
            future = worker.initial_status
            if future is None or not future.done():
                problems.append(
                    f"worker {worker.id} did not answer within {self.config.worker_timeout} s"
                )
            elif future.cancelled() or future.exception() is not None:
                problems.append(f"worker {worker.id} exited during start-up ({worker.lost_reason})")
            elif future.result().status != ResponseStatus.OK:
                problems.append(f"worker {worker.id} failed to start: {future.result().message}")
        if problems and not self.stopping:
            self.startup_error = "; ".join(problems)
            log.error("startup_failed", error=self.startup_error)
            return False
        return not problems

    async def _shutdown(self) -> None:
        if self._restart_handle is not None:
            self._restart_handle.cancel()
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        self.command_socket.close()
        for task in list(self._session_tasks):
            task.cancel()
        if self._session_tasks:
            await asyncio.wait(self._session_tasks, timeout=CLIENT_CLOSE_SECONDS)
        if self.owns_everything:
            await self.workers.kill_all()

    # --- signals -------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.audit.reopen()
            sozu_logging.reopen()
            workers = self.workers.reopen_logs()
            log.info("logs_reopened", signal=name, workers_signalled=workers)
            return
        if self.upgrading or self.handed_over:
            # Worker channels are being handed over: the stop applies once the outcome is
            # known, here (failure) or in the new main process (success).
            log.info("stop_signal_deferred", signal=name)
            self._deferred_signal = signum
            if self._successor_pid is not None:
                self.upgrade_ended(self._successor_pid)
            return
        hard = signum != signal.SIGTERM
        log.info("stop_signal", signal=name, hard=hard)
        if self.stopping and (self._hard or not hard):
            return  # nothing more to do than what is under way
        request = Request(hard_stop=HardStop()) if hard else Request(soft_stop=SoftStop())
        subject = describe(request)
        if subject is not None:
            self.audit.record(
                None, subject, request_ulid=new_ulid(), result=RESULT_OK, reason=f"signal {name}"
            )
        self.publish(Event(kind=EventKind.SOZU_STOP_REQUESTED))
        self.stopping = True
        task = asyncio.ensure_future(self.stop(hard=hard))
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    # --- stopping ------------------------------------------------------------------------

    async def stop(self, hard: bool, requester: ClientSession | None = None) -> None:
        """Stop the workers (drain or now), answer who asked, then let `run()` return.

        A hard stop asked while a soft one runs kills the workers at once.
        """
        if requester is not None:
            self._stop_requesters.append(requester)
        if self._stop_task is None:
            self.stopping = True
            self._hard = hard
            self._stop_task = asyncio.ensure_future(self._stop_workers(hard))
        elif hard and not self._hard:
            self._hard = True
            log.warning("stop_escalated")
            for worker in self.workers.alive():
                worker.kill()
        await asyncio.shield(self._stop_task)

    async def _stop_workers(self, hard: bool) -> None:
        requests.notify_safely(notify.STOPPING)
        bound = float(self.config.worker_timeout)
        if not hard:
            bound += self.config.front_timeout
        log.info("workers_stopping", hard=hard, bound_seconds=bound)
        ok, errors = await self.workers.stop(hard, bound)
        log.info("workers_stopped", ok=ok, errors=errors)
        message = f"Successfully closed {ok} workers, {errors} errors, stopping the main process..."
        for session in self._stop_requesters:
            await session.ok(message)
        assert self._done is not None
        self._done.set()

    # --- the command socket --------------------------------------------------------------

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _address = await loop.sock_accept(self.command_socket.sock)
            except OSError as error:
                log.error("command_socket_accept_failed", error=str(error))
                await asyncio.sleep(0.1)
                continue
            peer = peer_credentials(client)
            context = ClientContext.accepted(
                self._next_client_id, str(self.command_socket.path), peer
            )
            self._next_client_id += 1
            log.info(
                "client_connected", client_id=context.client_id, uid=peer.uid, pid=peer.pid,
                user=peer.user, comm=peer.comm,
            )  # fmt: skip
            task = asyncio.ensure_future(self._run_session(client, context))
            self._session_tasks.add(task)
            task.add_done_callback(self._session_tasks.discard)

    async def _run_session(self, client: socket.socket, context: ClientContext) -> None:
        try:
            channel: AsyncChannel[Response, Request] = await AsyncChannel.from_socket(
                client, Request, self.config.command_buffer_size,
                self.config.max_command_buffer_size,
            )  # fmt: skip
        except OSError:
            client.close()
            return
        session = ClientSession(context, channel)
        self.sessions.add(session)
        try:
            await session.serve(self._handle, self._bad_input)
        finally:
            self.sessions.discard(session)
            log.info("client_disconnected", client_id=context.client_id)

    async def _handle(self, session: ClientSession, request: Request) -> bool:
        try:
            return await requests.handle(self, session, request)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("request_failed", client_id=session.client_id)
            await session.failure(f"internal error: {error!r}")
            return False

    def _bad_input(self, session: ClientSession, target: str, reason: str) -> None:
        requests.record_bad_input(self, session, target, reason)

    # --- changes -------------------------------------------------------------------------

    def server_config(self) -> ServerConfig:
        """The ServerConfig a new worker starts with, with the runtime settings changed since."""
        config = self.config.server_config()
        config.log_level = self.log_level
        config.max_connections_per_ip = self.max_connections_per_ip
        return config

    def count_request(self, request: Request) -> None:
        self.request_counts[request_name(request)] += 1

    def next_task(self) -> int:
        self._next_task_id += 1
        return self._next_task_id

    def apply_change(self, request: Request, *, count: bool = False) -> tuple[Request, Applied]:
        """Check and apply one change to the main state and its listening sockets.

        Returns the Request to fan out (it may differ: `active` is cleared on an added
        listener, only ActivateListener activates; ActivateListener says `from_scm` since the
        supervisor sends the socket). Raises StateError or ListenerError, changing nothing.
        Synchronous: call `scatter` right after, before any await.
        """
        if count:
            self.count_request(request)
        kind = request.WhichOneof("request_type")
        if kind in _ADD_LISTENER and getattr(request, kind).active:
            copy = Request()
            copy.CopyFrom(request)
            getattr(copy, kind).active = False
            request = copy
        if kind == "activate_listener":
            return self._activate(request)
        applied = self.state.apply(request)
        if kind == "deactivate_listener":
            self.listeners.close(
                request.deactivate_listener.proxy, request.deactivate_listener.address
            )
        elif kind == "remove_listener":
            self.listeners.close(request.remove_listener.proxy, request.remove_listener.address)
        elif kind == "set_max_connections_per_ip":
            self.max_connections_per_ip = request.set_max_connections_per_ip
        return request, applied

    def _activate(self, request: Request) -> tuple[Request, Applied]:
        activate = request.activate_listener
        kind, address = activate.proxy, activate.address
        if self.state.listener(kind, address) is None:
            return request, self.state.apply(request)  # refused: the state's own "not found"
        newly_bound = not self.listeners.holds(kind, address)
        single = self.listeners.bind(kind, address)
        try:
            applied = self.state.apply(request)
        except StateError:
            if newly_bound:
                self.listeners.close(kind, address)
            raise
        if newly_bound:
            for worker in self.workers.alive():
                try:
                    worker.send_listeners(single)
                except ScmError as error:
                    log.error("worker_listener_not_sent", worker_id=worker.id, error=str(error))
        fanned = Request()
        fanned.CopyFrom(request)
        fanned.activate_listener.from_scm = True
        return fanned, applied

    def scatter(self, request: Request, on_processing: ProcessingCallback | None = None) -> Scatter:
        """Write `request` to every live worker now; gather later."""
        return scatter(self.workers.alive(), request, self.next_task(), on_processing)

    def changed(self, applied: Applied | bool) -> None:
        """After a change: write `saved_state` when `automatic_state_save` asks for it."""
        if applied is not True and applied != Applied.CHANGED:
            return
        path = self.config.saved_state
        if not self.config.automatic_state_save or path is None:
            return
        try:
            count = save_state(path, self.state)
        except StateFileError as error:
            log.warning("automatic_state_save_failed", path=str(path), error=str(error))
        else:
            log.debug("automatic_state_saved", path=str(path), records=count)

    def publish(self, event: Event | None) -> None:
        if event is not None:
            self.events.publish(event)

    # --- workers -------------------------------------------------------------------------

    def _worker_event(self, worker: Worker, event: Event) -> None:
        self.events.publish(event, source=str(worker.id))

    def _worker_lost(self, worker: Worker) -> None:
        if self.stopping or not self.started or self.handed_over:
            return
        if worker.retiring:  # replaced by a worker upgrade: its exit was asked for
            log.info("worker_retired", worker_id=worker.id, pid=worker.pid)
            self.workers.prune(keep_stopped=self.config.worker_count)
            return
        log.warning("worker_died", worker_id=worker.id, pid=worker.pid, reason=worker.lost_reason)
        self.audit.record(
            None,
            AuditSubject("worker_killed", f"worker:{worker.id} pid:{worker.pid}"),
            request_ulid=new_ulid(),
            result=RESULT_ERR,
            error_code=ERROR_OTHER,
            reason=worker.lost_reason,
        )
        self.publish(Event(kind=EventKind.WORKER_KILLED))
        self.workers.prune(keep_stopped=self.config.worker_count)
        if not self.config.worker_automatic_restart:
            return
        lived = time.monotonic() - worker.started_at
        self._quick_deaths = self._quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
        delay = 0.0
        if self._quick_deaths > 1:
            delay = min(0.5 * 2 ** (self._quick_deaths - 2), MAX_RESTART_DELAY)
        self._schedule_restart(delay)

    def _schedule_restart(self, delay: float) -> None:
        if self._restart_handle is None:
            loop = asyncio.get_running_loop()
            self._restart_handle = loop.call_later(delay, self._restart_workers)

    def _restart_workers(self) -> None:
        self._restart_handle = None
        if self.stopping or self.handed_over:
            return
        if self.upgrading:  # the new main process tops the pool up if this one hands over
            self._schedule_restart(0.5)
            return
        missing = self.config.worker_count - self.workers.count_active()
        for _ in range(missing):
            try:
                worker = self.workers.spawn()
            except WorkerSpawnError as error:
                log.error("worker_restart_failed", error=str(error))
                self._schedule_restart(1.0)
                return
            log.info("worker_relaunched", worker_id=worker.id, pid=worker.pid)
            self.audit.record(
                None,
                AuditSubject("worker_relaunched", f"worker:{worker.id} pid:{worker.pid}"),
                request_ulid=new_ulid(),
                result=RESULT_OK,
            )
            self.publish(Event(kind=EventKind.WORKER_RELAUNCHED))
