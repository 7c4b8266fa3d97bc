"""BackendPool (sozu.worker.backends): rebuild, choice, stickiness, back-off and events."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    AddBackend,
    Cluster,
    EventKind,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    LoadMetric,
    RemoveBackend,
    Request,
    ResponseStatus,
)
from sozu.command.state import ConfigState
from sozu.worker.backends import (
    BACKOFF_MAX_TRIES,
    MAX_CONNECT_RETRIES,
    MAX_QUEUED_EVENTS,
    Backend,
    BackendPool,
    HealthChange,
    event_response,
)

RR = LoadBalancingAlgorithms.ROUND_ROBIN


def cluster(
    cluster_id: str = "app",
    algorithm: int = RR,
    sticky: bool = False,
    metric: int | None = None,
) -> Request:
    message = Cluster(
        cluster_id=cluster_id,
        sticky_session=sticky,
        https_redirect=False,
        load_balancing=algorithm,  # type: ignore[arg-type]
    )
    if metric is not None:
        message.load_metric = metric  # type: ignore[assignment]
    return Request(add_cluster=message)


def backend(
    backend_id: str,
    port: int,
    cluster_id: str = "app",
    weight: int | None = None,
    backup: bool = False,
    sticky_id: str | None = None,
    host: str = "127.0.0.1",
) -> Request:
    message = AddBackend(
        cluster_id=cluster_id,
        backend_id=backend_id,
        address=to_proto(f"{host}:{port}"),
        backup=backup,
    )
    if weight is not None:
        message.load_balancing_parameters.CopyFrom(LoadBalancingParams(weight=weight))
    if sticky_id is not None:
        message.sticky_id = sticky_id
    return Request(add_backend=message)


def state(*requests: Request) -> ConfigState:
    return ConfigState.from_requests(requests)


def pool_of(*requests: Request, seed: int = 1) -> BackendPool:
    pool = BackendPool(random.Random(seed))
    assert pool.rebuild(state(*requests)) == []
    return pool


def ids(pool: BackendPool, cluster_id: str = "app", now: float = 0.0, n: int = 6) -> list[str]:
    picked = [pool.choose(cluster_id, now) for _ in range(n)]
    return [b.backend_id if b else "-" for b in picked]


def three() -> tuple[Request, ...]:
    return cluster(), backend("a", 8001), backend("b", 8002), backend("c", 8003)


# --- rebuild -------------------------------------------------------------------------------


def test_backend_fields_from_the_state() -> None:
    pool = pool_of(
        cluster(),
        backend("a", 8001, weight=7, sticky_id="s-a"),
        backend("b", 8002, backup=True, host="[::1]"),
    )
    a, b = pool.backends("app")
    assert (a.cluster_id, a.backend_id, a.address, a.host, a.port) == (
        "app",
        "a",
        "127.0.0.1:8001",
        "127.0.0.1",
        8001,
    )
    assert (a.weight, a.backup, a.sticky_id) == (7, False, "s-a")
    assert (b.address, b.host, b.port) == ("[::1]:8002", "::1", 8002)
    assert (b.weight, b.backup, b.sticky_id) == (100, True, "b")  # defaults as Sōzu
    assert pool.cluster_policy("app") == (RR, False)
    assert pool.cluster_policy("nope") == (RR, False)


def test_rebuild_keeps_counters_and_back_off_of_backends_still_present() -> None:
    pool = pool_of(*three())
    a, b, c = pool.backends("app")
    pool.connection_opened(a)
    pool.connection_opened(a)
    pool.request_started(b)
    pool.connect_failed(c, 10.0)
    removed = pool.rebuild(state(*three()[:3], backend("d", 8004), backend("c", 8003, weight=5)))
    assert removed == []
    a2, b2, c2, d = pool.backends("app")
    assert (a2, b2, c2) == (a, b, c)
    assert (a.active_connections, b.active_requests, c.tries, c.weight) == (2, 1, 1, 5)
    assert d.active_connections == 0


def test_rebuild_returns_removed_backends_whose_counters_keep_working() -> None:
    pool = pool_of(*three())
    _, b, _ = pool.backends("app")
    pool.connection_opened(b)
    s = state(*three())
    s.apply(
        Request(
            remove_backend=RemoveBackend(
                cluster_id="app", backend_id="b", address=to_proto("127.0.0.1:8002")
            )
        )
    )
    pool.take_events()
    assert pool.rebuild(s) == [b]
    assert b.removed and not b.available(0.0)
    assert [x.backend_id for x in pool.backends("app")] == ["a", "c"]
    assert all(pool.choose("app", 0.0) is not b for _ in range(10))
    assert pool.take_events() == []  # still one connection open
    pool.connection_closed(b)
    assert b.active_connections == 0
    (event,) = pool.take_events()
    assert event.kind == EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS
    assert (event.backend_id, event.address) == ("b", to_proto("127.0.0.1:8002"))


def test_removing_an_idle_backend_reports_it_at_once() -> None:
    pool = pool_of(*three())
    pool.rebuild(state(cluster(), backend("a", 8001)))
    kinds = sorted(e.backend_id for e in pool.take_events())
    assert kinds == ["b", "c"]


def test_same_id_at_another_address_is_another_backend() -> None:
    pool = pool_of(cluster(), backend("a", 8001))
    (old,) = pool.backends("app")
    pool.connection_opened(old)
    s = state(cluster(), backend("a", 8009))
    assert pool.rebuild(s) == [old]
    (new,) = pool.backends("app")
    assert new is not old and new.active_connections == 0


def test_rebuild_keeps_the_round_robin_cursor_unless_the_policy_changes() -> None:
    pool = pool_of(*three())
    assert ids(pool, n=2) == ["a", "b"]
    pool.rebuild(state(*three()))
    assert ids(pool, n=1) == ["c"]
    pool.rebuild(state(cluster(algorithm=LoadBalancingAlgorithms.RANDOM), *three()[1:]))
    assert pool.cluster_policy("app")[0] == LoadBalancingAlgorithms.RANDOM
    pool.rebuild(state(*three()))
    assert ids(pool, n=3) == ["a", "b", "c"]


def test_removed_cluster_has_no_backend() -> None:
    pool = pool_of(*three())
    pool.rebuild(state())
    assert pool.choose("app", 0.0) is None
    assert pool.backends("app") == ()


# --- policies through the pool ---------------------------------------------------------------


def test_round_robin_cycle() -> None:
    assert ids(pool_of(*three())) == ["a", "b", "c", "a", "b", "c"]


def test_unknown_cluster_or_no_backend_gives_none() -> None:
    pool = pool_of(cluster())
    assert pool.choose("app", 0.0) is None
    assert pool.choose("other", 0.0) is None


@pytest.mark.parametrize(
    "algorithm",
    [
        LoadBalancingAlgorithms.ROUND_ROBIN,
        LoadBalancingAlgorithms.RANDOM,
        LoadBalancingAlgorithms.LEAST_LOADED,
        LoadBalancingAlgorithms.POWER_OF_TWO,
    ],
)
def test_weights_give_proportional_shares(algorithm: int) -> None:
    pool = pool_of(
        cluster(algorithm=algorithm),
        backend("a", 8001, weight=300),
        backend("b", 8002, weight=100),
    )
    counts: Counter[str] = Counter()
    open_connections: list[Backend] = []
    for _ in range(4000):
        chosen = pool.choose("app", 0.0)
        assert chosen is not None
        counts[chosen.backend_id] += 1
        # Load-based policies need load: keep connections open, closing the oldest.
        pool.connection_opened(chosen)
        open_connections.append(chosen)
        if len(open_connections) > 40:
            pool.connection_closed(open_connections.pop(0))
    assert counts["a"] / 4000 == pytest.approx(0.75, abs=0.05)


def test_least_loaded_picks_the_idle_backend() -> None:
    pool = pool_of(cluster(algorithm=LoadBalancingAlgorithms.LEAST_LOADED), *three()[1:])
    a, b, c = pool.backends("app")
    for backend_, n in ((a, 2), (b, 0), (c, 1)):
        for _ in range(n):
            pool.connection_opened(backend_)
    assert pool.choose("app", 0.0) is b


def test_least_loaded_by_requests_metric() -> None:
    pool = pool_of(
        cluster(algorithm=LoadBalancingAlgorithms.LEAST_LOADED, metric=LoadMetric.REQUESTS),
        *three()[1:],
    )
    a, b, c = pool.backends("app")
    pool.request_started(a)
    pool.request_started(b)
    assert pool.choose("app", 0.0) is c
    pool.request_finished(b)
    assert pool.choose("app", 0.0) is b


def test_power_of_two_never_picks_the_most_loaded() -> None:
    pool = pool_of(cluster(algorithm=LoadBalancingAlgorithms.POWER_OF_TWO), *three()[1:])
    _, _, c = pool.backends("app")
    for _ in range(5):
        pool.connection_opened(c)
    assert all(pool.choose("app", 0.0) is not c for _ in range(500))


# --- backups, stickiness, exclusion ----------------------------------------------------------


def test_backups_only_when_no_primary_is_available() -> None:
    pool = pool_of(
        cluster(),
        backend("a", 8001),
        backend("b", 8002),
        backend("spare", 8009, backup=True),
    )
    a, b, spare = pool.backends("app")
    assert "spare" not in ids(pool, n=20)
    pool.connect_failed(a, 0.0)
    assert set(ids(pool, now=0.5, n=10)) == {"b"}
    pool.connect_failed(b, 0.5)
    assert set(ids(pool, now=0.6, n=5)) == {"spare"}
    # a's one-second window ends at 1.0: primaries first again.
    assert set(ids(pool, now=1.0, n=5)) == {"a"}
    assert pool.choose("app", 0.6, exclude=[spare]) is None


def test_sticky_session_goes_to_its_backend() -> None:
    pool = pool_of(
        cluster(sticky=True),
        backend("a", 8001, sticky_id="alpha"),
        backend("b", 8002),
        backend("c", 8003),
    )
    a, b, c = pool.backends("app")
    assert pool.cluster_policy("app") == (RR, True)
    assert all(pool.choose("app", 0.0, sticky_id="alpha") is a for _ in range(5))
    assert all(pool.choose("app", 0.0, sticky_id="b") is b for _ in range(5))  # backend_id
    # An unknown value, an unavailable or excluded backend: ordinary balancing.
    assert pool.choose("app", 0.0, sticky_id="zzz") is not None
    assert pool.choose("app", 0.0, sticky_id="alpha", exclude=[a]) in (b, c)
    pool.connect_failed(c, 0.0)
    assert pool.choose("app", 0.1, sticky_id="c") in (a, b)
    assert pool.choose("app", 1.0, sticky_id="c") is c


def test_sticky_cookie_ignored_when_the_cluster_is_not_sticky() -> None:
    pool = pool_of(*three())
    assert ids(pool, n=3) == ["a", "b", "c"]
    assert [pool.choose("app", 0.0, sticky_id="c").backend_id for _ in range(2)] == [  # type: ignore[union-attr]
        "a",
        "b",
    ]


def test_exclusion_list_for_retries() -> None:
    pool = pool_of(*three())
    a, b, c = pool.backends("app")
    tried: list[Backend] = []
    for _ in range(MAX_CONNECT_RETRIES):
        chosen = pool.choose("app", 0.0, exclude=tried)
        assert chosen is not None and chosen not in tried
        tried.append(chosen)
    assert set(tried) == {a, b, c}
    assert pool.choose("app", 0.0, exclude=tried) is None
    assert MAX_CONNECT_RETRIES == 3


# --- health --------------------------------------------------------------------------------


def test_down_up_cycle_with_sozu_back_off() -> None:
    pool = pool_of(cluster(), backend("a", 8001), backend("b", 8002), seed=5)
    a, b = pool.backends("app")
    now = 100.0
    waits = []
    for i in range(BACKOFF_MAX_TRIES):
        assert a.available(now)
        change = pool.connect_failed(a, now)
        assert not a.available(now)
        # A failure inside the window does not count.
        assert pool.connect_failed(a, now + 0.1) is None
        assert a.tries == i + 1
        waits.append(a.wait)
        assert 1 <= a.wait < max(2, 2**i)
        assert pool.choose("app", now) is b
        if i < BACKOFF_MAX_TRIES - 1:
            assert change is None and not a.down
        else:
            assert change == HealthChange(a, up=False) and a.down
        now = a.retry_at()
    assert waits[0] == 1.0
    assert a.failures == 2 * BACKOFF_MAX_TRIES
    # Down but its window has ended: tried again (Sōzu keeps probing with live traffic).
    assert a.available(now)
    assert pool.connect_failed(a, now) is None  # already down: no second event
    assert 1 <= a.wait < 64
    now = a.retry_at()
    change = pool.connect_succeeded(a, now, connect_time=0.002)
    assert change == HealthChange(a, up=True)
    assert (a.down, a.tries, a.failures, a.wait) == (False, 0, 0, 0.0)
    assert pool.connect_succeeded(a, now) is None  # already up
    events = pool.take_events()
    assert [e.kind for e in events] == [EventKind.BACKEND_DOWN, EventKind.BACKEND_UP]
    assert events[0] == change.event.__class__(
        kind=EventKind.BACKEND_DOWN,
        cluster_id="app",
        backend_id="a",
        address=to_proto("127.0.0.1:8001"),
    )
    assert pool.take_events() == []


def test_a_success_resets_the_back_off_before_down() -> None:
    pool = pool_of(*three())
    a, _, _ = pool.backends("app")
    pool.connect_failed(a, 0.0)
    pool.connect_failed(a, 1.0)
    assert a.tries == 2
    assert pool.connect_succeeded(a, 5.0) is None
    assert a.tries == 0 and a.available(5.0)
    assert pool.take_events() == []


def test_whole_cluster_down_and_recovered_events() -> None:
    pool = pool_of(cluster(), backend("a", 8001), seed=2)
    (a,) = pool.backends("app")
    now = 0.0
    for _ in range(BACKOFF_MAX_TRIES):
        pool.connect_failed(a, now)
        now = a.retry_at()
    pool.connect_succeeded(a, now)
    kinds = [e.kind for e in pool.take_events()]
    assert kinds == [
        EventKind.BACKEND_DOWN,
        EventKind.NO_AVAILABLE_BACKENDS,
        EventKind.BACKEND_UP,
        EventKind.CLUSTER_RECOVERED,
    ]


def test_event_response_is_sozu_push_event() -> None:
    event = HealthChange(Backend("app", "a", "1.2.3.4:80", "1.2.3.4", 80), up=True).event
    response = event_response(event)
    assert (response.id, response.status) == ("EVENT", ResponseStatus.PROCESSING)
    assert response.content.event.kind == EventKind.BACKEND_UP


def test_connection_time_feeds_the_connection_time_metric() -> None:
    pool = pool_of(
        cluster(algorithm=LoadBalancingAlgorithms.LEAST_LOADED, metric=LoadMetric.CONNECTION_TIME),
        backend("slow", 8001),
        backend("fast", 8002),
    )
    slow, fast = pool.backends("app")
    pool.connect_succeeded(slow, 0.0, connect_time=0.3)
    pool.connect_succeeded(fast, 0.0, connect_time=0.001)
    assert pool.choose("app", 0.01) is fast


# --- property: never an unavailable or excluded backend ------------------------------------

actions = st.lists(
    st.tuples(
        st.sampled_from(["fail", "ok", "open", "close", "choose", "advance"]),
        st.integers(0, 4),
        st.floats(0, 5),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    algorithm=st.sampled_from([0, 1, 2, 3]),
    backups=st.lists(st.booleans(), min_size=1, max_size=5),
    weights=st.lists(st.integers(0, 5), min_size=5, max_size=5),
    steps=actions,
    seed=st.integers(0, 2**16),
)
def test_choose_never_returns_an_unavailable_or_excluded_backend(
    algorithm: int,
    backups: list[bool],
    weights: list[int],
    steps: list[tuple[str, int, float]],
    seed: int,
) -> None:
    requests = [cluster(algorithm=algorithm, sticky=True)]
    for i, is_backup in enumerate(backups):
        requests.append(backend(f"b{i}", 8000 + i, weight=weights[i], backup=is_backup))
    pool = pool_of(*requests, seed=seed)
    members = list(pool.backends("app"))
    now = 0.0
    for action, index, amount in steps:
        target = members[index % len(members)]
        if action == "fail":
            pool.connect_failed(target, now)
        elif action == "ok":
            pool.connect_succeeded(target, now)
        elif action == "open":
            pool.connection_opened(target)
        elif action == "close":
            pool.connection_closed(target)
        elif action == "advance":
            now += amount
        else:
            exclude = members[: index % (len(members) + 1)]
            chosen = pool.choose("app", now, sticky_id=target.backend_id, exclude=exclude)
            available = [m for m in members if m.available(now) and m not in exclude]
            if chosen is None:
                assert available == []
            else:
                assert chosen.available(now) and chosen not in exclude
                if chosen.backup and chosen is not target:
                    assert not any(not m.backup for m in available)


def test_on_event_callback_receives_events_as_they_happen() -> None:
    seen: list[int] = []
    pool = BackendPool(random.Random(0), on_event=lambda event: seen.append(event.kind))
    pool.rebuild(state(cluster(), backend("a", 8001)))
    (a,) = pool.backends("app")
    now = 0.0
    for _ in range(BACKOFF_MAX_TRIES):
        pool.connect_failed(a, now)
        now = a.retry_at()
    assert seen == [EventKind.BACKEND_DOWN, EventKind.NO_AVAILABLE_BACKENDS]
    assert pool.take_events() == []


def test_queued_events_are_bounded() -> None:
    pool = pool_of(cluster(), backend("a", 8001))
    for i in range(MAX_QUEUED_EVENTS + 10):
        pool.rebuild(state(cluster(), backend("a", 9000 + i)))
    events = pool.take_events()
    assert len(events) == MAX_QUEUED_EVENTS
    assert events[-1].address == to_proto(f"127.0.0.1:{9000 + MAX_QUEUED_EVENTS + 8}")
