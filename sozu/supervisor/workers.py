"""Worker processes: spawned with Sōzu's handshake, watched, answered by id, stopped, killed.

A worker is `python -m sozu worker --id N --fd F --scm S --configuration-state-fd C ...` in its
own process group (terminal signals reach the supervisor only; it decides how workers stop). The
handshake is Sōzu's: the initial state as a raw `InitialState` in an unlinked temp file, a
`ServerConfig` as the first frame on the channel, every listening socket in one SCM message, then
`WorkerRequest{INITIAL-STATUS-N, Status}` whose OK answer marks the worker RUNNING.

Everything a worker is sent is written synchronously, in the order the supervisor decided it, so
a state snapshot taken for a new worker and the changes fanned out after it can never cross. One
reader task per worker resolves the future of each request by its id; a worker whose channel
closes or whose process exits is lost once: its pending requests fail, its process is killed and
reaped, and the pool's owner is told (to restart it or not). This module knows nothing of
clients, audit or the meaning of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from sozu.command.channel import AsyncChannel, encode_message
from sozu.command.errors import SozuError
from sozu.command.framing import FrameError
from sozu.command.logging import get_logger
from sozu.command.proto import (
    Event,
    HardStop,
    InitialState,
    Request,
    ResponseStatus,
    RunState,
    ServerConfig,
    SoftStop,
    Status,
    WorkerInfo,
    WorkerRequest,
    WorkerResponse,
)
from sozu.command.scm import Listeners, ScmError, send_listeners
from sozu.supervisor.processes import AdoptedProcess, ProcessHandle
from sozu.supervisor.upgrade_record import WorkerEntry

log = get_logger("sozu.supervisor.workers")

WORKER_COMMAND = (sys.executable, "-m", "sozu", "worker")
KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05

ProcessingCallback = Callable[["Worker", WorkerResponse], None]


class WorkerSpawnError(SozuError):
    """A worker process could not be started."""


class WorkerExited(SozuError):
    """The worker a request was sent to is gone (channel closed or process exited)."""


@dataclass
class _Pending:
    future: asyncio.Future[WorkerResponse]
    on_processing: ProcessingCallback | None


class Worker:
    """One worker process and the supervisor's end of its channel and scm sockets."""

    def __init__(
        self,
        worker_id: int,
        process: ProcessHandle,
        channel_sock: socket.socket,
        scm_sock: socket.socket,
        buffer_size: int,
        max_buffer_size: int,
    ) -> None:
        self.id = worker_id
        self.process = process
        self.pid = process.pid
        self.run_state: RunState.ValueType = RunState.NOT_ANSWERING
        self.started_at = time.monotonic()
        self.scm = scm_sock
        self.lost_reason: str | None = None
        self.retiring = False  # being replaced by a worker upgrade: its exit is expected
        self.exited = asyncio.Event()
        self.initial_status: asyncio.Future[WorkerResponse] | None = None
        self.answered = False
        """True once it sent anything: its signal handlers are installed by then."""
        self._sock = channel_sock
        self._buffer_size = buffer_size
        self._max_buffer_size = max_buffer_size
        self._channel: AsyncChannel[WorkerRequest, WorkerResponse] | None = None
        self._backlog: list[bytes] = []
        self._pending: dict[str, _Pending] = {}

    def __repr__(self) -> str:
        return f"<Worker {self.id} pid={self.pid} {RunState.Name(self.run_state)}>"

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    @property
    def alive(self) -> bool:
        """Still a target for fan-outs (Sōzu sends to every worker that is not STOPPED)."""
        return not self.lost and self.run_state != RunState.STOPPED

    def info(self) -> WorkerInfo:
        return WorkerInfo(id=self.id, pid=self.pid, run_state=self.run_state)

    # --- sending -------------------------------------------------------------------------

    def write_frame(self, frame: bytes) -> None:
        """Queue raw frame bytes, in order; buffered until the channel is set up."""
        if self.lost:
            return
        if self._channel is None:
            self._backlog.append(frame)
        elif not self._channel.writer.is_closing():
            self._channel.writer.write(frame)

    def send(
        self, request: WorkerRequest, on_processing: ProcessingCallback | None = None
    ) -> asyncio.Future[WorkerResponse]:
        """Write one WorkerRequest now; the future resolves with its final WorkerResponse.

        The future fails with WorkerExited when the worker is lost before answering, and with
        FrameError when the request cannot be framed.
        """
        future: asyncio.Future[WorkerResponse] = asyncio.get_running_loop().create_future()
        if self.lost:
            future.set_exception(WorkerExited(f"worker {self.id} is gone ({self.lost_reason})"))
            return future
        try:
            frame = encode_message(request, self._max_buffer_size)
        except FrameError as error:
            future.set_exception(error)
            return future
        self._pending[request.id] = _Pending(future, on_processing)
        self.write_frame(frame)
        return future

    def forget(self, request_id: str) -> None:
        """Stop waiting for an answer (after a timeout); a late answer is then ignored."""
        pending = self._pending.pop(request_id, None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()

    def send_listeners(self, listeners: Listeners) -> None:
        """One SCM message on the scm socket (blocking, small)."""
        send_listeners(self.scm, listeners)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def channel_fd(self) -> int:
        return self._sock.fileno()

    # --- handing the channel over (main upgrade) -----------------------------------------

    async def quiesce(self, timeout: float) -> bool:
        """Stop reading the channel between two frames, so another process can go on reading it.

        Whatever was already taken from the socket is dispatched first; a frame caught half-read
        is read to its end (reading resumes briefly). False when no frame boundary came in time
        (reading is resumed then).
        """
        channel = self._channel
        if channel is None or self.lost:
            return False
        deadline = time.monotonic() + timeout
        while True:
            channel.pause_reading()
            for _ in range(100):  # let the reader task take what the stream already holds
                if channel.unread() == 0:
                    break
                await asyncio.sleep(0)
            if channel.buffered() == 0:
                return True
            channel.resume_reading()
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)

    def resume_reading(self) -> None:
        if self._channel is not None:
            self._channel.resume_reading()

    # --- receiving -----------------------------------------------------------------------

    async def run_channel(
        self, on_event: Callable[[Worker, Event], None], on_closed: Callable[[Worker, str], None]
    ) -> None:
        """Set up the asyncio channel, flush what was queued, then read answers until EOF."""
        try:
            self._channel = await AsyncChannel.from_socket(
                self._sock, WorkerResponse, self._buffer_size, self._max_buffer_size
            )
        except (OSError, ValueError) as error:
            on_closed(self, f"channel set-up failed: {error}")
            return
        backlog, self._backlog = self._backlog, []
        for frame in backlog:
            self.write_frame(frame)
        reason = "channel closed"
        while True:
            try:
                response = await self._channel.recv()
            except FrameError as error:
                if error.stream_usable:
                    log.warning("worker_sent_garbage", worker_id=self.id, error=str(error))
                    continue
                reason = f"channel closed ({error})"
                break
            self._dispatch(response, on_event)
        on_closed(self, reason)

    def _dispatch(
        self, response: WorkerResponse, on_event: Callable[[Worker, Event], None]
    ) -> None:
        self.answered = True
        if response.status == ResponseStatus.OK and self.run_state == RunState.NOT_ANSWERING:
            self.run_state = RunState.RUNNING  # any answer proves it is back
        pending = self._pending.get(response.id)
        if pending is None:
            if response.content.WhichOneof("content_type") == "event":
                on_event(self, response.content.event)
            else:
                log.debug("worker_answer_unexpected", worker_id=self.id, request_id=response.id)
            return
        if response.status == ResponseStatus.PROCESSING:
            if pending.on_processing is not None:
                pending.on_processing(self, response)
            return
        del self._pending[response.id]
        if not pending.future.done():
            pending.future.set_result(response)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(
                    WorkerExited(f"worker {self.id} is gone ({self.lost_reason})")
                )
                entry.future.exception()  # nobody may be waiting: mark it retrieved

    # --- ending --------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the process unless it was already reaped (so the pid cannot be recycled)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)

    def close_sockets(self) -> None:
        if self._channel is not None:
            self._channel.writer.close()
        else:
            self._sock.close()
        self.scm.close()


class WorkerPool:
    """The worker table: spawn, answer correlation, loss detection, stop and kill.

    `on_lost(worker)` is called once per lost worker, after it was marked STOPPED; `on_event`
    receives the Events workers send unprompted.
    """

    def __init__(
        self,
        *,
        server_config: Callable[[], ServerConfig],
        initial_state: Callable[[], InitialState],
        listeners: Callable[[], Listeners],
        on_event: Callable[[Worker, Event], None],
        on_lost: Callable[[Worker], None],
        buffer_size: int,
        max_buffer_size: int,
        process_affinity: bool = False,
        command: Sequence[str] = WORKER_COMMAND,
        extra_arguments: Sequence[str] = (),
    ) -> None:
        self._server_config = server_config
        self._initial_state = initial_state
        self._listeners = listeners
        self._on_event = on_event
        self._on_lost = on_lost
        self._buffer_size = buffer_size
        self._max_buffer_size = max_buffer_size
        self._affinity = process_affinity
        self._command = tuple(command)
        self._extra_arguments = tuple(extra_arguments)  # sozu-py flags after Sōzu's
        self.workers: dict[int, Worker] = {}
        self.next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- queries -------------------------------------------------------------------------

    def alive(self) -> list[Worker]:
        """Workers that fan-outs go to, by id."""
        return [worker for worker in self.workers.values() if worker.alive]

    def count_active(self) -> int:
        """Workers neither stopping nor stopped (what automatic restart counts, as Sōzu)."""
        return sum(
            1
            for worker in self.workers.values()
            if worker.alive and worker.run_state != RunState.STOPPING
        )

    def pending_count(self) -> int:
        """Requests written to workers and not answered yet."""
        return sum(worker.pending_count for worker in self.workers.values() if not worker.lost)

    def infos(self) -> list[WorkerInfo]:
        return [worker.info() for worker in self.workers.values()]

    def prune(self, keep_stopped: int) -> None:
        """Forget the oldest STOPPED entries beyond `keep_stopped` (they only feed `status`)."""
        stopped = [w.id for w in self.workers.values() if w.run_state == RunState.STOPPED]
        for worker_id in stopped[: max(0, len(stopped) - keep_stopped)]:
            del self.workers[worker_id]

    # --- spawning ------------------------------------------------------------------------

    def spawn(self) -> Worker:
        """Start one worker and queue its whole handshake; synchronous, so nothing interleaves.

        The initial state is taken now: every change fanned out after this call reaches the
        new worker too, after its handshake.
        """
        worker_id = self.next_id
        self.next_id += 1
        initial = self._initial_state().SerializeToString()
        channel_parent, channel_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        scm_parent, scm_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with tempfile.TemporaryFile() as state_file:
                state_file.write(initial)
                state_file.flush()
                state_file.seek(0)
                argv = [
                    *self._command,
                    "--id", str(worker_id),
                    "--fd", str(channel_child.fileno()),
                    "--scm", str(scm_child.fileno()),
                    "--configuration-state-fd", str(state_file.fileno()),
                    "--command-buffer-size", str(self._buffer_size),
                    "--max-command-buffer-size", str(self._max_buffer_size),
                    *self._extra_arguments,
                ]  # fmt: skip
                process = subprocess.Popen(
                    argv,
                    pass_fds=(channel_child.fileno(), scm_child.fileno(), state_file.fileno()),
                    process_group=0,
                )
        except OSError as error:
            channel_parent.close()
            scm_parent.close()
            raise WorkerSpawnError(f"cannot start worker {worker_id}: {error}") from None
        finally:
            channel_child.close()
            scm_child.close()

        worker = Worker(
            worker_id,
            process,
            channel_parent,
            scm_parent,
            self._buffer_size,
            self._max_buffer_size,
        )
        self.workers[worker_id] = worker
        log.info("worker_spawned", worker_id=worker_id, pid=worker.pid)
        worker.write_frame(encode_message(self._server_config(), self._max_buffer_size))
        try:
            worker.send_listeners(self._listeners())
        except ScmError as error:
            log.error("worker_listeners_not_sent", worker_id=worker_id, error=str(error))
            worker.kill()
        worker.initial_status = worker.send(
            WorkerRequest(id=f"INITIAL-STATUS-{worker_id}", content=Request(status=Status()))
        )
        if self._affinity:
            self._pin(worker)
        self._watch_process(worker)
        self._background(worker.run_channel(self._on_event, self._lost))
        self._background(self._await_initial_status(worker))
        return worker

    def adopt(self, entry: WorkerEntry) -> Worker:
        """Take over a worker a previous main process started (main upgrade); not watched yet.

        Nothing is read from its channel until `watch_adopted`: the previous main process may
        still be waiting for our confirmation, and a byte we read is a byte it cannot.
        """
        channel = socket.socket(fileno=entry.channel_fd)
        scm = socket.socket(fileno=entry.scm_fd)
        for sock in (channel, scm):
            sock.set_inheritable(False)
        scm.setblocking(True)
        worker = Worker(
            entry.id,
            AdoptedProcess(entry.pid),
            channel,
            scm,
            self._buffer_size,
            self._max_buffer_size,
        )
        worker.run_state = entry.run_state
        self.workers[entry.id] = worker
        self.next_id = max(self.next_id, entry.id + 1)
        log.info("worker_adopted", worker_id=entry.id, pid=entry.pid)
        return worker

    def watch_adopted(self, worker: Worker) -> None:
        """Start watching an adopted worker's process and reading its channel."""
        self._watch_process(worker)
        self._background(worker.run_channel(self._on_event, self._lost))

    def _pin(self, worker: Worker) -> None:
        cpus = sorted(os.sched_getaffinity(0)) or list(range(psutil.cpu_count() or 1))
        core = cpus[worker.id % len(cpus)]
        try:
            psutil.Process(worker.pid).cpu_affinity([core])
        except (psutil.Error, OSError, ValueError) as error:
            log.warning("worker_affinity_failed", worker_id=worker.id, core=core, error=str(error))
        else:
            log.info("worker_pinned", worker_id=worker.id, core=core)

    async def _await_initial_status(self, worker: Worker) -> None:
        assert worker.initial_status is not None
        try:
            response = await worker.initial_status
        except (WorkerExited, FrameError, asyncio.CancelledError):
            return
        if response.status == ResponseStatus.OK:  # `_dispatch` already marked it RUNNING
            log.info("worker_ready", worker_id=worker.id, pid=worker.pid)
        else:
            log.error("worker_start_failed", worker_id=worker.id, message=response.message)

    # --- loss ----------------------------------------------------------------------------

    def _watch_process(self, worker: Worker) -> None:
        """Reap the process as soon as it exits (pidfd when the kernel has it, else polling)."""
        loop = asyncio.get_running_loop()
        try:
            if isinstance(worker.process, AdoptedProcess):
                if worker.process.pidfd is None:
                    raise OSError("no pidfd")
                pidfd = os.dup(worker.process.pidfd)  # names this process, not a recycled pid
            else:
                pidfd = os.pidfd_open(worker.pid)
        except (AttributeError, OSError):
            self._background(self._poll_process(worker))
            return

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._reaped(worker)

        loop.add_reader(pidfd, on_exit)

    async def _poll_process(self, worker: Worker) -> None:
        while worker.process.poll() is None:
            await asyncio.sleep(_POLL_SECONDS)
        self._reaped(worker)

    def _reaped(self, worker: Worker) -> None:
        code = worker.process.wait()
        log.info("worker_exited", worker_id=worker.id, pid=worker.pid, code=code)
        worker.exited.set()
        self._lost(worker, f"process exited with code {code}")

    def _lost(self, worker: Worker, reason: str) -> None:
        if worker.lost:
            return
        stopping = worker.run_state == RunState.STOPPING
        worker.lost_reason = reason
        worker.run_state = RunState.STOPPED
        worker._fail_pending()
        if not stopping:  # a stopping worker closes its channel and exits on its own
            worker.kill()
        worker.close_sockets()
        log.info("worker_lost", worker_id=worker.id, pid=worker.pid, reason=reason)
        self._on_lost(worker)

    # --- signals -------------------------------------------------------------------------

    def reopen_logs(self) -> int:
        """Forward SIGHUP to every worker that can take it: each reopens its log files.

        Only workers that have answered once get it: while the interpreter of a new worker
        starts, SIGHUP still has its default action, which would kill it (a worker starting
        now opens the files at their current paths anyway). Returns how many were signalled.
        """
        signalled = 0
        for worker in self.workers.values():
            if worker.lost or not worker.answered or worker.process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGHUP)
                signalled += 1
        return signalled

    # --- stopping ------------------------------------------------------------------------

    async def stop(self, hard: bool, timeout: float) -> tuple[int, int]:
        """Send SoftStop or HardStop to every live worker and wait for them to exit.

        A worker that answers OK or exits counts as ok, one that answers FAILURE as an error;
        whatever is still running after `timeout` seconds is killed. Returns (ok, errors).
        """
        targets = self.alive()
        request = Request(hard_stop=HardStop()) if hard else Request(soft_stop=SoftStop())
        name = "HardStop" if hard else "SoftStop"
        futures: dict[int, asyncio.Future[WorkerResponse]] = {}
        for worker in targets:
            worker.run_state = RunState.STOPPING
            futures[worker.id] = worker.send(
                WorkerRequest(id=f"{name}-{worker.id}", content=request)
            )
        deadline = time.monotonic() + timeout
        waiters = [asyncio.ensure_future(worker.exited.wait()) for worker in targets]
        if waiters:
            await asyncio.wait(waiters, timeout=max(0.0, deadline - time.monotonic()))
        for waiter in waiters:
            waiter.cancel()
        ok = errors = 0
        for worker in targets:
            future = futures[worker.id]
            if future.done() and not future.cancelled() and future.exception() is None:
                if future.result().status == ResponseStatus.FAILURE:
                    errors += 1
                else:
                    ok += 1
            elif worker.exited.is_set():
                ok += 1
            else:
                errors += 1
            if not future.done():
                worker.forget(f"{name}-{worker.id}")
        await self.kill_all()
        return ok, errors

    async def kill_all(self) -> None:
        """SIGKILL every worker still running and wait (bounded) until each one is reaped."""
        running = [w for w in self.workers.values() if not w.exited.is_set()]
        for worker in running:
            worker.kill()
        waiters = [asyncio.ensure_future(worker.exited.wait()) for worker in running]
        if waiters:
            await asyncio.wait(waiters, timeout=KILL_WAIT_SECONDS)
        for waiter in waiters:
            waiter.cancel()

    def kill_all_now(self) -> None:
        """Last resort outside the event loop: SIGKILL and reap every worker, blocking."""
        for worker in self.workers.values():
            if worker.process.returncode is None:
                worker.kill()
                with contextlib.suppress(subprocess.TimeoutExpired, TimeoutError):
                    worker.process.wait(timeout=KILL_WAIT_SECONDS)
