"""Events for `SubscribeEvents` clients: what changed, pushed as it happens.

`event_for(request)` gives the `Event` that a change publishes, with the `EventKind`,
`cluster_id`, `backend_id` and `address` Sōzu fills for it (control-plane kinds such as
CLUSTER_ADDED, FRONTEND_REMOVED, LISTENER_ACTIVATED, STATE_SAVED). Workers' own events
(BACKEND_DOWN, HEALTH_CHECK_UNHEALTHY...) arrive as ready-made Events.

`EventHub` fans events out to subscribers. Each subscriber owns a bounded asyncio queue;
`publish` never blocks and never waits for a reader: when a subscriber's queue is full the
oldest event is dropped and counted (`Subscription.dropped`), so one slow `sozu events` client
cannot hold up a change or grow the supervisor's memory. The hub and its queues belong to the
supervisor's event loop; `publish` must be called from that loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sozu.command.proto import Event, EventKind, Request, SocketAddress

DEFAULT_QUEUE_SIZE = 1024
"""Events a subscriber may lag behind before the oldest ones are dropped."""

MAIN = "main"
"""Source of events the supervisor itself publishes (a worker's are its id, as text)."""


@dataclass(frozen=True)
class PublishedEvent:
    """An event and where it came from (`main`, or a worker id as text)."""

    source: str
    event: Event


class SubscriptionClosed(Exception):
    """Raised by `Subscription.get()` once the subscription is closed."""


class Subscription:
    """One subscriber's bounded queue of events; iterate it, or `await get()`.

    Closing it wakes a reader that waits: `get()` raises SubscriptionClosed and an
    `async for` loop ends; events still queued are discarded.
    """

    def __init__(self, hub: EventHub, maxsize: int) -> None:
        self._hub = hub
        # one extra slot so that the close marker always fits
        self._queue: asyncio.Queue[PublishedEvent | None] = asyncio.Queue(maxsize=maxsize + 1)
        self._maxsize = maxsize
        self.dropped = 0
        """Events this subscriber lost because it fell behind."""
        self.closed = False

    def _offer(self, item: PublishedEvent) -> None:
        if self.closed:
            return
        while self._queue.qsize() >= self._maxsize:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def get(self) -> Event:
        """The next event (waits for one); raises SubscriptionClosed once closed."""
        return (await self.get_published()).event

    async def get_published(self) -> PublishedEvent:
        """The next event with its source (waits for one); raises SubscriptionClosed."""
        if self.closed and self._queue.empty():
            raise SubscriptionClosed
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # keep other readers' wake-up
            raise SubscriptionClosed
        return item

    def get_nowait(self) -> PublishedEvent | None:
        """The next event with its source if one is queued, else None."""
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is None:
            self._queue.put_nowait(None)
        return item

    def pending(self) -> int:
        """Events queued and not read yet."""
        return 0 if self.closed else self._queue.qsize()

    def close(self) -> None:
        """Stop receiving events and wake a waiting reader (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._hub._discard(self)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[PublishedEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[PublishedEvent]:
        while True:
            try:
                yield await self.get_published()
            except SubscriptionClosed:
                return


class EventHub:
    """Publishes events to every subscription without ever blocking the publisher."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._subscriptions: list[Subscription] = []
        self.published = 0
        """Events published since the hub was created."""

    def subscribe(self) -> Subscription:
        """A new subscription; it receives events published from now on."""
        subscription = Subscription(self, self.queue_size)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Same as `subscription.close()`."""
        subscription.close()

    def publish(self, event: Event, source: str = MAIN) -> None:
        """Queue `event` for every subscriber; drops a slow subscriber's oldest event."""
        self.published += 1
        item = PublishedEvent(source, event)
        for subscription in list(self._subscriptions):
            subscription._offer(item)

    @property
    def subscribers(self) -> int:
        """Number of open subscriptions."""
        return len(self._subscriptions)

    def _discard(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)


def _event(
    kind: EventKind.ValueType,
    cluster_id: str | None = None,
    backend_id: str | None = None,
    address: SocketAddress | None = None,
) -> Event:
    event = Event(kind=kind)
    if cluster_id is not None:
        event.cluster_id = cluster_id
    if backend_id is not None:
        event.backend_id = backend_id
    if address is not None and address.IsInitialized():
        # an incomplete address would make the Event unserializable; leave it out
        event.address.CopyFrom(address)
    return event


def event_for(request: Request) -> Event | None:
    """The Event that a successful `request` publishes, None when it publishes none.

    As Sōzu: adding or removing a backend publishes nothing (workers report BACKEND_UP /
    BACKEND_DOWN when traffic reaches it), nor do queries, health-check and connection-limit
    settings.
    """
    variant = request.WhichOneof("request_type")
    if variant is None:
        return None
    r = request
    match variant:
        case "add_cluster":
            return _event(EventKind.CLUSTER_ADDED, cluster_id=r.add_cluster.cluster_id)
        case "remove_cluster":
            return _event(EventKind.CLUSTER_REMOVED, cluster_id=r.remove_cluster)
        case "add_http_frontend" | "add_https_frontend":
            front = getattr(r, variant)
            cid = front.cluster_id if front.HasField("cluster_id") else None
            return _event(EventKind.FRONTEND_ADDED, cluster_id=cid, address=front.address)
        case "remove_http_frontend" | "remove_https_frontend":
            front = getattr(r, variant)
            cid = front.cluster_id if front.HasField("cluster_id") else None
            return _event(EventKind.FRONTEND_REMOVED, cluster_id=cid, address=front.address)
        case "add_tcp_frontend" | "add_udp_frontend":
            front = getattr(r, variant)
            return _event(
                EventKind.FRONTEND_ADDED, cluster_id=front.cluster_id, address=front.address
            )
        case "remove_tcp_frontend" | "remove_udp_frontend":
            front = getattr(r, variant)
            return _event(
                EventKind.FRONTEND_REMOVED, cluster_id=front.cluster_id, address=front.address
            )
        case "add_certificate":
            return _event(EventKind.CERTIFICATE_ADDED, address=r.add_certificate.address)
        case "remove_certificate":
            return _event(EventKind.CERTIFICATE_REMOVED, address=r.remove_certificate.address)
        case "replace_certificate":
            return _event(EventKind.CERTIFICATE_REPLACED, address=r.replace_certificate.address)
        case "activate_listener":
            return _event(EventKind.LISTENER_ACTIVATED, address=r.activate_listener.address)
        case "deactivate_listener":
            return _event(EventKind.LISTENER_DEACTIVATED, address=r.deactivate_listener.address)
        case "add_http_listener" | "add_https_listener" | "add_tcp_listener" | ("add_udp_listener"):
            return _event(EventKind.LISTENER_ADDED, address=getattr(r, variant).address)
        case (
            "update_http_listener"
            | "update_https_listener"
            | "update_tcp_listener"
            | ("update_udp_listener")
        ):
            return _event(EventKind.LISTENER_UPDATED, address=getattr(r, variant).address)
        case "remove_listener":
            return _event(EventKind.LISTENER_REMOVED, address=r.remove_listener.address)
        case "save_state":
            return _event(EventKind.STATE_SAVED)
        case "load_state":
            return _event(EventKind.STATE_LOADED)
        case "reload_configuration":
            return _event(EventKind.CONFIGURATION_RELOADED)
        case "Logging":
            return _event(EventKind.LOGGING_LEVEL_CHANGED)
        case "configure_metrics":
            return _event(EventKind.METRICS_CONFIGURED)
        case "set_metric_detail":
            return _event(EventKind.METRIC_DETAIL_CHANGED)
        case "soft_stop" | "hard_stop":
            return _event(EventKind.SOZU_STOP_REQUESTED)
        case "upgrade_main":
            return _event(EventKind.MAIN_UPGRADED)
        case "upgrade_worker":
            return _event(EventKind.WORKER_UPGRADED)
        case "subscribe_events":
            return _event(EventKind.EVENTS_SUBSCRIBED)
    return None
