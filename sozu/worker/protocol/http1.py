"""What an HTTP/1 listener answers to a request head, before any backend is involved.

The worker's session parses bytes (httptools) and hands a parsed head to `answer_request`,
which routes it (`sozu.worker.router`) and picks the answer as Sōzu does at that point:

- no host (no Host header, no absolute URI) or a malformed one -> 400;
- no frontend matches -> 404;
- a deny frontend (no cluster id) -> 401, without `WWW-Authenticate`;
- the cluster asks for `https_redirect` and the listener is plain HTTP -> 301 to
  `https://<host>[:https_redirect_port]<path>`;
- the cluster is unknown or has no backend -> 503 "no backend available for cluster ...";
- otherwise the request is for a backend: `Answer.forward` is set (proxying is the next
  issue; the session answers 503 "proxying is not available yet" in the meantime).

`ListenerView` and `ClusterView` are the worker's precomputed, read-only summaries of its
state (templates compiled once per change), so answering costs a router lookup and one
template render. Sans-io: the request id and every value come from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sozu.worker.protocol.answers import Template, pick
from sozu.worker.router import Route, Routers, split_host_port


@dataclass(slots=True)
class ListenerView:
    """One HTTP or HTTPS listener as the sessions see it (replaced on each change)."""

    address: str
    https: bool = False
    templates: Mapping[str, Template] = field(default_factory=dict)
    front_timeout: float = 60.0
    request_timeout: float = 10.0


@dataclass(slots=True)
class ClusterView:
    """What answering needs to know of one cluster."""

    cluster_id: str
    https_redirect: bool = False
    https_redirect_port: int | None = None
    backends: int = 0
    templates: Mapping[str, Template] = field(default_factory=dict)


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


def answer_request(
    listener: ListenerView,
    routing: Routing,
    method: str,
    authority: str | None,
    path: str,
    request_id: str,
) -> Answer:
    """The answer to a complete request head received on `listener` (module docstring)."""
    route_value = route_text(method, authority, path)
    values = {"REQUEST_ID": request_id, "ROUTE": route_value}
    if authority is None:
        return bad_request(listener, request_id, "The request names no host.", "Headers", method)
    host = split_host_port(authority)
    if host is None:
        message = f"Invalid host {authority!r}."
        return bad_request(listener, request_id, message, "Headers", route_value)
    routers = routing.https if listener.https else routing.http
    route = routers.lookup(listener.address, host, path, method)
    if route is None:
        return render(404, listener, None, values)
    if route.cluster_id is None:
        values["WWW_AUTHENTICATE"] = ""
        return _with_route(render(401, listener, None, values), route)
    cluster = routing.clusters.get(route.cluster_id)
    values["CLUSTER_ID"] = route.cluster_id
    if cluster is not None and cluster.https_redirect and not listener.https:
        port = f":{cluster.https_redirect_port}" if cluster.https_redirect_port else ""
        values["REDIRECT_LOCATION"] = f"https://{host}{port}{path}"
        return _with_route(render(301, listener, cluster, values), route)
    if cluster is None or cluster.backends == 0:
        values["MESSAGE"] = f"No backend available for cluster {route.cluster_id}."
        return _with_route(render(503, listener, cluster, values), route)
    return Answer(0, b"", True, route.cluster_id, route, forward=True)


def _with_route(answer: Answer, route: Route) -> Answer:
    return Answer(answer.status, answer.data, answer.keep_alive, route.cluster_id, route)
