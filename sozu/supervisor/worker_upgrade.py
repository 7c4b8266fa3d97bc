"""Worker upgrade (`UpgradeWorker N`): a new worker takes over, then worker N soft-stops.

Sōzu asks the old worker to give its listening sockets back (`ReturnListenSockets`) and hands
them to the new one. In sozu-py the main process keeps every listening socket (DESIGN.md §2), so
the new worker simply gets them in its normal start-up handshake, with the current state and
every change accepted since. Only once it answered its initial status (it accepts connections
then) is the old worker told to `SoftStop`: it stops accepting, lets its in-flight exchanges end,
and exits; the answer is OK once it has exited. No connection is refused meanwhile: both workers
accept from the same listening sockets until the old one stops.

A worker that does not exit within `worker_timeout + SOFT_STOP_GRACE` seconds is killed and the
answer says so. A new worker that does not start leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sozu.command.logging import get_logger
from sozu.command.proto import (
    Request,
    ResponseStatus,
    RunState,
    SoftStop,
    WorkerRequest,
    WorkerResponse,
)
from sozu.supervisor.audit import ERROR_OTHER, ERROR_WORKER_FAILURE, RESULT_ERR, RESULT_OK
from sozu.supervisor.audit_trail import AuditTrail
from sozu.supervisor.events import event_for
from sozu.supervisor.workers import Worker, WorkerExited, WorkerSpawnError

if TYPE_CHECKING:
    from sozu.supervisor.server import Supervisor
    from sozu.supervisor.sessions import ClientSession

log = get_logger(__name__)

SOFT_STOP_GRACE = 5.0
"""Seconds a soft-stopping worker gives its busy connections (`sozu.worker.server`'s value)."""

PROGRESS_SECONDS = 2.0
"""How often the client hears PROCESSING while the old worker drains (its CLI timeout restarts)."""


class UpgradeRefused(Exception):
    """The upgrade cannot start or the new worker did not come up; the old one keeps serving."""


async def upgrade_worker(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Answer an `UpgradeWorker` request; True while the client session goes on.

    `sup.worker_upgrades` counts it from the check on (no await in between) to the answer, so
    that a main upgrade is refused all along, even while the new worker is being launched.
    """
    trail = AuditTrail.of(sup, session, request)
    worker_id = request.upgrade_worker
    try:
        old = _upgradable(sup, worker_id)
    except UpgradeRefused as refusal:
        trail.record(RESULT_ERR, error_code=ERROR_OTHER, reason=str(refusal))
        await session.failure(str(refusal))
        return True
    sup.worker_upgrades += 1
    try:
        return await _replace(sup, session, request, trail, old)
    finally:
        sup.worker_upgrades -= 1


async def _replace(
    sup: Supervisor, session: ClientSession, request: Request, trail: AuditTrail, old: Worker
) -> bool:
    worker_id = old.id
    try:
        await session.processing(f"Launching a new worker to replace worker {worker_id}")
        new = await _launch_replacement(sup, worker_id)
    except UpgradeRefused as refusal:
        trail.record(RESULT_ERR, error_code=ERROR_OTHER, reason=str(refusal))
        await session.failure(str(refusal))
        return True
    await session.processing(f"Soft stopping worker with id {worker_id}")
    killed = await _soft_stop(sup, session, old)
    lines = [
        "Upgrade successful:",
        f"- finished soft stop of worker {old.id}"
        + (" (killed: it did not stop in time)" if killed else ""),
        f"- finished activation of new worker {new.id}",
    ]
    log.info("worker_upgraded", old_worker=old.id, new_worker=new.id, killed=killed)
    if killed:
        trail.record(RESULT_ERR, error_code=ERROR_WORKER_FAILURE, reason=lines[1][2:])
    else:
        trail.record(RESULT_OK)
    sup.publish(event_for(request))
    await session.ok("\n".join(lines))
    return True


def _upgradable(sup: Supervisor, worker_id: int) -> Worker:
    if sup.upgrading:
        raise UpgradeRefused("a main process upgrade is in progress")
    worker = sup.workers.workers.get(worker_id)
    if worker is None or not worker.alive or worker.run_state == RunState.STOPPING:
        raise UpgradeRefused(f"Worker {worker_id} does not exist, or is stopping / stopped")
    return worker


async def _launch_replacement(sup: Supervisor, worker_id: int) -> Worker:
    """Start the new worker and wait for its initial status (bounded by worker_timeout)."""
    try:
        new = sup.workers.spawn()
    except WorkerSpawnError as error:
        raise UpgradeRefused(f"could not launch a new worker: {error}") from None
    assert new.initial_status is not None
    timeout = float(sup.config.worker_timeout)
    problem: str | None = None
    try:
        answer: WorkerResponse = await asyncio.wait_for(asyncio.shield(new.initial_status), timeout)
    except TimeoutError:
        problem = f"it did not answer within {timeout:g} s"
    except (WorkerExited, OSError, asyncio.CancelledError) as error:
        problem = str(error) or type(error).__name__
    else:
        if answer.status != ResponseStatus.OK:
            problem = answer.message or "its initial status failed"
    if problem is not None:
        new.retiring = True
        new.kill()
        raise UpgradeRefused(
            f"could not launch a new worker to replace worker {worker_id}: {problem};"
            f" worker {worker_id} keeps serving"
        )
    return new


async def _soft_stop(sup: Supervisor, session: ClientSession, old: Worker) -> bool:
    """SoftStop `old` and wait until it exited; True when it had to be killed."""
    old.retiring = True
    old.run_state = RunState.STOPPING
    request_id = f"UPGRADE-{sup.next_task()}-SOFTSTOP-{old.id}"
    answer = old.send(WorkerRequest(id=request_id, content=Request(soft_stop=SoftStop())))
    answer.add_done_callback(_ignore_outcome)  # its exit is the answer that counts
    deadline = time.monotonic() + float(sup.config.worker_timeout) + SOFT_STOP_GRACE
    while not old.exited.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("worker_upgrade_kill", worker_id=old.id, pid=old.pid)
            old.kill()
            return True
        try:
            await asyncio.wait_for(old.exited.wait(), min(left, PROGRESS_SECONDS))
        except TimeoutError:
            await session.processing(f"Waiting for worker {old.id} to finish its connections")
    return False


def _ignore_outcome(future: asyncio.Future[WorkerResponse]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a worker that exits before answering is expected here
