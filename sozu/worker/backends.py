"""The backends of every cluster in a worker: their counters, their health and the choice of one.

`BackendPool` is built from the worker's ConfigState (`rebuild`, after every change) and asked
for a backend per connection attempt (`choose`). It follows Sōzu's `lib/src/backends.rs` and
`retry.rs`:

- A backend is identified by (cluster, backend id, address). A rebuild keeps the `Backend`
  object, and so its counters and retry state, of every backend still configured, and updates
  its weight, backup flag and sticky id. Removed backends are returned; sessions holding one keep
  using it (its counters keep working) until their exchange ends.
- Choice: the sticky backend first (cluster with `sticky_session`, a live backend whose sticky id
  is the cookie's value), else the cluster's policy (sozu.worker.load_balancing) over the
  available primaries, else over the available backups, else None (the proxy answers 503).
- Health, Sōzu's exponential back-off (`ExponentialBackoffPolicy::new(6)`): each failed connect
  counts one try, unless it falls inside the current wait window, and opens a wait window of 1 s
  after the first try, then a whole number of seconds drawn in [1, 2**tries) (at most 63 s). A
  backend is skipped while its window lasts. Six counted tries mark it down (Event BACKEND_DOWN);
  a down backend is still tried whenever its window ends, and a successful connect resets
  everything (Event BACKEND_UP when it was down). When every backend of a cluster is down the
  pool also reports NO_AVAILABLE_BACKENDS, then CLUSTER_RECOVERED; a removed backend whose last
  connection closes gives REMOVED_BACKEND_HAS_NO_CONNECTIONS, as Sōzu's workers do.

Events are protobuf `Event`s. The worker publishes each one to the main process as
`event_response(event)` (a WorkerResponse with id "EVENT", status PROCESSING: Sōzu's
`push_event`), either from the `on_event` callback, called as each event happens, or by
draining `take_events()` (without a callback, the last MAX_QUEUED_EVENTS are kept). The
`HealthChange` that `connect_failed` and `connect_succeeded` return is the same news for the
caller's own logging: publish events from one place only, or they are sent twice.

Sans-io (DESIGN.md rule 3): `now` (seconds on any monotonic clock) and a `random.Random` are
parameters; nothing here reads a clock or a socket.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from sozu.command.proto import (
    Event,
    EventKind,
    LoadBalancingAlgorithms,
    ResponseContent,
    ResponseStatus,
    SocketAddress,
    WorkerResponse,
)
from sozu.command.state import ConfigState, address_from_key, address_key, address_key_text
from sozu.worker.load_balancing import DEFAULT_WEIGHT, PeakEWMA, Policy, make_policy

MAX_CONNECT_RETRIES = 3
"""Connection attempts per request before the proxy answers 503 (Sōzu's `CONN_RETRIES`)."""

BACKOFF_MAX_TRIES = 6
"""Counted failures that mark a backend down (Sōzu: `ExponentialBackoffPolicy::new(6)`)."""

MAX_QUEUED_EVENTS = 1024
"""Events kept for `take_events()` when no `on_event` callback is set (the oldest are dropped)."""

EVENT_ID = "EVENT"
"""Id of the WorkerResponse that carries an Event to the main process (Sōzu's `push_event`)."""


@dataclass(eq=False, slots=True)
class Backend:
    """One backend of one cluster; mutable counters, compared by identity."""

    cluster_id: str
    backend_id: str
    address: str
    """`IP:PORT` text, IPv6 in brackets (as Sōzu prints it)."""
    host: str
    """The IP alone (no brackets), for `loop.create_connection(host=..., port=...)`."""
    port: int
    weight: int = DEFAULT_WEIGHT
    backup: bool = False
    sticky_id: str = ""
    """Value of the sticky cookie that selects this backend (its backend_id when unset)."""
    active_connections: int = 0
    active_requests: int = 0
    failures: int = 0
    """Consecutive failed connects (every one, counted or not by the back-off)."""
    tries: int = 0
    """Failures counted by the back-off; BACKOFF_MAX_TRIES of them mean down."""
    last_try: float = 0.0
    wait: float = 0.0
    """Seconds after `last_try` during which the backend is skipped."""
    removed: bool = False
    """No longer configured: never chosen again; counters still kept for in-flight exchanges."""
    connection_time: PeakEWMA = field(default_factory=PeakEWMA)
    socket_address: SocketAddress = field(default_factory=SocketAddress)

    @property
    def down(self) -> bool:
        """Marked down by the back-off (still retried whenever its wait window ends)."""
        return self.tries >= BACKOFF_MAX_TRIES

    def available(self, now: float) -> bool:
        """May be chosen at `now`: configured and outside its wait window."""
        return not self.removed and (self.wait == 0.0 or now - self.last_try >= self.wait)

    def retry_at(self) -> float:
        """When the current wait window ends (`last_try` when there is none)."""
        return self.last_try + self.wait


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A backend went down (`up` False) or came back (`up` True)."""

    backend: Backend
    up: bool

    @property
    def event(self) -> Event:
        return _backend_event(
            EventKind.BACKEND_UP if self.up else EventKind.BACKEND_DOWN, self.backend
        )


def event_response(event: Event) -> WorkerResponse:
    """The WorkerResponse that carries `event` to the main process (id "EVENT", PROCESSING)."""
    return WorkerResponse(
        id=EVENT_ID,
        status=ResponseStatus.PROCESSING,
        message="",
        content=ResponseContent(event=event),
    )


def _backend_event(kind: EventKind.ValueType, backend: Backend) -> Event:
    event = Event(kind=kind, backend_id=backend.backend_id, cluster_id=backend.cluster_id)
    event.address.CopyFrom(backend.socket_address)
    return event


class _Cluster:
    """One cluster's backends, split for the hot path, and its policy."""

    __slots__ = (
        "algorithm",
        "all_down",
        "backends",
        "backups",
        "failing",
        "metric",
        "policy",
        "primaries",
        "sticky",
        "sticky_session",
    )

    def __init__(self, algorithm: int, metric: int | None, sticky_session: bool) -> None:
        self.algorithm = algorithm
        self.metric = metric
        self.sticky_session = sticky_session
        self.policy: Policy = make_policy(algorithm, metric)
        self.backends: list[Backend] = []
        self.primaries: list[Backend] = []
        self.backups: list[Backend] = []
        self.sticky: dict[str, Backend] = {}
        self.failing = 0  # backends with a back-off in progress (tries > 0)
        self.all_down = False

    def fill(self, backends: list[Backend]) -> None:
        self.backends = backends
        self.primaries = [b for b in backends if not b.backup]
        self.backups = [b for b in backends if b.backup]
        self.sticky = {}
        for b in backends:
            self.sticky.setdefault(b.sticky_id, b)
        self.failing = sum(1 for b in backends if b.tries > 0)
        self.policy.prepare(backends)

    def every_backend_down(self) -> bool:
        return bool(self.backends) and all(b.down for b in self.backends)


class BackendPool:
    """Every cluster's backends in one worker, and the choice of one per connection attempt."""

    def __init__(
        self,
        rng: random.Random | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._clusters: dict[str, _Cluster] = {}
        self._events: deque[Event] = deque(maxlen=MAX_QUEUED_EVENTS)
        self.on_event = on_event
        """Called with each event as it happens; when None, events wait for `take_events()`."""

    # --- configuration -------------------------------------------------------------------

    def rebuild(self, state: ConfigState) -> list[Backend]:
        """Take the clusters and backends of `state`; returns the backends no longer configured.

        Backends still configured keep their object (counters, back-off); a cluster whose
        policy and metric did not change keeps its policy's position (round-robin cursor).
        """
        previous = self._clusters
        old = {
            (b.cluster_id, b.backend_id, b.address): b
            for cluster in previous.values()
            for b in cluster.backends
        }
        clusters: dict[str, _Cluster] = {}
        for cluster_id in state.cluster_ids():
            config = state.cluster(cluster_id)
            if config is None:  # pragma: no cover - listed ids exist
                continue
            metric = config.load_metric if config.HasField("load_metric") else None
            kept = previous.get(cluster_id)
            if kept is not None and (kept.algorithm, kept.metric) == (
                config.load_balancing,
                metric,
            ):
                kept.sticky_session = config.sticky_session
                cluster = kept
            else:
                cluster = _Cluster(config.load_balancing, metric, config.sticky_session)
            backends: list[Backend] = []
            for add in state.backends(cluster_id):
                key = address_key(add.address)
                text = address_key_text(key)
                backend = old.pop((cluster_id, add.backend_id, text), None)
                if backend is None:
                    host = text.rsplit(":", 1)[0]
                    backend = Backend(
                        cluster_id=cluster_id,
                        backend_id=add.backend_id,
                        address=text,
                        host=host[1:-1] if host.startswith("[") else host,
                        port=key[2],
                        socket_address=address_from_key(key),
                    )
                backend.weight = (
                    add.load_balancing_parameters.weight
                    if add.HasField("load_balancing_parameters")
                    else DEFAULT_WEIGHT
                )
                backend.backup = add.backup
                backend.sticky_id = add.sticky_id if add.HasField("sticky_id") else add.backend_id
                backends.append(backend)
            cluster.fill(backends)
            clusters[cluster_id] = cluster
        self._clusters = clusters
        removed = list(old.values())
        for backend in removed:
            backend.removed = True
            if backend.active_connections == 0:
                self._emit(_backend_event(EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS, backend))
        for cluster_id, cluster in clusters.items():
            self._check_cluster(cluster_id, cluster)
        return removed

    def cluster_policy(self, cluster_id: str) -> tuple[LoadBalancingAlgorithms.ValueType, bool]:
        """The cluster's (load_balancing, sticky_session); (ROUND_ROBIN, False) when unknown."""
        cluster = self._clusters.get(cluster_id)
        if cluster is None:
            return LoadBalancingAlgorithms.ROUND_ROBIN, False
        return LoadBalancingAlgorithms.ValueType(cluster.algorithm), cluster.sticky_session

    def backends(self, cluster_id: str) -> Sequence[Backend]:
        """The configured backends of a cluster, in the state's order."""
        cluster = self._clusters.get(cluster_id)
        return () if cluster is None else tuple(cluster.backends)

    # --- choice --------------------------------------------------------------------------

    def choose(
        self,
        cluster_id: str,
        now: float,
        sticky_id: str | None = None,
        exclude: Collection[Backend] = (),
    ) -> Backend | None:
        """The backend for the next connection attempt to `cluster_id`, or None (answer 503).

        `sticky_id` is the value of the request's sticky cookie, if any; `exclude` holds the
        backends this request already failed to reach.
        """
        cluster = self._clusters.get(cluster_id)
        if cluster is None:
            return None
        if sticky_id is not None and cluster.sticky_session:
            backend = cluster.sticky.get(sticky_id)
            if backend is not None and backend.available(now) and backend not in exclude:
                return backend
        if cluster.failing == 0 and not exclude:
            candidates = cluster.primaries or cluster.backups
        else:
            candidates = [
                b for b in cluster.primaries if b.available(now) and b not in exclude
            ] or [b for b in cluster.backups if b.available(now) and b not in exclude]
        if not candidates:
            return None
        return cluster.policy.pick(candidates, self._rng, now)

    # --- counters ------------------------------------------------------------------------

    def connection_opened(self, b: Backend) -> None:
        b.active_connections += 1

    def connection_closed(self, b: Backend) -> None:
        if b.active_connections > 0:
            b.active_connections -= 1
            if b.removed and b.active_connections == 0:
                self._emit(_backend_event(EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS, b))

    def request_started(self, b: Backend) -> None:
        b.active_requests += 1

    def request_finished(self, b: Backend) -> None:
        if b.active_requests > 0:
            b.active_requests -= 1

    # --- health --------------------------------------------------------------------------

    def connect_failed(self, b: Backend, now: float) -> HealthChange | None:
        """A connect to `b` failed at `now`: back off; a change when `b` has just gone down."""
        b.failures += 1
        if b.wait and now - b.last_try < b.wait:
            return None  # inside the wait window: Sōzu's policy does not count it
        was_down = b.down
        if b.tries == 0 and not b.removed:
            self._cluster_add_failing(b, 1)
        ceiling = 1 << b.tries
        b.wait = 1.0 if ceiling <= 1 else float(self._rng.randrange(1, ceiling))
        b.last_try = now
        b.tries = min(b.tries + 1, BACKOFF_MAX_TRIES)
        if was_down or not b.down:
            return None
        change = HealthChange(b, up=False)
        self._emit(change.event)
        self._recheck(b)
        return change

    def connect_succeeded(
        self, b: Backend, now: float, connect_time: float | None = None
    ) -> HealthChange | None:
        """A connect to `b` succeeded (in `connect_time` seconds, if known): reset its back-off."""
        if connect_time is not None:
            b.connection_time.observe(connect_time, now)
        b.failures = 0
        if b.tries == 0:
            return None
        was_down = b.down
        if not b.removed:
            self._cluster_add_failing(b, -1)
        b.tries = 0
        b.wait = 0.0
        b.last_try = now
        if not was_down:
            return None
        change = HealthChange(b, up=True)
        self._emit(change.event)
        self._recheck(b)
        return change

    # --- events --------------------------------------------------------------------------

    def take_events(self) -> list[Event]:
        """Events since the last call, oldest first; send each with `event_response`."""
        events = list(self._events)
        self._events.clear()
        return events

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
        else:
            self._events.append(event)

    def _cluster_add_failing(self, b: Backend, delta: int) -> None:
        cluster = self._clusters.get(b.cluster_id)
        if cluster is not None:
            cluster.failing += delta

    def _recheck(self, b: Backend) -> None:
        cluster = self._clusters.get(b.cluster_id)
        if cluster is not None and not b.removed:
            self._check_cluster(b.cluster_id, cluster)

    def _check_cluster(self, cluster_id: str, cluster: _Cluster) -> None:
        all_down = cluster.every_backend_down()
        if all_down == cluster.all_down:
            return
        cluster.all_down = all_down
        kind = EventKind.NO_AVAILABLE_BACKENDS if all_down else EventKind.CLUSTER_RECOVERED
        self._emit(Event(kind=kind, cluster_id=cluster_id))
