"""The supervisor's verbs: one handler per Request kind, each with its audit lines beside it.

As Sōzu's `bin/src/command/requests.rs`:

- state changes are checked against the main state and applied, then fanned out to every worker
  with a fresh id; the client gets PROCESSING, then OK or a FAILURE naming each worker that
  failed. They are audited twice (attempt: accepted by the main state; completion: fan-out
  outcome) and publish one Event once the workers answered;
- queries are answered from the main state (`list_*`, certificates from the state, health
  checks, request counts) or from the workers (`status`, cluster queries, certificates from the
  workers, metrics), the latter as one content per worker id (plus `main` where the main state
  has an answer too);
- main-process verbs (state save / load, configuration reload, logging, events, stops) are
  handled here and audited once.

Every handler returns whether the client stays connected.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sozu.command import state_file
from sozu.command.config import load_config
from sozu.command.errors import ConfigError
from sozu.command.logging import LoggingError, get_logger, set_level
from sozu.command.proto import (
    AggregatedMetrics,
    AvailableMetrics,
    ClusterInformations,
    MaxConnectionsPerIpLimit,
    Request,
    RequestCounts,
    ResponseContent,
    ResponseStatus,
    RunState,
    WorkerInfos,
    WorkerResponse,
    WorkerResponses,
)
from sozu.command.state import Applied, ConfigState, StateError, StateErrorKind, canonical
from sozu.command.state_file import LoadError, StateFileError, parse_records, read_state_file
from sozu.supervisor import notify
from sozu.supervisor.audit import (
    ERROR_DISPATCH,
    ERROR_INVALID_INPUT,
    ERROR_IO,
    ERROR_OTHER,
    ERROR_PEER_CRED_UNAVAILABLE,
    RESULT_ERR,
    RESULT_OK,
    AuditSubject,
)
from sozu.supervisor.audit_trail import AuditTrail
from sozu.supervisor.events import event_for
from sozu.supervisor.gathering import HEARTBEAT_SECONDS, Gathered, Scatter, request_name
from sozu.supervisor.listeners import ListenerError
from sozu.supervisor.sessions import ClientSession
from sozu.supervisor.upgrade import upgrade_main
from sozu.supervisor.worker_upgrade import upgrade_worker
from sozu.supervisor.workers import ProcessingCallback, Worker

if TYPE_CHECKING:
    from sozu.supervisor.server import Supervisor

log = get_logger("sozu.supervisor.requests")

Handler = Callable[["Supervisor", ClientSession, Request], Awaitable[bool]]

MAX_LISTED_ERRORS = 10

# Requests a client may still send while the proxy stops.
_ALLOWED_WHILE_STOPPING = frozenset(
    {
        "hard_stop",
        "soft_stop",
        "status",
        "list_workers",
        "list_listeners",
        "list_frontends",
        "count_requests",
    }
)

# Requests answered while a main upgrade runs: the main state alone answers them (worker
# channels are paused, and no change may slip between the record and the new main).
_ALLOWED_WHILE_UPGRADING = frozenset(
    {"list_workers", "list_listeners", "list_frontends", "count_requests"}
)


# --- entry point -------------------------------------------------------------------------


async def handle(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Handle one client Request; False closes the client."""
    kind = request.WhichOneof("request_type") or ""
    sup.count_request(request)
    log.debug("client_request", client_id=session.client_id, kind=kind)
    if not _allowed(sup, session, request):
        return False
    if sup.stopping and kind not in _ALLOWED_WHILE_STOPPING:
        await session.failure("the proxy is shutting down")
        return True
    if sup.upgrading and kind not in _ALLOWED_WHILE_UPGRADING:
        await session.failure("a main upgrade is in progress")
        return True
    handler = _HANDLERS.get(kind, change)
    return await handler(sup, session, request)


def _allowed(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    allowed = sup.config.command_allowed_uids
    uid = session.context.peer.uid
    if allowed is None or (uid is not None and uid in allowed):
        return True
    shown = "unknown" if uid is None else str(uid)
    message = f"unauthorized: actor UID {shown} not in command_allowed_uids"
    log.warning("client_refused", client_id=session.client_id, uid=shown)
    trail = AuditTrail.of(sup, session, request)
    if trail.subject is None:
        kind = request.WhichOneof("request_type") or "empty"
        trail.subject = AuditSubject("request_refused", f"request:{kind}")
    code = ERROR_PEER_CRED_UNAVAILABLE if uid is None else ERROR_OTHER
    trail.record(RESULT_ERR, error_code=code, reason=message)
    session.send_nowait(ResponseStatus.FAILURE, message)
    return False


def record_bad_input(sup: Supervisor, session: ClientSession, target: str, reason: str) -> None:
    """Audit input that is not a Request (the session answers and closes)."""
    trail = AuditTrail(sup, session, AuditSubject("invalid_request", target))
    trail.record(RESULT_ERR, error_code=ERROR_INVALID_INPUT, reason=reason, elapsed=False)


def _forward_processing(session: ClientSession) -> Callable[[Worker, WorkerResponse], None]:
    def forward(worker: Worker, response: WorkerResponse) -> None:
        note = f"Worker {worker.id} is processing {response.id}. {response.message}".rstrip()
        session.send_nowait(ResponseStatus.PROCESSING, note)

    return forward


def _heartbeat(session: ClientSession) -> Callable[[int], Awaitable[None]]:
    async def beat(waiting: int) -> None:
        await session.processing(f"waiting for {waiting} worker answer(s)")

    return beat


async def _gather(sup: Supervisor, session: ClientSession, scatter: Scatter) -> Gathered:
    return await scatter.gather(sup.config.worker_timeout, _heartbeat(session))


async def _answer_fan_out(session: ClientSession, gathered: Gathered) -> None:
    if gathered.succeeded:
        await session.ok("Successfully applied request to all workers")
    else:
        await session.failure(gathered.failure_message())


def _resolve(path: str) -> str:
    """A client's path, relative to the supervisor's working directory as in Sōzu."""
    return str(Path(path) if os.path.isabs(path) else Path.cwd() / path)


# --- state changes -----------------------------------------------------------------------


async def change(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """A change of the state (or of a worker setting): check, apply, fan out, gather."""
    trail = AuditTrail.of(sup, session, request)
    try:
        fanned, applied = sup.apply_change(request)
    except (StateError, ListenerError) as error:
        code = ERROR_IO if isinstance(error, ListenerError) else ERROR_DISPATCH
        trail.record(RESULT_ERR, error_code=code, reason=str(error))
        await session.failure(f"could not dispatch request on the main process state: {error}")
        return True
    scatter = sup.scatter(fanned, _forward_processing(session))
    trail.attempt()
    await session.processing("Processing worker request...")
    gathered = await _gather(sup, session, scatter)
    trail.completion(gathered)
    sup.publish(event_for(request))
    sup.changed(applied)
    await _answer_fan_out(session, gathered)
    return True


async def logging(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Change the main process's log level, then every worker's; new workers inherit it."""
    trail = AuditTrail.of(sup, session, request)
    try:
        set_level(request.Logging)
    except LoggingError as error:
        trail.record(RESULT_ERR, error_code=ERROR_INVALID_INPUT, reason=str(error))
        await session.failure(f"Error parsing logging filter: {error}")
        return True
    sup.log_level = request.Logging
    scatter = sup.scatter(request, _forward_processing(session))
    await session.processing("Processing worker request...")
    gathered = await _gather(sup, session, scatter)
    trail.completion(gathered)
    sup.publish(event_for(request))
    await _answer_fan_out(session, gathered)
    return True


# --- queries answered by the main process ------------------------------------------------


async def list_workers(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    infos = WorkerInfos(vec=sup.workers.infos())
    await session.ok("Successfully listed workers", ResponseContent(workers=infos))
    return True


async def list_frontends(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    listed = sup.state.list_frontends(request.list_frontends)
    await session.ok("Successfully listed frontends", ResponseContent(frontend_list=listed))
    return True


async def list_listeners(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    listed = sup.state.list_listeners()
    await session.ok("Successfully listed listeners", ResponseContent(listeners_list=listed))
    return True


async def certificates_from_state(
    sup: Supervisor, session: ClientSession, request: Request
) -> bool:
    certs = sup.state.certificates(request.query_certificates_from_the_state)
    await session.ok(
        "Successfully queried certificates from the state of main process",
        ResponseContent(certificates_with_fingerprints=certs),
    )
    return True


async def health_checks(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    query = request.query_health_checks
    cluster_id = query.cluster_id if query.HasField("cluster_id") else None
    checks = sup.state.health_checks(cluster_id)
    await session.ok(
        "Successfully listed health check configurations",
        ResponseContent(health_checks_list=checks),
    )
    return True


async def count_requests(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    counts = RequestCounts(map=dict(sup.request_counts))
    await session.ok(
        "Successfully counted requests received by the state",
        ResponseContent(request_counts=counts),
    )
    return True


async def max_connections_per_ip(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    limit = MaxConnectionsPerIpLimit(limit=sup.max_connections_per_ip)
    await session.ok(
        "Current global connection limit per IP",
        ResponseContent(max_connections_per_ip_limit=limit),
    )
    return True


# --- queries answered by the workers -----------------------------------------------------


async def status(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Ask every worker; one that does not answer OK shows as NOT_ANSWERING (as Sōzu)."""
    scatter = sup.scatter(request)
    await session.processing("Querying status of workers...")
    gathered = await _gather(sup, session, scatter)
    answered = {answer.worker_id for answer in gathered.answers if answer.ok}
    asked = {answer.worker_id for answer in gathered.answers}
    infos = []
    for worker in sup.workers.workers.values():
        info = worker.info()
        if worker.id in asked and worker.run_state in (RunState.RUNNING, RunState.NOT_ANSWERING):
            worker.run_state = RunState.RUNNING if worker.id in answered else RunState.NOT_ANSWERING
            info.run_state = worker.run_state
        infos.append(info)
    await session.ok(
        "Successfully collected the status of workers",
        ResponseContent(workers=WorkerInfos(vec=infos)),
    )
    return True


def _main_answer(sup: Supervisor, request: Request) -> ResponseContent | None:
    kind = request.WhichOneof("request_type")
    if kind == "query_cluster_by_id":
        info = sup.state.cluster_information(request.query_cluster_by_id)
        infos = ClusterInformations(vec=[info] if info is not None else [])
        return ResponseContent(clusters=infos)
    if kind == "query_clusters_by_domain":
        query = request.query_clusters_by_domain
        path = query.path if query.HasField("path") else None
        return ResponseContent(clusters=sup.state.clusters_by_domain(query.hostname, path))
    if kind == "query_clusters_hashes":
        return ResponseContent(cluster_hashes=sup.state.cluster_hashes())
    return None


async def query_workers(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Cluster and certificate queries: each worker's answer, plus the main state's."""
    main = _main_answer(sup, request)
    scatter = sup.scatter(request)
    await session.processing("Querying cluster...")
    gathered = await _gather(sup, session, scatter)
    answers = gathered.contents()
    if main is not None:
        answers["main"] = main
    await session.ok(
        "Successfully queried clusters",
        ResponseContent(worker_responses=WorkerResponses(map=answers)),
    )
    return True


async def query_metrics(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Whatever the workers answer: metric names merged, or each worker's metrics."""
    options = request.query_metrics
    scatter = sup.scatter(request)
    await session.processing("Querying metrics...")
    gathered = await _gather(sup, session, scatter)
    contents = gathered.contents()
    if options.list:
        proxy: set[str] = set()
        cluster: set[str] = set()
        for content in contents.values():
            if content.WhichOneof("content_type") == "available_metrics":
                proxy.update(content.available_metrics.proxy_metrics)
                cluster.update(content.available_metrics.cluster_metrics)
        listed = AvailableMetrics(proxy_metrics=sorted(proxy), cluster_metrics=sorted(cluster))
        await session.ok(
            "Successfully listed available metrics", ResponseContent(available_metrics=listed)
        )
        return True
    aggregated = AggregatedMetrics()
    for worker_id, content in contents.items():
        if content.WhichOneof("content_type") == "worker_metrics":
            aggregated.workers[worker_id].CopyFrom(content.worker_metrics)
    if not gathered.succeeded and not aggregated.workers:
        await session.failure(gathered.failure_message())
        return True
    await session.ok("Successfully aggregated all metrics", ResponseContent(metrics=aggregated))
    return True


# --- main-process verbs ------------------------------------------------------------------


async def subscribe_events(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Keep the client and stream every Event to it (its own EVENTS_SUBSCRIBED comes first)."""
    session.subscribe(sup.events.subscribe())
    AuditTrail.of(sup, session, request).record(RESULT_OK, elapsed=False)
    sup.publish(event_for(request))
    return True


async def save_state(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    trail = AuditTrail.of(sup, session, request)
    path = _resolve(request.save_state)
    try:
        count = state_file.save_state(path, sup.state)
    except StateFileError as error:
        trail.record(RESULT_ERR, error_code=ERROR_IO, reason=str(error), target=f"file:{path}")
        await session.failure(str(error))
        return True
    trail.record(RESULT_OK, target=f"file:{path} messages:{count}")
    sup.publish(event_for(request))
    await session.ok(f"Saved {count} config messages to {path}")
    return True


async def load_state(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Apply each record as a client change would be, fan out the accepted ones, report all."""
    trail = AuditTrail.of(sup, session, request)
    path = _resolve(request.load_state)
    try:
        data = read_state_file(path)
    except StateFileError as error:
        trail.record(RESULT_ERR, error_code=ERROR_IO, reason=str(error), target=f"file:{path}")
        await session.failure(str(error))
        return True
    await session.processing(f"Parsing state file from {path}...")
    parsed, corrupt = parse_records(data)
    outcome = BatchOutcome(errors=[str(error) for error in corrupt])
    notify_safely(notify.reloading())
    scatter = scatter_batch(
        sup,
        ((index, record.id, record.content) for index, record in parsed),
        outcome,
        _forward_processing(session),
        present=present_requests(sup.state),
    )
    await session.processing("Applying state file...")
    await _finish_batch(sup, session, request, trail, scatter, outcome, f"file:{path}")
    if outcome.errors:
        await session.failure(
            f"loading state: {outcome.ok} ok messages, {len(outcome.errors)} errors: "
            + outcome.summary()
        )
    else:
        await session.ok(
            f"Successfully loaded state from path {path}, {outcome.ok} ok messages, 0 errors"
        )
    return True


async def reload_configuration(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Turn the state into the configuration file's: apply the difference, fan it out."""
    trail = AuditTrail.of(sup, session, request)
    path = request.reload_configuration or str(sup.config.config_path)
    await session.processing(f"Reloading static configuration at path {path}")
    try:
        config = load_config(path)
        wanted = ConfigState.from_requests(config.requests())
    except (ConfigError, StateError) as error:
        trail.record(RESULT_ERR, error_code=ERROR_IO, reason=str(error), target=f"config:{path}")
        await session.failure(f"could not generate new config: {error}")
        return True
    diff = sup.state.diff(wanted)
    outcome = BatchOutcome()
    notify_safely(notify.reloading())
    scatter = scatter_batch(
        sup,
        ((index, f"RELOAD-{index}", step) for index, step in enumerate(diff)),
        outcome,
        _forward_processing(session),
    )
    await _finish_batch(sup, session, request, trail, scatter, outcome, f"config:{path}")
    if outcome.errors:
        await session.failure(
            f"loading static configuration failed: {outcome.ok} OK, {len(outcome.errors)} "
            f"errors: {outcome.summary()}"
        )
    else:
        await session.ok(f"Successfully loaded the config: {outcome.ok} ok, 0 errors")
    return True


def present_requests(state: ConfigState) -> set[bytes]:
    """Wire forms of the Requests that rebuild `state`, to recognise records already in place."""
    return {_wire(request) for request in state.requests()}


def already_in_place(present: set[bytes], request: Request, error: StateError) -> bool:
    """True when `error` only says that `request` exists, exactly as it is, in the state.

    Loading a state file over the configuration it was saved from refuses the listeners and
    frontends that exist already; those refusals are not errors.
    """
    return error.kind == StateErrorKind.EXISTS and _wire(request) in present


def _wire(request: Request) -> bytes:
    return canonical(request).SerializeToString(deterministic=True)


class BatchOutcome:
    """What a state load or a reload did, record by record."""

    def __init__(self, errors: list[str] | None = None) -> None:
        self.errors: list[str] = errors or []
        self.accepted: dict[int, str] = {}  # record index -> its id
        self.applied: bool = False  # whether the main state changed
        self.refused = 0
        self.unchanged = 0  # records that found the state already as they ask
        self.ok = 0

    def refuse(self, index: int, record_id: str, error: Exception) -> None:
        self.refused += 1
        self.errors.append(str(LoadError(index, record_id, str(error), refused=True)))

    def collect(self, gathered: Gathered) -> None:
        failures: dict[int, list[str]] = {}
        for answer in gathered.answers:
            if not answer.ok:
                failures.setdefault(answer.index, []).append(
                    f"worker {answer.worker_id}: {answer.describe()}"
                )
        for index, messages in sorted(failures.items()):
            self.errors.append(f"record {index} ({self.accepted[index]}): {'; '.join(messages)}")
        self.ok = len(self.accepted) - len(failures) + self.unchanged

    def summary(self) -> str:
        shown = self.errors[:MAX_LISTED_ERRORS]
        more = len(self.errors) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def scatter_batch(
    sup: Supervisor,
    records: Iterable[tuple[int, str, Request]],
    outcome: BatchOutcome,
    on_processing: ProcessingCallback | None = None,
    present: set[bytes] | None = None,
) -> Scatter:
    """Apply each record as a client change and write those that changed something to every
    worker; a record already in place (`present`: see `already_in_place`) counts as ok."""
    task_id = sup.next_task()
    result = Scatter()
    for index, record_id, request in records:
        try:
            fanned, applied = sup.apply_change(request, count=True)
        except StateError as error:
            if present is not None and already_in_place(present, request, error):
                outcome.unchanged += 1
            else:
                outcome.refuse(index, record_id, error)
            continue
        except ListenerError as error:
            outcome.refuse(index, record_id, error)
            continue
        if applied == Applied.UNCHANGED:
            outcome.unchanged += 1
            continue
        outcome.applied = outcome.applied or applied == Applied.CHANGED
        outcome.accepted[index] = record_id
        result.add(sup.workers.alive(), fanned, task_id, index, on_processing)
    return result


async def _finish_batch(
    sup: Supervisor,
    session: ClientSession,
    request: Request,
    trail: AuditTrail,
    scatter: Scatter,
    outcome: BatchOutcome,
    source: str,
) -> None:
    """Gather a state load's or a reload's fan-out, then notify, audit and publish it."""
    gathered = await _gather(sup, session, scatter)
    outcome.collect(gathered)
    notify_safely(notify.READY)
    sup.changed(outcome.applied)
    target = f"{source} ok:{outcome.ok} errors:{len(outcome.errors)}"
    _record_batch(trail, outcome, gathered, target)
    sup.publish(event_for(request))


def _record_batch(
    trail: AuditTrail, outcome: BatchOutcome, gathered: Gathered, target: str
) -> None:
    if not outcome.errors:
        trail.record(RESULT_OK, fanout=gathered.fanout(), target=target)
        return
    code = gathered.error_code() or (ERROR_DISPATCH if outcome.refused else ERROR_IO)
    trail.record(
        RESULT_ERR,
        error_code=code,
        reason=outcome.summary(),
        fanout=gathered.fanout(),
        target=target,
    )


def notify_safely(state: str) -> None:
    try:
        notify.notify(state)
    except OSError as error:
        log.warning("sd_notify_failed", state=state.split("\n", 1)[0], error=str(error))


async def stop(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Soft or hard stop: audit, stop the workers, answer, then the supervisor exits."""
    hard = request.WhichOneof("request_type") == "hard_stop"
    AuditTrail.of(sup, session, request).record(RESULT_OK, elapsed=False)
    sup.publish(event_for(request))
    await session.processing(f"Performing {'hard' if hard else 'soft'} stop...")
    stopping = asyncio.ensure_future(sup.stop(hard=hard, requester=session))
    while True:  # a drain takes a while: PROCESSING keeps the client's read timeout at bay
        done, _ = await asyncio.wait({stopping}, timeout=HEARTBEAT_SECONDS)
        if done:
            break
        busy = sum(1 for worker in sup.workers.alive() if not worker.exited.is_set())
        await session.processing(f"Waiting for {busy} worker(s) to finish their connections")
    stopping.result()
    return False


async def not_for_clients(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    kind = request.WhichOneof("request_type")
    if kind == "launch_worker":
        message = "launch_worker is reserved by Sōzu and not acted upon"
    else:
        message = f"{kind} is sent by the main process to its workers, not by clients"
    await session.failure(message)
    return True


_HANDLERS: dict[str, Handler] = {
    "save_state": save_state,
    "load_state": load_state,
    "list_workers": list_workers,
    "list_frontends": list_frontends,
    "list_listeners": list_listeners,
    "launch_worker": not_for_clients,
    "return_listen_sockets": not_for_clients,
    "upgrade_main": upgrade_main,
    "upgrade_worker": upgrade_worker,
    "subscribe_events": subscribe_events,
    "reload_configuration": reload_configuration,
    "status": status,
    "query_cluster_by_id": query_workers,
    "query_clusters_by_domain": query_workers,
    "query_clusters_hashes": query_workers,
    "query_certificates_from_workers": query_workers,
    "query_certificates_from_the_state": certificates_from_state,
    "query_metrics": query_metrics,
    "query_health_checks": health_checks,
    "query_max_connections_per_ip": max_connections_per_ip,
    "count_requests": count_requests,
    "soft_stop": stop,
    "hard_stop": stop,
    "Logging": logging,
}

__all__ = ["BatchOutcome", "handle", "record_bad_input", "request_name"]
