"""EventHub fan-out (bounded, drop-oldest) and the Event each change publishes."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf.descriptor import FieldDescriptor

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    Cluster,
    Event,
    EventKind,
    HttpListenerConfig,
    ListenerType,
    RemoveListener,
    Request,
    RequestHttpFrontend,
    RequestTcpFrontend,
    Status,
    UpdateHttpsListenerConfig,
)
from sozu.supervisor.events import MAIN, EventHub, PublishedEvent, SubscriptionClosed, event_for
from tests.unit.supervisor.samples import minimal_request

ONEOF = Request.DESCRIPTOR.oneofs_by_name["request_type"]
ADDR = to_proto("127.0.0.1:8080")


def cluster_event(n: int) -> Event:
    return Event(kind=EventKind.CLUSTER_ADDED, cluster_id=f"c{n}")


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    first, second = hub.subscribe(), hub.subscribe()
    assert hub.subscribers == 2
    for n in range(3):
        hub.publish(cluster_event(n))
    hub.publish(Event(kind=EventKind.BACKEND_DOWN, backend_id="b"), source="1")
    for sub in (first, second):
        got = [await sub.get() for _ in range(3)]
        assert [e.cluster_id for e in got] == ["c0", "c1", "c2"]
        published = await sub.get_published()
        assert published == PublishedEvent("1", Event(kind=EventKind.BACKEND_DOWN, backend_id="b"))
        assert sub.dropped == 0
    assert hub.published == 4


async def test_slow_subscriber_loses_the_oldest_and_never_blocks() -> None:
    hub = EventHub(queue_size=3)
    slow, fast = hub.subscribe(), hub.subscribe()
    received: list[str] = []
    for n in range(10):
        hub.publish(cluster_event(n))  # synchronous, returns at once
        item = fast.get_nowait()
        assert item is not None
        received.append(item.event.cluster_id)
    assert received == [f"c{n}" for n in range(10)]
    assert fast.dropped == 0
    assert slow.pending() == 3
    assert slow.dropped == 7
    assert [(await slow.get()).cluster_id for _ in range(3)] == ["c7", "c8", "c9"]
    assert slow.get_nowait() is None


async def test_waiting_subscriber_is_woken() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    hub.publish(cluster_event(1))
    assert (await asyncio.wait_for(waiter, 1)).cluster_id == "c1"


async def test_async_iteration_and_close() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    for n in range(2):
        hub.publish(cluster_event(n))
    seen = []
    async for item in sub:
        assert item.source == MAIN
        seen.append(item.event.cluster_id)
        if len(seen) == 2:
            sub.close()
    assert seen == ["c0", "c1"]
    assert hub.subscribers == 0
    sub.close()  # idempotent
    hub.unsubscribe(sub)
    hub.publish(cluster_event(3))
    assert sub.pending() == 0


async def test_subscription_starts_empty() -> None:
    hub = EventHub()
    hub.publish(cluster_event(0))
    late = hub.subscribe()
    assert late.pending() == 0


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventHub(queue_size=0)


KINDS = {
    "add_cluster": EventKind.CLUSTER_ADDED,
    "remove_cluster": EventKind.CLUSTER_REMOVED,
    "add_http_frontend": EventKind.FRONTEND_ADDED,
    "add_https_frontend": EventKind.FRONTEND_ADDED,
    "add_tcp_frontend": EventKind.FRONTEND_ADDED,
    "add_udp_frontend": EventKind.FRONTEND_ADDED,
    "remove_http_frontend": EventKind.FRONTEND_REMOVED,
    "remove_https_frontend": EventKind.FRONTEND_REMOVED,
    "remove_tcp_frontend": EventKind.FRONTEND_REMOVED,
    "remove_udp_frontend": EventKind.FRONTEND_REMOVED,
    "add_certificate": EventKind.CERTIFICATE_ADDED,
    "remove_certificate": EventKind.CERTIFICATE_REMOVED,
    "replace_certificate": EventKind.CERTIFICATE_REPLACED,
    "activate_listener": EventKind.LISTENER_ACTIVATED,
    "deactivate_listener": EventKind.LISTENER_DEACTIVATED,
    "add_http_listener": EventKind.LISTENER_ADDED,
    "add_https_listener": EventKind.LISTENER_ADDED,
    "add_tcp_listener": EventKind.LISTENER_ADDED,
    "add_udp_listener": EventKind.LISTENER_ADDED,
    "update_http_listener": EventKind.LISTENER_UPDATED,
    "update_https_listener": EventKind.LISTENER_UPDATED,
    "update_tcp_listener": EventKind.LISTENER_UPDATED,
    "update_udp_listener": EventKind.LISTENER_UPDATED,
    "remove_listener": EventKind.LISTENER_REMOVED,
    "save_state": EventKind.STATE_SAVED,
    "load_state": EventKind.STATE_LOADED,
    "reload_configuration": EventKind.CONFIGURATION_RELOADED,
    "Logging": EventKind.LOGGING_LEVEL_CHANGED,
    "configure_metrics": EventKind.METRICS_CONFIGURED,
    "set_metric_detail": EventKind.METRIC_DETAIL_CHANGED,
    "soft_stop": EventKind.SOZU_STOP_REQUESTED,
    "hard_stop": EventKind.SOZU_STOP_REQUESTED,
    "upgrade_main": EventKind.MAIN_UPGRADED,
    "upgrade_worker": EventKind.WORKER_UPGRADED,
    "subscribe_events": EventKind.EVENTS_SUBSCRIBED,
}


@pytest.mark.parametrize("field", list(ONEOF.fields), ids=lambda f: f.name)
def test_event_for_every_variant(field: FieldDescriptor) -> None:
    event = event_for(minimal_request(field))
    if field.name in KINDS:
        assert event is not None and event.kind == KINDS[field.name]
        assert event.IsInitialized()
    else:
        assert event is None


def test_event_fields() -> None:
    assert event_for(Request()) is None
    assert event_for(Request(add_cluster=Cluster(cluster_id="app"))) == Event(
        kind=EventKind.CLUSTER_ADDED, cluster_id="app"
    )
    assert event_for(Request(remove_cluster="app")) == Event(
        kind=EventKind.CLUSTER_REMOVED, cluster_id="app"
    )
    front = RequestHttpFrontend(cluster_id="app", address=ADDR, hostname="h")
    assert event_for(Request(add_http_frontend=front)) == Event(
        kind=EventKind.FRONTEND_ADDED, cluster_id="app", address=ADDR
    )
    deny = RequestHttpFrontend(address=ADDR, hostname="h")
    event = event_for(Request(remove_https_frontend=deny))
    assert event is not None and not event.HasField("cluster_id")
    assert event.address == ADDR
    assert event_for(
        Request(add_tcp_frontend=RequestTcpFrontend(cluster_id="db", address=ADDR))
    ) == Event(kind=EventKind.FRONTEND_ADDED, cluster_id="db", address=ADDR)
    assert event_for(Request(add_certificate=AddCertificate(address=ADDR))) == Event(
        kind=EventKind.CERTIFICATE_ADDED, address=ADDR
    )
    activate = ActivateListener(address=ADDR, proxy=ListenerType.HTTP)
    assert event_for(Request(activate_listener=activate)) == Event(
        kind=EventKind.LISTENER_ACTIVATED, address=ADDR
    )
    assert event_for(Request(add_http_listener=HttpListenerConfig(address=ADDR))) == Event(
        kind=EventKind.LISTENER_ADDED, address=ADDR
    )
    update = UpdateHttpsListenerConfig(address=ADDR, front_timeout=3)
    assert event_for(Request(update_https_listener=update)) == Event(
        kind=EventKind.LISTENER_UPDATED, address=ADDR
    )
    remove = RemoveListener(address=ADDR, proxy=ListenerType.TCP)
    assert event_for(Request(remove_listener=remove)) == Event(
        kind=EventKind.LISTENER_REMOVED, address=ADDR
    )
    # as Sōzu: backends publish nothing from the main process
    backend = AddBackend(cluster_id="app", backend_id="b", address=ADDR)
    assert event_for(Request(add_backend=backend)) is None
    assert event_for(Request(status=Status())) is None


async def test_close_wakes_a_waiting_reader() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    waiter = asyncio.create_task(sub.get())
    seen: list[str] = []

    async def iterate() -> None:
        async for item in sub:
            seen.append(item.event.cluster_id)

    loop_task = asyncio.create_task(iterate())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(loop_task, 1)
    assert seen == []
    with pytest.raises(SubscriptionClosed):
        await sub.get()


async def test_close_discards_queued_events() -> None:
    hub = EventHub(queue_size=2)
    sub = hub.subscribe()
    hub.publish(cluster_event(1))
    sub.close()
    assert sub.pending() == 0
    assert [item async for item in sub] == []
