"""Load-balancing policies: which of a cluster's candidate backends takes the next connection.

A policy object belongs to one cluster. `BackendPool` (sozu.worker.backends) hands it the
candidates that may be used right now (available, not excluded, primaries or else backups) and
the policy returns one of them. Policies follow Sōzu's `lib/src/load_balancing.rs`:

- `RoundRobin`: a cursor over the candidate list. Sōzu's round robin ignores weights; here,
  when a cluster's backends carry different weights, the cursor becomes a smooth weighted
  round robin (nginx's algorithm), so weights 3:1 give a a b a... With equal weights (the
  default, 100 each) the cycle is exactly Sōzu's.
- `Random`: weighted random choice, as Sōzu (`WeightedIndex` over the weights; uniform when
  every weight is zero or one is negative).
- `LeastLoaded`: the lowest load metric wins (CONNECTIONS: open connections, REQUESTS:
  requests in flight, CONNECTION_TIME: peak-EWMA connect time times open connections + 1);
  a tie goes to the earliest backend, as Sōzu's `min_by_key`.
- `PowerOfTwo`: two distinct candidates drawn at random, the less loaded one wins (a tie goes
  to the first draw). Sōzu's own code keeps the two least loaded candidates of one pass and
  tosses a coin between them; the issue asks for the classic two random choices.

Weights in LEAST_LOADED and POWER_OF_TWO (Sōzu ignores them there): when a cluster's weights
differ, the load compared is `(load + 1) / weight`, so a backend of weight 200 takes about twice
the connections of one of weight 100. In every policy a weight of 0 means "never, unless every
candidate has weight 0" (draining a backend without removing it).

Sans-io: no clock, socket or global random state; `now` (seconds, any monotonic origin) and a
`random.Random` are parameters, so a seeded generator gives a reproducible sequence.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from sozu.command.proto import LoadBalancingAlgorithms, LoadMetric

DEFAULT_WEIGHT = 100
"""Weight of a backend whose `load_balancing_parameters` are absent (Sōzu's value)."""

EWMA_DECAY = 1.0
"""Seconds over which the connect-time estimate decays back towards new observations (Sōzu: 1 s)."""

EWMA_INITIAL_RTT = 0.050
"""Starting connect-time estimate, high enough that a new backend does not take all the traffic."""

# Plain ints: attribute access on protobuf enum wrappers is slow for the hot path.
_CONNECTIONS = int(LoadMetric.CONNECTIONS)
_REQUESTS = int(LoadMetric.REQUESTS)


class PeakEWMA:
    """Peak exponentially weighted moving average of connect times (Sōzu's `PeakEWMA`).

    A rising observation replaces the estimate at once; a falling one blends in with weight
    `1 - exp(-elapsed / decay)`. `cost(n, now)` first decays the estimate towards zero for the
    time elapsed since the last event, then returns `(n + 1) * estimate`.
    """

    __slots__ = ("decay", "last_event", "rtt")

    def __init__(self, decay: float = EWMA_DECAY, rtt: float = EWMA_INITIAL_RTT) -> None:
        self.decay = decay
        self.rtt = rtt
        self.last_event: float | None = None

    def observe(self, rtt: float, now: float) -> None:
        if rtt > self.rtt:
            self.rtt = rtt
        elif self.last_event is not None:
            elapsed = max(0.0, now - self.last_event)
            weight = math.exp(-elapsed / self.decay)
            self.rtt = self.rtt * weight + rtt * (1.0 - weight)
        self.last_event = now

    def cost(self, active: int, now: float) -> float:
        self.observe(0.0, now)
        return (active + 1) * self.rtt


class Candidate(Protocol):
    """What a policy reads of a backend."""

    @property
    def weight(self) -> int: ...

    @property
    def active_connections(self) -> int: ...

    @property
    def active_requests(self) -> int: ...

    @property
    def connection_time(self) -> PeakEWMA: ...


C = TypeVar("C", bound=Candidate)


class Policy(Protocol):
    """One cluster's policy. `prepare` sees every backend of the cluster after each rebuild."""

    def prepare(self, backends: Sequence[Candidate]) -> None: ...

    def pick(self, candidates: Sequence[C], rng: random.Random, now: float) -> C: ...


def uniform_weights(backends: Sequence[Candidate]) -> bool:
    """True when weights do not change anything: all equal, or one negative (Sōzu: uniform)."""
    weights = {b.weight for b in backends}
    return len(weights) <= 1 or min(weights) < 0


def _weighted(candidates: Sequence[C]) -> list[C]:
    """The candidates of weight > 0, or all of them when none has (weight 0: last resort)."""
    kept = [c for c in candidates if c.weight > 0]
    return kept or list(candidates)


class RoundRobin:
    """Sōzu's cursor round robin; smooth weighted round robin when the weights differ."""

    def __init__(self) -> None:
        self.next_index = 0
        self._uniform = True
        self._current: dict[int, int] = {}  # id(backend) -> current weight (smooth WRR)

    def prepare(self, backends: Sequence[Candidate]) -> None:
        self._uniform = uniform_weights(backends)
        alive = {id(b) for b in backends}
        self._current = {k: v for k, v in self._current.items() if k in alive}

    def pick(self, candidates: Sequence[C], rng: random.Random, now: float) -> C:
        if not self._uniform:
            chosen = self._smooth(candidates)
            if chosen is not None:
                return chosen
        index = self.next_index % len(candidates)
        self.next_index = (index + 1) % len(candidates)
        return candidates[index]

    def _smooth(self, candidates: Sequence[C]) -> C | None:
        total = 0
        best: C | None = None
        best_current = 0
        current = self._current
        for c in candidates:
            weight = c.weight
            if weight <= 0:
                continue
            total += weight
            value = current.get(id(c), 0) + weight
            current[id(c)] = value
            if best is None or value > best_current:
                best, best_current = c, value
        if best is not None:
            current[id(best)] = best_current - total
        return best


class Random:
    """Weighted random choice (Sōzu's `Random`)."""

    def __init__(self) -> None:
        self._uniform = True

    def prepare(self, backends: Sequence[Candidate]) -> None:
        self._uniform = uniform_weights(backends)

    def pick(self, candidates: Sequence[C], rng: random.Random, now: float) -> C:
        if not self._uniform:
            total = sum(c.weight for c in candidates)
            if total > 0:
                point = rng.random() * total
                for c in candidates:
                    point -= c.weight
                    if point < 0:
                        return c
                return next(c for c in reversed(candidates) if c.weight > 0)
        return candidates[int(rng.random() * len(candidates))]


def _load(c: Candidate, metric: int, now: float) -> float:
    if metric == _CONNECTIONS:
        return c.active_connections
    if metric == _REQUESTS:
        return c.active_requests
    return c.connection_time.cost(c.active_connections, now)


def _weighted_load(c: Candidate, metric: int, now: float) -> float:
    return (_load(c, metric, now) + 1) / max(c.weight, 1)


class LeastLoaded:
    """The candidate with the lowest load metric; ties go to the earliest one."""

    def __init__(self, metric: int = _CONNECTIONS) -> None:
        self.metric = metric
        self._uniform = True

    def prepare(self, backends: Sequence[Candidate]) -> None:
        self._uniform = uniform_weights(backends)

    def pick(self, candidates: Sequence[C], rng: random.Random, now: float) -> C:
        metric = self.metric
        if self._uniform:
            if metric == _CONNECTIONS:
                best = candidates[0]
                lowest = best.active_connections
                for c in candidates:
                    if c.active_connections < lowest:
                        best, lowest = c, c.active_connections
                return best
            return min(candidates, key=lambda c: _load(c, metric, now))
        return min(_weighted(candidates), key=lambda c: _weighted_load(c, metric, now))


class PowerOfTwo:
    """Two distinct random candidates; the less loaded one wins, a tie goes to the first draw."""

    def __init__(self, metric: int = _CONNECTIONS) -> None:
        self.metric = metric
        self._uniform = True

    def prepare(self, backends: Sequence[Candidate]) -> None:
        self._uniform = uniform_weights(backends)

    def pick(self, candidates: Sequence[C], rng: random.Random, now: float) -> C:
        pool = candidates if self._uniform else _weighted(candidates)
        count = len(pool)
        if count == 1:
            return pool[0]
        random_ = rng.random
        first = int(random_() * count)
        second = int(random_() * (count - 1))
        if second >= first:
            second += 1
        a, b = pool[first], pool[second]
        if self._uniform:
            if self.metric == _CONNECTIONS:
                return b if b.active_connections < a.active_connections else a
            return b if _load(b, self.metric, now) < _load(a, self.metric, now) else a
        cost_a = _weighted_load(a, self.metric, now)
        return b if _weighted_load(b, self.metric, now) < cost_a else a


def make_policy(algorithm: int, metric: int | None = None) -> Policy:
    """The policy object for a cluster's `load_balancing` and `load_metric` (default CONNECTIONS).

    HRW and MAGLEV (refused for HTTP and TCP clusters upstream) behave as round robin here, as
    Sōzu's do when no affinity key is given.
    """
    chosen_metric = _CONNECTIONS if metric is None else metric
    if algorithm == LoadBalancingAlgorithms.RANDOM:
        return Random()
    if algorithm == LoadBalancingAlgorithms.LEAST_LOADED:
        return LeastLoaded(chosen_metric)
    if algorithm == LoadBalancingAlgorithms.POWER_OF_TWO:
        return PowerOfTwo(chosen_metric)
    return RoundRobin()
