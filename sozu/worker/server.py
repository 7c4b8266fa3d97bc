"""The worker's command side: it consumes WorkerRequests from the supervisor and answers them.

`WorkerServer` owns the worker's `ConfigState`, the routing views derived from it, the pool of
listening sockets and the client sessions. Requests are handled one at a time in arrival order;
each gets exactly one final `WorkerResponse` with its id (OK, or FAILURE with the reason), as
Sōzu's worker does:

- a change of the state is applied to the worker's own `ConfigState` (refused: FAILURE with
  the state's message) and then to the routing tables; a change the state accepts but the
  proxy cannot use (an invalid answer template or frontend regex) answers FAILURE too, the
  state keeping it, as in Sōzu;
- `ActivateListener` starts accepting on the socket the supervisor sent (read from the scm
  socket when not held yet), `DeactivateListener` stops and closes this worker's copy,
  `RemoveListener` also forgets it;
- queries are answered from this worker's state with Sōzu's content kinds
  (`QueryClusterById` / `QueryClustersByDomain` -> `clusters`, `QueryClustersHashes` ->
  `cluster_hashes`, `QueryCertificatesFromWorkers` -> `certificates_by_address`, or
  `certificates_with_fingerprints` when filtered by fingerprint, `QueryMetrics` ->
  `worker_metrics`, `QueryMaxConnectionsPerIp` -> `max_connections_per_ip_limit`);
- `SoftStop`: PROCESSING at once, then stop accepting, let busy connections finish (their
  answers say `Connection: close`; at most `SOFT_STOP_GRACE` seconds, then they are cut),
  give idle keep-alive connections `DRAIN_IDLE_GRACE` seconds (a request already on its way is
  answered, not reset), answer OK and exit; `HardStop`: OK, then exit at once. If the
  channel to the supervisor closes, the worker drains the same way and exits without serving
  a configuration nobody can change any more.
- verbs the main process answers itself (`SaveState`, `ListWorkers`, `CountRequests`, ...)
  and those not supported yet (`ReturnListenSockets`, `SetMetricDetail`) answer FAILURE and
  the worker keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import cast

from sozu.command.addresses import to_proto, to_text
from sozu.command.channel import decode_payload, encode_message
from sozu.command.errors import AddressError
from sozu.command.framing import FrameDecoder, FrameError
from sozu.command.logging import LoggingError, get_logger, set_level
from sozu.command.proto import (
    CertificatesByAddress,
    ClusterInformations,
    HttpListenerConfig,
    HttpsListenerConfig,
    InitialState,
    ListenerType,
    ListOfCertificatesByAddress,
    MaxConnectionsPerIpLimit,
    Request,
    RequestHttpFrontend,
    ResponseContent,
    ResponseStatus,
    ServerConfig,
    SocketAddress,
    WorkerRequest,
    WorkerResponse,
)
from sozu.command.scm import Listeners
from sozu.command.state import ConfigState, StateError
from sozu.worker.access_log import AccessLog
from sozu.worker.backends import BackendPool, event_response
from sozu.worker.listeners import (
    KIND_NAMES,
    Edge,
    Kind,
    ListenerError,
    ListenerPool,
    ProtocolFactory,
)
from sozu.worker.metrics import CONNECTIONS, CONNECTIONS_MAX, Counters
from sozu.worker.protocol.answers import compile_answers, merged_answers
from sozu.worker.protocol.http1 import ClusterView, ListenerView, Routing
from sozu.worker.router import RouterError, hsts_line
from sozu.worker.session import ClosingSession, HttpSession, SessionHub, new_request_id

log = get_logger(__name__)

SOFT_STOP_GRACE = 5.0
"""Seconds a soft stop waits for busy connections before cutting them."""
SCM_TIMEOUT = 5.0
"""Seconds an ActivateListener waits for its socket on the scm socket."""
CHANNEL_FLUSH_TIMEOUT = 1.0

_MAIN_ONLY = frozenset(
    {
        "save_state",
        "load_state",
        "list_workers",
        "list_frontends",
        "list_listeners",
        "launch_worker",
        "upgrade_main",
        "upgrade_worker",
        "subscribe_events",
        "reload_configuration",
        "query_certificates_from_the_state",
        "count_requests",
        "query_health_checks",
    }
)
_NOT_YET = {
    "return_listen_sockets": "worker upgrades are not supported yet",
    "set_metric_detail": "metric detail leases are not supported yet",
}
_CLUSTER_CHANGES = frozenset(
    {
        "add_cluster",
        "remove_cluster",
        "add_backend",
        "remove_backend",
        "set_health_check",
        "remove_health_check",
    }
)
_LISTENER_CHANGES: dict[str, Kind] = {
    "add_http_listener": ListenerType.HTTP,
    "update_http_listener": ListenerType.HTTP,
    "add_https_listener": ListenerType.HTTPS,
    "update_https_listener": ListenerType.HTTPS,
}


def _cluster_id_of(content: Request, kind: str) -> str:
    """The cluster a cluster, backend or health-check change is about."""
    value = getattr(content, kind)
    return value if isinstance(value, str) else str(value.cluster_id)


Handler = Callable[[WorkerRequest, bool], Awaitable[WorkerResponse | None]]


def ok(request_id: str, content: ResponseContent | None = None) -> WorkerResponse:
    response = WorkerResponse(id=request_id, status=ResponseStatus.OK, message="")
    if content is not None:
        response.content.CopyFrom(content)
    return response


def failure(request_id: str, message: str) -> WorkerResponse:
    return WorkerResponse(id=request_id, status=ResponseStatus.FAILURE, message=message)


class _ChannelProtocol(asyncio.Protocol):
    """Bytes from the supervisor into the shared frame decoder; lost channel -> drain."""

    def __init__(self, server: WorkerServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.channel_opened(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.server.channel_data(data)

    def eof_received(self) -> bool | None:
        self.server.channel_lost("the supervisor closed the channel")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.channel_closed(exc)


class WorkerServer:
    """One worker: state, routing, listeners, sessions, and the channel to the supervisor."""

    def __init__(
        self,
        worker_id: int,
        config: ServerConfig,
        channel: socket.socket,
        decoder: FrameDecoder,
        scm: socket.socket,
        received: Listeners,
        max_buffer_size: int,
        access_logs_format: str | None = None,
    ) -> None:
        self.id = worker_id
        self.config = config
        self.state = ConfigState()
        self.routing = Routing()
        self.counters = Counters(self._gauges)
        self.backends = BackendPool(on_event=lambda event: self.send(event_response(event)))
        self.hub = SessionHub(
            self.routing,
            self.counters,
            int(config.max_connections),
            int(config.buffer_size),
            self.backends,
        )
        self.access_log = AccessLog.from_server_config(
            config, tag=f"WRK-{worker_id:02d}", fmt=access_logs_format
        )
        self.hub.access_log = self.access_log
        self.pool = ListenerPool(scm, received)
        self.edge = Edge(self.state, self.hub, self.backends, self.access_log, new_request_id)
        self.http_views: dict[str, ListenerView] = {}
        self.https_views: dict[str, ListenerView] = {}
        self.hub.max_per_ip = int(config.max_connections_per_ip)
        self.hub.retry_after = int(config.retry_after) if config.HasField("retry_after") else 60
        self._channel_sock = channel
        self._decoder = decoder
        self._max_buffer_size = max_buffer_size
        self._transport: asyncio.Transport | None = None
        self._channel_gone: asyncio.Future[None] | None = None
        self._queue: asyncio.Queue[WorkerRequest | None] = asyncio.Queue()
        self._exit: asyncio.Future[int] | None = None
        self._draining = False
        self._grace: asyncio.TimerHandle | None = None
        self._handlers: dict[str, Handler] = {
            "status": self._status,
            "soft_stop": self._soft_stop,
            "hard_stop": self._hard_stop,
            "Logging": self._logging,
            "query_cluster_by_id": self._query_cluster_by_id,
            "query_clusters_by_domain": self._query_clusters_by_domain,
            "query_clusters_hashes": self._query_clusters_hashes,
            "query_certificates_from_workers": self._query_certificates,
            "query_metrics": self._query_metrics,
            "configure_metrics": self._configure_metrics,
            "set_max_connections_per_ip": self._set_max_connections_per_ip,
            "query_max_connections_per_ip": self._query_max_connections_per_ip,
            "activate_listener": self._activate_listener,
            "deactivate_listener": self._deactivate_listener,
            "remove_listener": self._remove_listener,
        }

    # --- running ---------------------------------------------------------------------------

    async def serve(self, initial: InitialState) -> int:
        """Apply the initial state, then answer requests until told to stop; the exit code."""
        loop = asyncio.get_running_loop()
        self._exit = loop.create_future()
        refused = 0
        for request in initial.requests:
            response = await self.handle(request, initial=True)
            if response is not None and response.status == ResponseStatus.FAILURE:
                refused += 1
                log.warning("initial_request_refused", id=request.id, reason=response.message)
        log.info(
            "initial_state_applied",
            requests=len(initial.requests),
            refused=refused,
            listening=[f"{KIND_NAMES[k]} {a}" for k, a in self.pool.active()],
        )
        self._channel_sock.setblocking(False)
        await loop.connect_accepted_socket(lambda: _ChannelProtocol(self), sock=self._channel_sock)
        consumer = asyncio.create_task(self._consume())
        try:
            code = await self._exit
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await self._close()
        return code

    async def _consume(self) -> None:
        while True:
            request = await self._queue.get()
            if request is None:
                return
            try:
                response = await self.handle(request)
            except Exception as error:  # a bug must not leave the supervisor without answer
                log.exception("request_crashed", id=request.id)
                response = failure(request.id, f"internal error in the worker: {error!r}")
            if response is not None:
                self.send(response)

    async def handle(self, request: WorkerRequest, initial: bool = False) -> WorkerResponse | None:
        """The answer to one request (None when it was already sent, as for stops)."""
        kind = request.content.WhichOneof("request_type")
        try:
            if kind is None:
                return failure(request.id, "empty request: no request type set")
            handler = self._handlers.get(kind)
            if handler is not None:
                return await handler(request, initial)
            if kind in _MAIN_ONLY:
                return failure(request.id, f"{kind} is answered by the main process, not a worker")
            if kind in _NOT_YET:
                return failure(request.id, f"{kind}: {_NOT_YET[kind]}")
            return self._change(request)
        except StateError as error:
            log.debug("request_refused", id=request.id, kind=kind, reason=error.message)
            return failure(request.id, error.message)

    def _finish(self, code: int) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    async def _close(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        self.pool.close_all()
        self.hub.abort_all()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._channel_gone = loop.create_future()
            transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._channel_gone), CHANNEL_FLUSH_TIMEOUT)
        await asyncio.sleep(0)  # let aborted sessions run connection_lost

    # --- the channel -----------------------------------------------------------------------

    def channel_opened(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pump()  # frames that arrived with the handshake are already decoded here

    def channel_data(self, data: bytes) -> None:
        self._decoder.feed(data)
        self._pump()

    def _pump(self) -> None:
        while True:
            try:
                payload = self._decoder.next_payload()
                if payload is None:
                    return
                request = decode_payload(payload, WorkerRequest)
            except FrameError as error:
                if error.stream_usable:
                    log.warning("channel_message_undecodable", error=str(error))
                    continue
                self.channel_lost(f"unreadable channel: {error}")
                return
            self._queue.put_nowait(request)

    def channel_lost(self, reason: str) -> None:
        """The supervisor is gone: stop taking requests, drain, exit."""
        self._queue.put_nowait(None)
        if self._draining:
            return
        log.warning("main_process_gone", reason=reason)
        self._drain(lambda: self._finish(1))

    def channel_closed(self, exc: Exception | None) -> None:
        if self._channel_gone is not None and not self._channel_gone.done():
            self._channel_gone.set_result(None)
        if self._transport is not None:
            self._transport = None
            if self._exit is None or not self._exit.done():
                self.channel_lost(f"channel closed ({exc})" if exc else "channel closed")

    def send(self, response: WorkerResponse) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            log.debug("answer_dropped", id=response.id)
            return
        try:
            frame = encode_message(response, self._max_buffer_size)
        except FrameError as error:
            frame = encode_message(failure(response.id, f"answer not sent: {error}"), 1 << 20)
        transport.write(frame)

    # --- stops -----------------------------------------------------------------------------

    def _drain(self, then: Callable[[], None]) -> None:
        self._draining = True
        self.pool.stop_accepting()
        self.hub.drain()
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(SOFT_STOP_GRACE, self.hub.abort_all)
        self.hub.when_empty(then)

    async def _soft_stop(self, request: WorkerRequest, initial: bool) -> WorkerResponse | None:
        log.info("soft_stop", id=request.id, connections=len(self.hub.sessions))
        self.send(WorkerResponse(id=request.id, status=ResponseStatus.PROCESSING, message=""))
        if self._draining:
            return ok(request.id)

        def done() -> None:
            self.send(ok(request.id))
            self._finish(0)

        self._drain(done)
        return None

    async def _hard_stop(self, request: WorkerRequest, initial: bool) -> WorkerResponse | None:
        log.info("hard_stop", id=request.id, connections=len(self.hub.sessions))
        self.send(ok(request.id))
        self._finish(0)
        return None

    # --- simple verbs and queries -----------------------------------------------------------

    async def _status(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        return ok(request.id)

    async def _logging(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        try:
            set_level(request.content.Logging)
        except LoggingError as error:
            return failure(request.id, str(error))
        log.info("log_level_changed", filter=request.content.Logging)
        return ok(request.id)

    async def _query_cluster_by_id(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        info = self.state.cluster_information(request.content.query_cluster_by_id)
        infos = ClusterInformations(vec=[info] if info is not None else [])
        return ok(request.id, ResponseContent(clusters=infos))

    async def _query_clusters_by_domain(
        self, request: WorkerRequest, initial: bool
    ) -> WorkerResponse:
        query = request.content.query_clusters_by_domain
        path = query.path if query.HasField("path") else None
        infos = self.state.clusters_by_domain(query.hostname, path)
        return ok(request.id, ResponseContent(clusters=infos))

    async def _query_clusters_hashes(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        return ok(request.id, ResponseContent(cluster_hashes=self.state.cluster_hashes()))

    async def _query_certificates(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        filters = request.content.query_certificates_from_workers
        if filters.HasField("fingerprint"):
            found = self.state.certificates(filters)
            if not found.certs:
                return failure(request.id, f"no certificate with fingerprint {filters.fingerprint}")
            return ok(request.id, ResponseContent(certificates_with_fingerprints=found))
        domain = filters.domain.lower() if filters.HasField("domain") else None
        result = ListOfCertificatesByAddress()
        for listener in self.state.listeners(ListenerType.HTTPS):
            entry: CertificatesByAddress = result.certificates.add()
            entry.address.CopyFrom(listener.address)
            pairs = sorted(
                (name.lower(), fingerprint)
                for fingerprint, cert in self.state.certificates_at(listener.address).items()
                for name in cert.names
            )
            if domain is not None:
                pairs = _certificate_for(domain, pairs)
            for name, fingerprint in pairs:
                entry.certificate_summaries.add(domain=name, fingerprint=fingerprint)
        return ok(request.id, ResponseContent(certificates_by_address=result))

    async def _query_metrics(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        return ok(request.id, self.counters.query(request.content.query_metrics))

    async def _configure_metrics(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        self.counters.configure(request.content.configure_metrics)
        return ok(request.id)

    async def _set_max_connections_per_ip(
        self, request: WorkerRequest, initial: bool
    ) -> WorkerResponse:
        self.hub.set_max_per_ip(request.content.set_max_connections_per_ip)
        return ok(request.id)

    async def _query_max_connections_per_ip(
        self, request: WorkerRequest, initial: bool
    ) -> WorkerResponse:
        limit = MaxConnectionsPerIpLimit(limit=self.hub.max_per_ip)
        return ok(request.id, ResponseContent(max_connections_per_ip_limit=limit))

    def _gauges(self) -> dict[str, int]:
        return {
            CONNECTIONS: len(self.hub.sessions),
            CONNECTIONS_MAX: self.hub.max_connections,
            "configuration.clusters": len(self.state.cluster_ids()),
            "configuration.backends": self.state.count_backends(),
            "configuration.frontends": self.state.count_frontends(),
        }

    # --- listeners -------------------------------------------------------------------------

    async def _activate_listener(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        activate = request.content.activate_listener
        kind = activate.proxy
        if self.state.listener(kind, activate.address) is None:
            self.state.apply(request.content)  # raises the state's own "not found"
        address = to_text(activate.address)
        if kind == ListenerType.UDP:
            return failure(request.id, f"UDP listener {address}: UDP is not supported yet")
        if not self.pool.serving(kind, address):
            if not self.pool.holds(kind, address) and not initial:
                await self.pool.receive(kind, address, SCM_TIMEOUT)
            if self._draining:  # stopping: the state knows it, this worker does not accept
                self.pool.remove(kind, address)
                self.state.apply(request.content)
                return ok(request.id)
            try:
                context = self.edge.ssl_context(address) if kind == ListenerType.HTTPS else None
                header_timeout = self._proxy_header_timeout(kind, activate.address)
                await self.pool.activate(
                    kind, address, self._factory(kind, address), context, header_timeout
                )
            except ListenerError as error:
                log.warning("listener_not_activated", address=address, reason=str(error))
                return failure(request.id, str(error))
            if self._draining:  # the channel closed while it was being set up: not served
                self.pool.remove(kind, address)
                self.state.apply(request.content)
                return ok(request.id)
            log.info("listener_activated", kind=KIND_NAMES[kind], address=address)
        self.state.apply(request.content)
        return ok(request.id)

    def _proxy_header_timeout(self, kind: Kind, address: SocketAddress) -> float | None:
        """For an HTTP(S) listener with `expect_proxy`: how long its PROXY header may take
        (request_timeout, as in Sōzu); None for the others. TCP listeners follow their
        cluster's proxy_protocol instead (`sozu.worker.tcp`)."""
        config = self.state.listener(kind, address)
        if isinstance(config, HttpListenerConfig | HttpsListenerConfig) and config.expect_proxy:
            return float(config.request_timeout)
        return None

    async def _deactivate_listener(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        deactivate = request.content.deactivate_listener
        self.state.apply(request.content)
        address = to_text(deactivate.address)
        if self.pool.deactivate(deactivate.proxy, address):
            log.info("listener_deactivated", kind=KIND_NAMES[deactivate.proxy], address=address)
        return ok(request.id)

    async def _remove_listener(self, request: WorkerRequest, initial: bool) -> WorkerResponse:
        remove = request.content.remove_listener
        self.state.apply(request.content)
        address = to_text(remove.address)
        self.pool.remove(remove.proxy, address)
        views = {ListenerType.HTTP: self.http_views, ListenerType.HTTPS: self.https_views}
        views.get(remove.proxy, {}).pop(address, None)
        return ok(request.id)

    def _factory(self, kind: Kind, address: str) -> ProtocolFactory:
        if kind in (ListenerType.HTTP, ListenerType.HTTPS):
            view = self._listener_view(kind, address)
            hub = self.hub
            return lambda: HttpSession(hub, view)
        if kind == ListenerType.TCP:
            return self.edge.tcp_factory(address)
        hub = self.hub
        return lambda: ClosingSession(hub)

    def _listener_view(self, kind: Kind, address: str) -> ListenerView:
        views = self.https_views if kind == ListenerType.HTTPS else self.http_views
        view = views.get(address)
        if view is None:
            view = ListenerView(address, https=kind == ListenerType.HTTPS)
            views[address] = view
            self._refresh_listener(kind, address)
        return view

    def _refresh_listener(self, kind: Kind, address: str) -> list[str]:
        """Update a listener's view in place from the state; template errors, if any."""
        views = self.https_views if kind == ListenerType.HTTPS else self.http_views
        view = views.get(address)
        if view is None:
            view = views[address] = ListenerView(address, https=kind == ListenerType.HTTPS)
        try:
            config = self.state.listener(kind, to_proto(address))
        except (AddressError, StateError):
            config = None
        if not isinstance(config, HttpListenerConfig | HttpsListenerConfig):
            return []
        legacy = config.http_answers if config.HasField("http_answers") else None
        templates, errors = compile_answers(merged_answers(config.answers, legacy))
        view.templates = templates
        view.front_timeout = float(config.front_timeout)
        view.request_timeout = float(config.request_timeout)
        view.back_timeout = float(config.back_timeout)
        view.connect_timeout = float(config.connect_timeout)
        if config.sticky_name:
            view.sticky_name = config.sticky_name.encode("latin-1")
        if config.HasField("sozu_id_header") and config.sozu_id_header:
            view.id_header = config.sozu_id_header.encode("latin-1")
        public = to_text(config.public_address) if config.HasField("public_address") else address
        host, _, port = public.rpartition(":")
        view.public_ip = host.strip("[]").encode("ascii")
        view.public_port = port.encode("ascii")
        view.proto = b"https" if kind == ListenerType.HTTPS else b"http"
        if isinstance(config, HttpsListenerConfig):
            view.hsts = hsts_line(config.hsts if config.HasField("hsts") else None)
            view.strict_sni = (
                config.strict_sni_binding if config.HasField("strict_sni_binding") else True
            )
        return [f"listener {address}: {error}" for error in errors]

    # --- changes of the state --------------------------------------------------------------

    def _change(self, request: WorkerRequest) -> WorkerResponse:
        content = request.content
        self.state.apply(content)
        problems = self._update_views(content)
        problems += self.edge.changed(content)
        if problems:
            log.warning("change_not_usable", id=request.id, problems=problems)
            return failure(request.id, "; ".join(problems))
        return ok(request.id)

    def _update_views(self, content: Request) -> list[str]:
        kind = content.WhichOneof("request_type")
        if kind is None:
            return []
        if kind in _CLUSTER_CHANGES:
            return self._refresh_cluster(_cluster_id_of(content, kind))
        if kind in _LISTENER_CHANGES:
            address = to_text(getattr(content, kind).address)
            return self._refresh_listener(_LISTENER_CHANGES[kind], address)
        routers = {
            "add_http_frontend": self.routing.http,
            "remove_http_frontend": self.routing.http,
            "add_https_frontend": self.routing.https,
            "remove_https_frontend": self.routing.https,
        }.get(kind)
        if routers is None:
            return []
        front = getattr(content, kind)
        try:
            if kind.startswith("add_"):
                copy = RequestHttpFrontend()
                copy.CopyFrom(front)
                routers.add(copy)
            else:
                routers.remove(front)
        except RouterError as error:
            if kind.startswith("add_"):
                return [f"frontend not routable: {error}"]
        return []

    def _refresh_cluster(self, cluster_id: str) -> list[str]:
        self.hub.idle.drop(self.backends.rebuild(self.state))
        cluster = self.state.cluster(cluster_id)
        backends = len(self.state.backends(cluster_id))
        if cluster is None:
            self.routing.clusters.pop(cluster_id, None)
            return []
        answers = dict(cluster.answers)
        if cluster.HasField("answer_503"):
            answers.setdefault("503", cluster.answer_503)
        templates, errors = compile_answers(answers)
        self.routing.clusters[cluster_id] = ClusterView(
            cluster_id,
            https_redirect=cluster.https_redirect,
            https_redirect_port=(
                cluster.https_redirect_port if cluster.HasField("https_redirect_port") else None
            ),
            backends=backends,
            sticky_session=cluster.sticky_session,
            templates=templates,
            max_connections_per_ip=(
                cluster.max_connections_per_ip
                if cluster.HasField("max_connections_per_ip")
                else None
            ),
            retry_after=cluster.retry_after if cluster.HasField("retry_after") else None,
        )
        return [f"cluster {cluster_id}: {error}" for error in errors]


def _certificate_for(domain: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The certificate a TLS handshake for `domain` would pick: exact name, else wildcard."""
    for name, fingerprint in pairs:
        if name == domain:
            return [(name, fingerprint)]
    dot = domain.find(".")
    if dot > 0:
        wildcard = "*" + domain[dot:]
        for name, fingerprint in pairs:
            if name == wildcard:
                return [(name, fingerprint)]
    return []
