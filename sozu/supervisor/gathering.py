"""Fan-out of Requests to workers and the bounded gathering of their answers.

`scatter()` writes one WorkerRequest per worker right away (ids in Sōzu's shape:
`<RequestName>-<worker id>-<task id>-<index>`), so the order of changes on every channel is the
order the supervisor accepted them; `Scatter.gather()` then waits for the answers, at most
`timeout` seconds, optionally calling a heartbeat while it waits. `Gathered` summarises the
outcome for the client answer (which worker failed and why), the audit line (`FanOut`) and the
queries that return one content per worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sozu.command.proto import (
    Request,
    ResponseContent,
    ResponseStatus,
    WorkerRequest,
    WorkerResponse,
)
from sozu.supervisor.audit import ERROR_WORKER_FAILURE, ERROR_WORKER_TIMEOUT, FanOut
from sozu.supervisor.workers import ProcessingCallback, Worker

HEARTBEAT_SECONDS = 0.5

Heartbeat = Callable[[int], Awaitable[None]]


def request_name(request: Request) -> str:
    """Sōzu's name of a request kind (`AddCluster`, `QueryClustersByDomain`, `Logging`)."""
    kind = request.WhichOneof("request_type")
    if kind is None:
        return "Unallowed"
    return "".join(part[:1].upper() + part[1:] for part in kind.split("_"))


@dataclass
class WorkerAnswer:
    """What one worker did with one request: its final answer, or why there is none."""

    worker_id: int
    index: int
    response: WorkerResponse | None = None
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response.status == ResponseStatus.OK

    def describe(self) -> str:
        if self.timed_out:
            return "timeout"
        if self.response is not None:
            return self.response.message or "failed"
        return self.error or "no answer"


@dataclass
class Gathered:
    """Every answer of a fan-out, and the summaries built from them."""

    answers: list[WorkerAnswer] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return len(self.answers)

    @property
    def ok(self) -> int:
        return sum(1 for answer in self.answers if answer.ok)

    @property
    def errors(self) -> int:
        return sum(1 for answer in self.answers if not answer.ok and not answer.timed_out)

    @property
    def timeouts(self) -> int:
        return sum(1 for answer in self.answers if answer.timed_out)

    @property
    def succeeded(self) -> bool:
        return all(answer.ok for answer in self.answers)

    def fanout(self) -> FanOut:
        return FanOut.from_counts(
            self.ok, self.errors + self.timeouts, self.expected, timed_out=self.timeouts > 0
        )

    def error_code(self) -> str | None:
        if self.timeouts:
            return ERROR_WORKER_TIMEOUT
        if self.errors:
            return ERROR_WORKER_FAILURE
        return None

    def failure_message(self) -> str:
        """`worker 1: <message>; worker 2: timeout`, one entry per failed worker answer."""
        return "; ".join(
            f"worker {answer.worker_id}: {answer.describe()}"
            for answer in self.answers
            if not answer.ok
        )

    def contents(self) -> dict[str, ResponseContent]:
        """Worker id (as text) -> the content it answered, for the workers that sent one."""
        return {
            str(answer.worker_id): answer.response.content
            for answer in self.answers
            if answer.response is not None and answer.response.HasField("content")
        }


@dataclass
class _Entry:
    worker: Worker
    request_id: str
    index: int
    future: asyncio.Future[WorkerResponse]


@dataclass
class Scatter:
    """Requests already written to workers, waiting to be gathered."""

    entries: list[_Entry] = field(default_factory=list)

    def add(
        self,
        workers: Sequence[Worker],
        request: Request,
        task_id: int,
        index: int = 0,
        on_processing: ProcessingCallback | None = None,
    ) -> None:
        """Write `request` to each worker now (synchronously, in the caller's order)."""
        name = request_name(request)
        for worker in workers:
            request_id = f"{name}-{worker.id}-{task_id}-{index}"
            future = worker.send(WorkerRequest(id=request_id, content=request), on_processing)
            self.entries.append(_Entry(worker, request_id, index, future))

    async def gather(self, timeout: float, heartbeat: Heartbeat | None = None) -> Gathered:
        """Wait for every answer, at most `timeout` seconds; late ones count as timeouts."""
        deadline = time.monotonic() + timeout
        remaining: set[asyncio.Future[WorkerResponse]] = {
            entry.future for entry in self.entries if not entry.future.done()
        }
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            step = min(left, HEARTBEAT_SECONDS) if heartbeat is not None else left
            _done, remaining = await asyncio.wait(remaining, timeout=step)
            if remaining and heartbeat is not None and deadline - time.monotonic() > 0:
                await heartbeat(len(remaining))
        gathered = Gathered()
        for entry in self.entries:
            answer = WorkerAnswer(entry.worker.id, entry.index)
            future = entry.future
            answered = future.done() and not future.cancelled() and future.exception() is None
            if entry.worker.retiring and not answered:
                if not future.done():  # a worker being replaced: its silence is no failure
                    entry.worker.forget(entry.request_id)
                continue
            if not future.done():
                entry.worker.forget(entry.request_id)
                answer.timed_out = True
            elif future.cancelled():
                answer.timed_out = True
            elif future.exception() is not None:
                answer.error = str(future.exception())
            else:
                answer.response = future.result()
            gathered.answers.append(answer)
        return gathered


def scatter(
    workers: Sequence[Worker],
    request: Request,
    task_id: int,
    on_processing: ProcessingCallback | None = None,
) -> Scatter:
    """A new Scatter with `request` already written to every worker of `workers`."""
    result = Scatter()
    result.add(workers, request, task_id, 0, on_processing)
    return result
