"""Load-balancing policies (sozu.worker.load_balancing), with seeded randomness."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from sozu.command.proto import LoadBalancingAlgorithms, LoadMetric
from sozu.worker.load_balancing import (
    LeastLoaded,
    PeakEWMA,
    PowerOfTwo,
    Random,
    RoundRobin,
    make_policy,
)

PICKS = 20_000


@dataclass(eq=False)
class Fake:
    name: str
    weight: int = 100
    active_connections: int = 0
    active_requests: int = 0
    connection_time: PeakEWMA = field(default_factory=PeakEWMA)


def fakes(*weights: int) -> list[Fake]:
    return [Fake(chr(ord("a") + i), w) for i, w in enumerate(weights)]


def shares(
    policy: RoundRobin | Random | LeastLoaded | PowerOfTwo, backends: list[Fake]
) -> dict[str, float]:
    policy.prepare(backends)
    rng = random.Random(7)
    counts = Counter(policy.pick(backends, rng, 0.0).name for _ in range(PICKS))
    return {b.name: counts[b.name] / PICKS for b in backends}


def test_round_robin_is_an_exact_cycle() -> None:
    backends = fakes(100, 100, 100)
    policy = RoundRobin()
    policy.prepare(backends)
    rng = random.Random(0)
    names = [policy.pick(backends, rng, 0.0).name for _ in range(9)]
    assert names == list("abcabcabc")


def test_round_robin_cursor_over_a_shrinking_candidate_list_stays_in_range() -> None:
    backends = fakes(100, 100, 100)
    policy = RoundRobin()
    policy.prepare(backends)
    rng = random.Random(0)
    assert [policy.pick(backends, rng, 0.0).name for _ in range(2)] == ["a", "b"]
    # "c" is the next; with only two candidates left the cursor wraps as Sōzu's does.
    assert policy.pick(backends[:2], rng, 0.0).name == "a"
    assert policy.pick(backends, rng, 0.0).name == "b"


def test_smooth_weighted_round_robin_interleaves_by_weight() -> None:
    backends = fakes(300, 100)
    policy = RoundRobin()
    policy.prepare(backends)
    rng = random.Random(0)
    names = "".join(policy.pick(backends, rng, 0.0).name for _ in range(8))
    assert names == "aabaaaba"
    assert Counter(names) == {"a": 6, "b": 2}


def test_weighted_round_robin_shares_are_exact_over_whole_cycles() -> None:
    got = shares(RoundRobin(), fakes(500, 300, 200))
    assert got == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2}, abs=0.001)


def test_random_without_weights_is_uniform() -> None:
    got = shares(Random(), fakes(100, 100, 100, 100))
    assert all(abs(share - 0.25) < 0.02 for share in got.values())


def test_random_honours_weights() -> None:
    got = shares(Random(), fakes(100, 300))
    assert got["a"] == pytest.approx(0.25, abs=0.02)
    assert got["b"] == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize("policy_type", [RoundRobin, Random, LeastLoaded, PowerOfTwo])
def test_weight_zero_is_never_picked_unless_every_weight_is_zero(policy_type: type) -> None:
    backends = fakes(100, 0, 100)
    got = shares(policy_type(), backends)
    assert got["b"] == 0
    backends = fakes(0, 0)
    got = shares(policy_type(), backends)
    assert got["a"] + got["b"] == 1


def test_random_with_a_negative_weight_is_uniform_as_sozu() -> None:
    got = shares(Random(), fakes(-1, 100))
    assert got["a"] == pytest.approx(0.5, abs=0.02)


def test_least_loaded_picks_the_idle_backend() -> None:
    backends = fakes(100, 100, 100)
    backends[0].active_connections = 3
    backends[1].active_connections = 0
    backends[2].active_connections = 1
    policy = LeastLoaded()
    policy.prepare(backends)
    assert policy.pick(backends, random.Random(0), 0.0) is backends[1]


def test_least_loaded_ties_go_to_the_first_backend() -> None:
    backends = fakes(100, 100)
    policy = LeastLoaded()
    policy.prepare(backends)
    assert policy.pick(backends, random.Random(0), 0.0) is backends[0]


def test_least_loaded_by_requests() -> None:
    backends = fakes(100, 100)
    backends[0].active_requests = 5
    backends[1].active_connections = 5
    policy = LeastLoaded(LoadMetric.REQUESTS)
    policy.prepare(backends)
    assert policy.pick(backends, random.Random(0), 0.0) is backends[1]


def test_least_loaded_by_connection_time_prefers_the_fast_backend() -> None:
    backends = fakes(100, 100)
    backends[0].connection_time.observe(0.200, 0.0)
    backends[1].connection_time.observe(0.010, 0.0)
    policy = LeastLoaded(LoadMetric.CONNECTION_TIME)
    policy.prepare(backends)
    assert policy.pick(backends, random.Random(0), 0.1) is backends[1]


def test_least_loaded_with_weights_divides_the_load() -> None:
    backends = fakes(200, 100)
    policy = LeastLoaded()
    policy.prepare(backends)
    rng = random.Random(0)
    for _ in range(300):
        chosen = policy.pick(backends, rng, 0.0)
        chosen.active_connections += 1
    assert backends[0].active_connections == pytest.approx(200, abs=2)


def test_power_of_two_never_picks_the_more_loaded_of_its_two_draws() -> None:
    backends = fakes(100, 100, 100, 100)
    for load, backend in enumerate(backends):
        backend.active_connections = load * 10
    got = shares(PowerOfTwo(), backends)
    assert got["d"] == 0  # the most loaded loses every draw it is in
    # a wins whenever drawn: 1/2 of the draws; b 1/3, c 1/6.
    assert got["a"] == pytest.approx(0.5, abs=0.02)
    assert got["b"] == pytest.approx(1 / 3, abs=0.02)
    assert got["c"] == pytest.approx(1 / 6, abs=0.02)


def test_power_of_two_with_a_single_candidate() -> None:
    backends = fakes(100)
    policy = PowerOfTwo()
    policy.prepare(backends)
    assert policy.pick(backends, random.Random(0), 0.0) is backends[0]


def test_power_of_two_spreads_equal_loads() -> None:
    got = shares(PowerOfTwo(), fakes(100, 100, 100))
    assert all(abs(share - 1 / 3) < 0.02 for share in got.values())


def test_peak_ewma_rises_at_once_and_decays() -> None:
    ewma = PeakEWMA()
    ewma.observe(0.5, 0.0)
    assert ewma.rtt == 0.5
    ewma.observe(0.1, 1.0)  # one decay constant later: e^-1 of the old value remains
    assert ewma.rtt == pytest.approx(0.5 * 0.3679 + 0.1 * 0.6321, rel=1e-3)
    assert ewma.cost(2, 1.0) == pytest.approx(3 * ewma.rtt)


def test_seeded_policies_are_reproducible() -> None:
    backends = fakes(100, 200, 300)
    for policy_type in (Random, PowerOfTwo):
        first, second = policy_type(), policy_type()
        first.prepare(backends)
        second.prepare(backends)
        rng1, rng2 = random.Random(3), random.Random(3)
        assert [first.pick(backends, rng1, 0.0) for _ in range(50)] == [
            second.pick(backends, rng2, 0.0) for _ in range(50)
        ]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (LoadBalancingAlgorithms.ROUND_ROBIN, RoundRobin),
        (LoadBalancingAlgorithms.RANDOM, Random),
        (LoadBalancingAlgorithms.LEAST_LOADED, LeastLoaded),
        (LoadBalancingAlgorithms.POWER_OF_TWO, PowerOfTwo),
        (LoadBalancingAlgorithms.HRW, RoundRobin),
    ],
)
def test_make_policy(algorithm: int, expected: type) -> None:
    assert type(make_policy(algorithm)) is expected


def test_make_policy_metric() -> None:
    policy = make_policy(LoadBalancingAlgorithms.POWER_OF_TWO, LoadMetric.REQUESTS)
    assert isinstance(policy, PowerOfTwo) and policy.metric == LoadMetric.REQUESTS
    default = make_policy(LoadBalancingAlgorithms.LEAST_LOADED)
    assert isinstance(default, LeastLoaded) and default.metric == LoadMetric.CONNECTIONS
