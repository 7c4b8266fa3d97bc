"""The counters a worker keeps, and its answer to `QueryMetrics` (Sōzu's `WorkerMetrics`).

Only what this worker really measures: accepted and refused connections, requests, and the
answers it wrote by status, under Sōzu's metric names (`http.requests`, `http.404.errors`,
`client.connections`, ...). Per-cluster and per-backend metrics, time series and percentiles
come with proxying and the observability issue; until then `clusters` is empty.
`ConfigureMetrics` DISABLED stops counting, ENABLED resumes, CLEAR sets every count to zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sozu.command.proto import (
    AvailableMetrics,
    FilteredMetrics,
    MetricsConfiguration,
    QueryMetricsOptions,
    ResponseContent,
    WorkerMetrics,
)

ACCEPTED = "listener.accepted.total"
REJECTED = "client.connections.rejected"  # ours: over max_connections, accepted then closed
REQUESTS = "http.requests"
PARSE_ERRORS = "http.frontend_parse_errors"
CONNECTIONS = "client.connections"
CONNECTIONS_MAX = "client.connections_max"

_ERROR_NAMES = {
    400: "http.400.errors",
    401: "http.401.errors",
    404: "http.404.errors",
    408: "http.408.errors",
    413: "http.413.errors",
    502: "http.502.errors",
    503: "http.503.errors",
    504: "http.504.errors",
}
_REDIRECT_NAMES = {301: "http.301.redirection", 302: "http.302.redirection"}


def _answer_names(status: int) -> tuple[str, ...]:
    name = _ERROR_NAMES.get(status) or _REDIRECT_NAMES.get(status)
    family = f"http.status.{status // 100}xx"
    return (family,) if name is None else (name, family)


_ANSWER_NAMES = {status: _answer_names(status) for status in range(100, 600)}


class Counters:
    """Monotonic counts of one worker; gauges are read when asked (`gauges`)."""

    __slots__ = ("counts", "enabled", "gauges")

    def __init__(self, gauges: Callable[[], dict[str, int]] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.enabled = True
        self.gauges = gauges or dict

    def incr(self, name: str, value: int = 1) -> None:
        if self.enabled:
            self.counts[name] += value

    def answered(self, status: int) -> None:
        """Count one answer written by the proxy itself."""
        if not self.enabled:
            return
        counts = self.counts
        for name in _ANSWER_NAMES.get(status) or _answer_names(status):
            counts[name] += 1

    def configure(self, configuration: int) -> None:
        if configuration == MetricsConfiguration.ENABLED:
            self.enabled = True
        elif configuration == MetricsConfiguration.DISABLED:
            self.enabled = False
        elif configuration == MetricsConfiguration.CLEAR:
            self.counts.clear()

    def query(self, options: QueryMetricsOptions) -> ResponseContent:
        """Sōzu's worker answer: AvailableMetrics when listing, else WorkerMetrics."""
        gauges = self.gauges()
        if options.list:
            names = sorted({*self.counts, *gauges})
            return ResponseContent(available_metrics=AvailableMetrics(proxy_metrics=names))
        wanted = set(options.metric_names)
        metrics = WorkerMetrics()
        for name, count in sorted(self.counts.items()):
            if not wanted or name in wanted:
                metrics.proxy[name].CopyFrom(FilteredMetrics(count=count))
        for name, gauge in sorted(gauges.items()):
            if not wanted or name in wanted:
                metrics.proxy[name].CopyFrom(FilteredMetrics(gauge=gauge))
        return ResponseContent(worker_metrics=metrics)
