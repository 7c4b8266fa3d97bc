"""Answers as text: aligned tables for people, JSON for scripts.

Every function returns a string (the CLI prints it), so rendering is tested without a terminal.
Human output: one table per kind of thing, columns aligned with two spaces, `-` for an absent
value. JSON output (`--json`): the answer's `ResponseContent` as protobuf's JSON mapping with the
schema's field names (`MessageToDict(..., preserving_proto_field_name=True)`), e.g.
`{"workers": {"vec": [{"id": 0, "pid": 1234, "run_state": "RUNNING"}]}}`, or `{}` when the answer
carries no content. Events are one line each (one JSON object per line with `--json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from sozu.command import addresses
from sozu.command import certificate as certificates
from sozu.command.errors import SozuError
from sozu.command.proto import (
    AggregatedMetrics,
    AvailableMetrics,
    CertificatesWithFingerprints,
    ClusterMetrics,
    Event,
    EventKind,
    FilteredMetrics,
    HealthChecksList,
    ListedFrontends,
    ListenersList,
    ListOfCertificatesByAddress,
    LoadBalancingAlgorithms,
    MaxConnectionsPerIpLimit,
    MetricDetail,
    MetricDetailStatus,
    PathRule,
    PathRuleKind,
    RequestCounts,
    Response,
    ResponseContent,
    RulePosition,
    RunState,
    SocketAddress,
    TlsVersion,
    WorkerInfos,
    WorkerMetricDetailStatus,
    WorkerMetrics,
    WorkerResponses,
)

ABSENT = "-"


# --------------------------------------------------------------------------------------------
# Primitives


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, headers in capitals; no trailing spaces."""
    cells = [[str(h).upper() for h in headers]]
    cells += [[ABSENT if c is None or c == "" else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append(line.rstrip())
    return "\n".join(lines)


def to_json(message: Message) -> Any:
    """A protobuf message as plain JSON values, with the schema's field names."""
    return MessageToDict(message, preserving_proto_field_name=True)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def address(value: SocketAddress) -> str:
    try:
        return addresses.to_text(value)
    except SozuError:
        return "?"


def _optional_address(message: Message, field: str) -> str | None:
    return address(getattr(message, field)) if message.HasField(field) else None


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _optional(message: Message, field: str) -> object:
    return getattr(message, field) if message.HasField(field) else None


def _tags(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={tags[key]}" for key in sorted(tags))


def path_text(rule: PathRule) -> str:
    """`prefix "/api"`, `regex "^/v[0-9]+"`, `equals "/health"`."""
    kind = PathRuleKind.Name(rule.kind).lower() if rule.kind in PathRuleKind.values() else "?"
    return f'{kind} "{rule.value}"'


def _process_order(key: str) -> tuple[int, int, str]:
    """`main` first, then worker ids in numeric order, then anything else."""
    if key == "main":
        return (0, 0, key)
    if key.isdigit():
        return (1, int(key), key)
    return (2, 0, key)


def _process_name(key: str) -> str:
    return "main" if key == "main" else f"worker {key}"


def _section(title: str, body: str) -> str:
    return f"{title}\n{body}"


# --------------------------------------------------------------------------------------------
# Content kinds


def workers(infos: WorkerInfos) -> str:
    rows = [
        (worker.id, worker.pid, RunState.Name(worker.run_state))
        for worker in sorted(infos.vec, key=lambda w: w.id)
    ]
    if not rows:
        return "no worker"
    return table(("worker", "pid", "run state"), rows)


def frontends(listed: ListedFrontends) -> str:
    parts = []
    for title, fronts in (
        ("HTTP frontends", listed.http_frontends),
        ("HTTPS frontends", listed.https_frontends),
    ):
        if fronts:
            rows: list[tuple[object, ...]] = [
                (
                    front.cluster_id if front.HasField("cluster_id") else "deny",
                    address(front.address),
                    front.hostname,
                    path_text(front.path),
                    _optional(front, "method"),
                    RulePosition.Name(front.position),
                    _tags(front.tags),
                )
                for front in fronts
            ]
            headers: tuple[str, ...] = (
                "cluster",
                "address",
                "hostname",
                "path",
                "method",
                "position",
                "tags",
            )
            parts.append(_section(title, table(headers, rows)))
    for title, simple in (
        ("TCP frontends", listed.tcp_frontends),
        ("UDP frontends", listed.udp_frontends),
    ):
        if simple:
            rows = [(f.cluster_id, address(f.address), _tags(f.tags)) for f in simple]
            parts.append(_section(title, table(("cluster", "address", "tags"), rows)))
    return "\n\n".join(parts) if parts else "no frontend"


def _sorted_listeners(listeners: Mapping[str, Any]) -> list[Any]:
    return [listeners[key] for key in sorted(listeners)]


_HTTP_LISTENER_HEADERS = (
    "address",
    "public address",
    "active",
    "expect proxy",
    "sticky name",
    "front",
    "back",
    "connect",
    "request",
)


def _http_listener_cells(listener: Any) -> tuple[object, ...]:
    """The columns that HTTP and HTTPS listeners share (`_HTTP_LISTENER_HEADERS`)."""
    return (
        address(listener.address),
        _optional_address(listener, "public_address"),
        _yes(listener.active),
        _yes(listener.expect_proxy),
        listener.sticky_name,
        listener.front_timeout,
        listener.back_timeout,
        listener.connect_timeout,
        listener.request_timeout,
    )


def listeners(listed: ListenersList) -> str:
    rows: list[tuple[object, ...]]
    headers: tuple[str, ...]
    parts = []
    if listed.http_listeners:
        rows = [
            _http_listener_cells(listener) for listener in _sorted_listeners(listed.http_listeners)
        ]
        parts.append(_section("HTTP listeners", table(_HTTP_LISTENER_HEADERS, rows)))
    if listed.https_listeners:
        rows = [
            (
                *_http_listener_cells(listener),
                ",".join(TlsVersion.Name(v) for v in listener.versions),
                ",".join(listener.alpn_protocols),
            )
            for listener in _sorted_listeners(listed.https_listeners)
        ]
        headers = (*_HTTP_LISTENER_HEADERS, "tls versions", "alpn")
        parts.append(_section("HTTPS listeners", table(headers, rows)))
    if listed.tcp_listeners:
        rows = [
            (
                address(listener.address),
                _optional_address(listener, "public_address"),
                _yes(listener.active),
                _yes(listener.expect_proxy),
                listener.front_timeout,
                listener.back_timeout,
                listener.connect_timeout,
            )
            for listener in _sorted_listeners(listed.tcp_listeners)
        ]
        headers = (
            "address",
            "public address",
            "active",
            "expect proxy",
            "front",
            "back",
            "connect",
        )
        parts.append(_section("TCP listeners", table(headers, rows)))
    if listed.udp_listeners:
        rows = [
            (
                address(listener.address),
                _optional_address(listener, "public_address"),
                _yes(listener.active),
                listener.front_timeout,
                listener.back_timeout,
                listener.max_rx_datagram_size,
                listener.max_flows,
            )
            for listener in _sorted_listeners(listed.udp_listeners)
        ]
        headers = (
            "address",
            "public address",
            "active",
            "front",
            "back",
            "max datagram",
            "max flows",
        )
        parts.append(_section("UDP listeners", table(headers, rows)))
    return "\n\n".join(parts) if parts else "no listener"


def _certificate_dates(pem: str) -> tuple[str, str]:
    try:
        leaf = certificates.load_leaf(pem)
    except SozuError:
        return ("?", "?")
    return (
        leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def certificates_with_fingerprints(certs: CertificatesWithFingerprints) -> str:
    if not certs.certs:
        return "no certificate matches"
    rows = []
    for fingerprint in sorted(certs.certs):
        cert = certs.certs[fingerprint]
        not_before, not_after = _certificate_dates(cert.certificate)
        rows.append((fingerprint, not_before, not_after, ", ".join(cert.names)))
    return table(("fingerprint", "not before", "not after", "names"), rows)


def certificates_by_address(listed: ListOfCertificatesByAddress) -> str:
    if not listed.certificates:
        return "no certificate"
    parts = []
    for entry in listed.certificates:
        rows = [(s.fingerprint, s.domain) for s in entry.certificate_summaries]
        body = table(("fingerprint", "domain"), rows) if rows else "no certificate"
        parts.append(_section(address(entry.address), body))
    return "\n\n".join(parts)


def request_counts(counts: RequestCounts) -> str:
    if not counts.map:
        return "no request counted"
    return table(("request", "count"), [(name, counts.map[name]) for name in sorted(counts.map)])


def max_connections(limit: MaxConnectionsPerIpLimit) -> str:
    value = "unlimited (0)" if limit.limit == 0 else str(limit.limit)
    return f"max connections per (cluster, source IP): {value}"


def health_checks(listed: HealthChecksList) -> str:
    if not listed.map:
        return "no health check"
    rows = []
    for cluster_id in sorted(listed.map):
        check = listed.map[cluster_id]
        rows.append(
            (
                cluster_id,
                check.uri,
                f"{check.interval}s",
                f"{check.timeout}s",
                check.healthy_threshold,
                check.unhealthy_threshold,
                check.expected_status or "any 2xx",
            )
        )
    headers = ("cluster", "uri", "interval", "timeout", "healthy", "unhealthy", "expected status")
    return table(headers, rows)


def _detail(value: MetricDetail.ValueType) -> str:
    return MetricDetail.Name(value).removeprefix("DETAIL_").lower()


def metric_detail(status: MetricDetailStatus) -> str:
    rows: list[tuple[object, ...]] = [
        (
            "main",
            _detail(status.configured),
            _detail(status.previous_effective),
            _detail(status.effective),
            None,
        )
    ]
    for worker_id in sorted(status.workers, key=_process_order):
        w: WorkerMetricDetailStatus = status.workers[worker_id]
        rows.append(
            (
                f"worker {worker_id}",
                _detail(w.configured),
                _detail(w.previous_effective),
                _detail(w.effective),
                w.active_lease_count,
            )
        )
    return table(("scope", "configured", "previous", "effective", "leases"), rows)


def available_metrics(available: AvailableMetrics) -> str:
    lines = ["proxy metrics:"]
    lines += [f"  {name}" for name in available.proxy_metrics]
    lines.append("cluster metrics:")
    lines += [f"  {name}" for name in available.cluster_metrics]
    return "\n".join(lines)


def _metric_tables(metrics: Mapping[str, FilteredMetrics]) -> str:
    """Plain values, percentiles and histograms of one metric map (tabs in names become dots)."""
    values: list[tuple[object, ...]] = []
    percentiles: list[tuple[object, ...]] = []
    histograms: list[tuple[object, ...]] = []
    for raw_name in sorted(metrics):
        name = raw_name.replace("\t", ".")
        metric = metrics[raw_name]
        kind = metric.WhichOneof("inner")
        if kind in ("gauge", "count", "time"):
            values.append((name, kind, getattr(metric, kind)))
        elif kind == "percentiles":
            p = metric.percentiles
            percentiles.append(
                (name, p.samples, p.p_50, p.p_90, p.p_99, p.p_99_9, p.p_99_99, p.p_99_999, p.p_100)
            )
        elif kind == "histogram":
            h = metric.histogram
            previous = 0
            buckets = []
            for bucket in h.buckets:
                buckets.append(f"{bucket.le}:{bucket.count - previous}")
                previous = bucket.count
            histograms.append((name.removesuffix("_histogram"), h.sum, h.count, " ".join(buckets)))
        elif kind == "time_serie":
            values.append((name, "last second", metric.time_serie.last_second))
    parts = []
    if values:
        parts.append(table(("metric", "kind", "value"), values))
    if percentiles:
        headers: tuple[str, ...] = (
            "percentiles",
            "samples",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "p99.999",
            "p100",
        )
        parts.append(table(headers, percentiles))
    if histograms:
        parts.append(table(("histogram (ms)", "sum", "count", "buckets le:count"), histograms))
    return "\n\n".join(parts) if parts else "no metric"


def _cluster_metrics(clusters: Mapping[str, ClusterMetrics]) -> list[str]:
    parts = []
    for cluster_id in sorted(clusters):
        cluster = clusters[cluster_id]
        parts.append(_section(f"cluster {cluster_id}", _metric_tables(cluster.cluster)))
        for backend in sorted(cluster.backends, key=lambda b: b.backend_id):
            parts.append(
                _section(
                    f"backend {cluster_id}/{backend.backend_id}", _metric_tables(backend.metrics)
                )
            )
    return parts


def worker_metrics(metrics: WorkerMetrics) -> str:
    parts = [_section("proxy", _metric_tables(metrics.proxy))]
    parts += _cluster_metrics(metrics.clusters)
    return "\n\n".join(parts)


def aggregated_metrics(metrics: AggregatedMetrics) -> str:
    parts = [_section("main process", _metric_tables(metrics.main))]
    if metrics.proxying:
        parts.append(_section("proxying", _metric_tables(metrics.proxying)))
    for worker_id in sorted(metrics.workers, key=_process_order):
        parts.append(_section(f"worker {worker_id}", worker_metrics(metrics.workers[worker_id])))
    parts += _cluster_metrics(metrics.clusters)
    return "\n\n".join(parts)


def event_text(event: Event) -> str:
    """`cluster added cluster=app`, `backend down cluster=app backend=app-0 address=...`."""
    kind = EventKind.Name(event.kind) if event.kind in EventKind.values() else str(event.kind)
    words = [kind.lower().replace("_", " ")]
    if event.HasField("cluster_id"):
        words.append(f"cluster={event.cluster_id}")
    if event.HasField("backend_id"):
        words.append(f"backend={event.backend_id}")
    if event.HasField("address"):
        words.append(f"address={address(event.address)}")
    if event.HasField("metric_detail"):
        transition = event.metric_detail
        words.append(
            f"detail={_detail(transition.previous_effective)}->{_detail(transition.effective)}"
            f" ({transition.transition_kind})"
        )
    return " ".join(words)


def event_line(response: Response, as_json: bool) -> str | None:
    """One line for a streamed event answer; None when the answer carries no event."""
    if not response.HasField("content") or response.content.WhichOneof("content_type") != "event":
        return None
    origin = response.message or "main"
    if as_json:
        return json.dumps({"origin": origin, "event": to_json(response.content.event)})
    return f"{origin}: {event_text(response.content.event)}"


# --------------------------------------------------------------------------------------------
# Cluster queries: answers gathered from the main process and each worker


def _key(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def cluster_hashes(answers: Mapping[str, ResponseContent]) -> str:
    processes = sorted(
        (k for k, c in answers.items() if c.WhichOneof("content_type") == "cluster_hashes"),
        key=_process_order,
    )
    cluster_ids = sorted({cid for p in processes for cid in answers[p].cluster_hashes.map})
    if not cluster_ids:
        return "no cluster found"
    rows = []
    for cluster_id in cluster_ids:
        values = [answers[p].cluster_hashes.map.get(cluster_id) for p in processes]
        cells = [f"{v:016x}" if v is not None else "missing" for v in values]
        in_sync = len(set(values)) == 1
        rows.append((cluster_id, *cells, _yes(in_sync)))
    return table(("cluster", *(_process_name(p) for p in processes), "in sync"), rows)


def cluster_informations(answers: Mapping[str, ResponseContent]) -> str:
    """Clusters, frontends and backends, each row saying which processes hold it as shown."""
    rows: list[tuple[object, ...]]
    headers: tuple[str, ...]
    processes = sorted(
        (k for k, c in answers.items() if c.WhichOneof("content_type") == "clusters"),
        key=_process_order,
    )
    clusters: dict[bytes, tuple[Any, list[str]]] = {}
    fronts: dict[str, dict[bytes, tuple[Any, list[str]]]] = {
        "http": {},
        "https": {},
        "tcp": {},
        "udp": {},
    }
    backends: dict[bytes, tuple[Any, list[str]]] = {}

    def note(store: dict[bytes, tuple[Any, list[str]]], message: Message, process: str) -> None:
        entry = store.setdefault(_key(message), (message, []))
        if process not in entry[1]:
            entry[1].append(process)

    for process in processes:
        for info in answers[process].clusters.vec:
            if info.HasField("configuration"):
                note(clusters, info.configuration, process)
            for kind in ("http", "https", "tcp", "udp"):
                for front in getattr(info, f"{kind}_frontends"):
                    note(fronts[kind], front, process)
            for backend in info.backends:
                note(backends, backend, process)

    if not clusters and not any(fronts.values()) and not backends:
        return "no cluster found"

    def on(found: list[str]) -> str:
        return ", ".join(found) if found != processes else "all"

    rows = []
    for cluster, found in sorted(clusters.values(), key=lambda e: e[0].cluster_id):
        rows.append(
            (
                cluster.cluster_id,
                _yes(cluster.sticky_session),
                _yes(cluster.https_redirect),
                LoadBalancingAlgorithms.Name(cluster.load_balancing),
                _yes(cluster.http2) if cluster.HasField("http2") else None,
                on(found),
            )
        )
    parts = [
        _section(
            "clusters",
            table(("cluster", "sticky", "https redirect", "load balancing", "http2", "on"), rows),
        )
    ]
    for kind in ("http", "https"):
        if fronts[kind]:
            rows = [
                (
                    f.cluster_id if f.HasField("cluster_id") else "deny",
                    address(f.address),
                    f.hostname,
                    path_text(f.path),
                    _optional(f, "method"),
                    on(found),
                )
                for f, found in fronts[kind].values()
            ]
            headers = ("cluster", "address", "hostname", "path", "method", "on")
            parts.append(_section(f"{kind.upper()} frontends", table(headers, rows)))
    for kind in ("tcp", "udp"):
        if fronts[kind]:
            rows = [
                (f.cluster_id, address(f.address), on(found)) for f, found in fronts[kind].values()
            ]
            parts.append(
                _section(f"{kind.upper()} frontends", table(("cluster", "address", "on"), rows))
            )
    if backends:
        rows = [
            (
                b.cluster_id,
                b.backend_id,
                address(b.address),
                b.load_balancing_parameters.weight
                if b.HasField("load_balancing_parameters")
                else None,
                _yes(b.backup) if b.HasField("backup") else None,
                _optional(b, "sticky_id"),
                on(found),
            )
            for b, found in backends.values()
        ]
        headers = (
            "cluster",
            "backend",
            "address",
            "weight",
            "backup",
            "sticky id",
            "on",
        )
        parts.append(_section("backends", table(headers, rows)))
    if processes and any(len(found) != len(processes) for _, found in clusters.values()):
        parts.append("warning: the processes do not all hold the same configuration")
    return "\n\n".join(parts)


def worker_responses(responses: WorkerResponses) -> str:
    answers = responses.map
    kinds = {content.WhichOneof("content_type") for content in answers.values()}
    if "clusters" in kinds:
        return cluster_informations(answers)
    if "cluster_hashes" in kinds:
        return cluster_hashes(answers)
    if not answers:
        return "no answer"
    parts = []
    for key in sorted(answers, key=_process_order):
        parts.append(_section(f"{_process_name(key)}:", _indent(content(answers[key]))))
    return "\n\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())


# --------------------------------------------------------------------------------------------
# Entry points


def content(answer: ResponseContent) -> str:
    """Human text for any ResponseContent."""
    kind = answer.WhichOneof("content_type")
    if kind is None:
        return "no content"
    value = getattr(answer, kind)
    if kind == "workers":
        return workers(value)
    if kind == "metrics":
        return aggregated_metrics(value)
    if kind == "worker_responses":
        return worker_responses(value)
    if kind == "event":
        return event_text(value)
    if kind == "frontend_list":
        return frontends(value)
    if kind == "listeners_list":
        return listeners(value)
    if kind == "worker_metrics":
        return worker_metrics(value)
    if kind == "available_metrics":
        return available_metrics(value)
    if kind == "clusters":
        return cluster_informations({"main": answer})
    if kind == "cluster_hashes":
        return cluster_hashes({"main": answer})
    if kind == "certificates_by_address":
        return certificates_by_address(value)
    if kind == "certificates_with_fingerprints":
        return certificates_with_fingerprints(value)
    if kind == "request_counts":
        return request_counts(value)
    if kind == "max_connections_per_ip_limit":
        return max_connections(value)
    if kind == "health_checks_list":
        return health_checks(value)
    if kind == "metric_detail_status":
        return metric_detail(value)
    if kind == "worker_metric_detail_status":
        return metric_detail(
            MetricDetailStatus(
                configured=value.configured,
                effective=value.effective,
                previous_effective=value.previous_effective,
            )
        )
    return dumps(to_json(answer))


def response(answer: Response, as_json: bool) -> str:
    """What the CLI prints for a final OK answer."""
    if as_json:
        return dumps(to_json(answer.content)) if answer.HasField("content") else "{}"
    if answer.HasField("content") and answer.content.WhichOneof("content_type") is not None:
        return content(answer.content)
    return answer.message or "OK"
