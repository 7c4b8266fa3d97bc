"""What an HTTP/1 listener answers to a request head, before any backend is involved.

The worker's session parses bytes (httptools) and hands a parsed head to `answer_request`,
which routes it (`sozu.worker.router`) and picks the answer as Sōzu does at that point:

- no host (no Host header, no absolute URI) or a malformed one -> 400;
- no frontend matches -> 404;
- a deny frontend (no cluster id) -> 401, without `WWW-Authenticate`;
- the cluster asks for `https_redirect` and the listener is plain HTTP -> 301 to
  `https://<host>[:https_redirect_port]<path>`;
- the cluster is unknown or has no backend -> 503 "no backend available for cluster ...";
- otherwise the request is for a backend: `Answer.forward` is set and the session proxies it
  (`sozu.worker.session`).

`ListenerView` and `ClusterView` are the worker's precomputed, read-only summaries of its
state (templates compiled once per change), so answering costs a router lookup and one
template render. Sans-io: the request id and every value come from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sozu.worker.protocol.answers import Template, pick
from sozu.worker.router import Hsts, Route, Routers, split_host_port


@dataclass(slots=True)
class ListenerView:
    """One HTTP or HTTPS listener as the sessions see it (replaced on each change)."""

    address: str
    https: bool = False
    templates: Mapping[str, Template] = field(default_factory=dict)
    front_timeout: float = 60.0
    request_timeout: float = 10.0
    back_timeout: float = 30.0
    connect_timeout: float = 3.0
    sticky_name: bytes = b"SOZUBALANCEID"
    id_header: bytes = b"Sozu-Id"
    public_ip: bytes = b""
    public_port: bytes = b""
    proto: bytes = b"http"
    hsts: Hsts | None = None  # the listener's HSTS policy (HTTPS only; `router.hsts_line`)
    strict_sni: bool = True  # HTTPS: Host must be covered by the served certificate (421)


@dataclass(slots=True)
class ClusterView:
    """What answering needs to know of one cluster."""

    cluster_id: str
    https_redirect: bool = False
    https_redirect_port: int | None = None
    backends: int = 0
    sticky_session: bool = False
    templates: Mapping[str, Template] = field(default_factory=dict)
    max_connections_per_ip: int | None = None  # None: the worker's global limit applies
    retry_after: int | None = None  # None: the worker's global Retry-After applies


@dataclass(slots=True)
class Routing:
    """Frontends of every HTTP and HTTPS listener, and the clusters they lead to."""

    http: Routers = field(default_factory=Routers)
    https: Routers = field(default_factory=Routers)
    clusters: dict[str, ClusterView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """Bytes to write to the client, or (forward set) a request for a backend."""

    status: int
    data: bytes
    keep_alive: bool
    cluster_id: str | None = None
    route: Route | None = None
    forward: bool = False


def route_text(method: str | None, authority: str | None, path: str | None) -> str:
    """Sōzu's `%ROUTE`: `METHOD authority path` as far as it is known."""
    if method is None:
        return ""
    if authority is None:
        return method
    return f"{method} {authority}{path or ''}"


def render(
    status: int,
    listener: ListenerView | None,
    cluster: ClusterView | None,
    values: Mapping[str, str],
) -> Answer:
    """One of the proxy's own answers, from the cluster's, listener's or built-in template."""
    template = pick(
        str(status),
        cluster.templates if cluster is not None else None,
        listener.templates if listener is not None else None,
    )
    cluster_id = cluster.cluster_id if cluster is not None else values.get("CLUSTER_ID")
    return Answer(template.status, template.render(values), template.keep_alive, cluster_id)


def bad_request(
    listener: ListenerView | None, request_id: str, message: str, phase: str, route: str = ""
) -> Answer:
    """400 for a request that could not be parsed or routed."""
    values = {
        "REQUEST_ID": request_id,
        "ROUTE": route,
        "MESSAGE": message,
        "PHASE": phase,
        "SUCCESSFULLY_PARSED": "null",
        "PARTIALLY_PARSED": "null",
        "INVALID": "null",
    }
    return render(400, listener, None, values)


_HOSTS: dict[str, str | None] = {}
_HOSTS_MAX = 4096
_FORWARDS: dict[str, Answer] = {}


def host_of(authority: str) -> str | None:
    """`split_host_port`, remembered (clients send the same few Host values again and again)."""
    try:
        return _HOSTS[authority]
    except KeyError:
        pass
    host = split_host_port(authority)
    if len(_HOSTS) >= _HOSTS_MAX:
        _HOSTS.clear()
    _HOSTS[authority] = host
    return host


def cert_covers(names: tuple[str, ...], host: str) -> bool:
    """Whether a certificate with these (lower-case) names serves `host` (RFC 6125: `*.` stands
    for exactly one non-empty left-most label). Sōzu's strict SNI binding answers 421 when the
    certificate served at the handshake does not cover the request's host."""
    host = host.lower().removesuffix(".")
    if host in names:
        return True
    label, dot, rest = host.partition(".")
    return bool(label and dot) and ("*." + rest) in names


def answer_request(
    listener: ListenerView,
    routing: Routing,
    method: str,
    authority: str | None,
    path: str,
    request_id: str,
) -> Answer:
    """The answer to a complete request head received on `listener` (module docstring)."""
    if authority is None:
        return bad_request(listener, request_id, "The request names no host.", "Headers", method)
    host = host_of(authority)
    if host is None:
        message = f"Invalid host {authority!r}."
        route_value = route_text(method, authority, path)
        return bad_request(listener, request_id, message, "Headers", route_value)
    routers = routing.https if listener.https else routing.http
    route = routers.lookup(listener.address, host, path, method)
    if route is not None and route.cluster_id is not None:
        cluster = routing.clusters.get(route.cluster_id)
        if (
            cluster is not None
            and cluster.backends
            and not (cluster.https_redirect and not listener.https)
        ):
            forward = _FORWARDS.get(route.cluster_id)
            if forward is None or forward.route is not route:
                forward = Answer(0, b"", True, route.cluster_id, route, forward=True)
                if len(_FORWARDS) >= _HOSTS_MAX:
                    _FORWARDS.clear()
                _FORWARDS[route.cluster_id] = forward
            return forward
    values = {"REQUEST_ID": request_id, "ROUTE": route_text(method, authority, path)}
    if route is None:
        return render(404, listener, None, values)
    if route.cluster_id is None:
        values["WWW_AUTHENTICATE"] = ""
        return _with_route(render(401, listener, None, values), route)
    values["CLUSTER_ID"] = route.cluster_id
    if cluster is not None and cluster.https_redirect and not listener.https:
        port = f":{cluster.https_redirect_port}" if cluster.https_redirect_port else ""
        values["REDIRECT_LOCATION"] = f"https://{host}{port}{path}"
        return _with_route(render(301, listener, cluster, values), route)
    values["MESSAGE"] = f"No backend available for cluster {route.cluster_id}."
    return _with_route(render(503, listener, cluster, values), route)


def _with_route(answer: Answer, route: Route) -> Answer:
    return Answer(answer.status, answer.data, answer.keep_alive, route.cluster_id, route)
