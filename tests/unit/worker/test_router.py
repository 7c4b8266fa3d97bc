"""Routing precedence of the worker's router (sozu.worker.router), Sōzu's rules."""

from __future__ import annotations

import pytest

from sozu.command.addresses import to_proto
from sozu.command.proto import PathRule, PathRuleKind, RequestHttpFrontend, RulePosition
from sozu.worker.router import Router, RouterError, Routers, split_host_port

ADDRESS = "127.0.0.1:8080"
PREFIX, REGEX, EQUALS = PathRuleKind.PREFIX, PathRuleKind.REGEX, PathRuleKind.EQUALS
PRE, POST, TREE = RulePosition.PRE, RulePosition.POST, RulePosition.TREE


def front(
    hostname: str,
    cluster: str | None,
    path: str = "",
    kind: int = PREFIX,
    method: str | None = None,
    position: int = TREE,
    address: str = ADDRESS,
) -> RequestHttpFrontend:
    message = RequestHttpFrontend(
        address=to_proto(address),
        hostname=hostname,
        path=PathRule(kind=kind, value=path),  # type: ignore[arg-type]
        position=position,  # type: ignore[arg-type]
    )
    if cluster is not None:
        message.cluster_id = cluster
    if method is not None:
        message.method = method
    return message


def router(*fronts: RequestHttpFrontend) -> Router:
    table = Router()
    for item in fronts:
        table.add(item)
    return table


def cluster(table: Router, host: str, path: str = "/", method: str = "GET") -> str | None:
    route = table.lookup(host, path, method)
    return None if route is None else (route.cluster_id or "DENY")


def test_exact_hostname_beats_wildcard() -> None:
    table = router(front("*.example.com", "wild"), front("www.example.com", "www"))
    assert cluster(table, "www.example.com") == "www"
    assert cluster(table, "api.example.com") == "wild"


def test_wildcard_stands_for_exactly_one_label() -> None:
    table = router(front("*.example.com", "wild"))
    assert cluster(table, "a.b.example.com") is None
    assert cluster(table, "example.com") is None
    assert cluster(table, "aexample.com") is None


def test_hostnames_compare_case_insensitively() -> None:
    table = router(front("WWW.Example.COM", "www"))
    host = split_host_port("www.EXAMPLE.com:8080")
    assert host == "www.example.com"
    assert cluster(table, host) == "www"


def test_found_hostname_does_not_fall_back_to_wildcard() -> None:
    # Sōzu's trie: once the exact hostname is found, only its own path rules count.
    table = router(front("*.example.com", "wild"), front("www.example.com", "api", "/api"))
    assert cluster(table, "www.example.com", "/api/x") == "api"
    assert cluster(table, "www.example.com", "/other") is None


def test_longest_prefix_wins_and_later_rule_wins_a_tie() -> None:
    table = router(
        front("h", "root", ""),
        front("h", "api", "/api"),
        front("h", "api-v1", "/api/v1"),
    )
    assert cluster(table, "h", "/") == "root"
    assert cluster(table, "h", "/api/v2") == "api"
    assert cluster(table, "h", "/api/v1/users") == "api-v1"
    tie = router(front("h", "first", "/a"), front("h", "second", "/a", method="GET"))
    assert cluster(tie, "h", "/a/b") == "second"


def test_path_rule_kinds() -> None:
    table = router(
        front("h", "prefix", "/static"),
        front("h", "equals", "/static/exact", EQUALS),
        front("h", "regex", r"\.php$", REGEX),
    )
    assert cluster(table, "h", "/static/exact") == "equals"
    assert cluster(table, "h", "/static/exact/more") == "prefix"
    assert cluster(table, "h", "/index.php") == "regex"  # searched, not anchored at the start
    assert cluster(table, "h", "/index.html") is None


def test_exact_path_with_its_method_wins_at_once() -> None:
    table = router(
        front("h", "equals-get", "/login", EQUALS, method="GET"),
        front("h", "longer-prefix", "/login"),
    )
    assert cluster(table, "h", "/login") == "equals-get"
    assert cluster(table, "h", "/login", "POST") == "longer-prefix"


def test_exact_path_without_method_counts_as_the_whole_path() -> None:
    table = router(front("h", "equals", "/a", EQUALS), front("h", "prefix", "/"))
    assert cluster(table, "h", "/a") == "equals"
    table = router(front("h", "equals", "/a", EQUALS), front("h", "same-length", "/a"))
    assert cluster(table, "h", "/a") == "same-length"  # a later prefix as long as the path


def test_method_rule() -> None:
    table = router(front("h", "reader", method="GET"), front("h", "writer", method="POST"))
    assert cluster(table, "h", "/", "GET") == "reader"
    assert cluster(table, "h", "/", "POST") == "writer"
    assert cluster(table, "h", "/", "DELETE") is None


def test_pre_rules_come_first_and_post_rules_last() -> None:
    table = router(
        front("www.example.com", "tree"),
        front("*", "catch-all", position=POST),
        front("*.example.com", "pre", "/admin", position=PRE),
    )
    assert cluster(table, "www.example.com", "/admin") == "pre"
    assert cluster(table, "www.example.com", "/") == "tree"
    assert cluster(table, "elsewhere.org", "/") == "catch-all"


def test_pre_rules_keep_their_insertion_order() -> None:
    table = router(
        front("*", "first", "/", position=PRE),
        front("www.example.com", "second", "/x", position=PRE),
    )
    assert cluster(table, "www.example.com", "/x") == "first"


def test_deny_frontend_routes_without_cluster() -> None:
    table = router(front("h", None, "/private"), front("h", "public"))
    route = table.lookup("h", "/private/file", "GET")
    assert route is not None and route.cluster_id is None  # answered 401 by the worker
    assert cluster(table, "h", "/public") == "public"


def test_regex_hostname_labels() -> None:
    table = router(
        front("/api[0-9]+/.example.com", "api"),
        front("/www|web/.example.com", "web", position=PRE),
    )
    assert cluster(table, "api12.example.com") == "api"
    assert cluster(table, "apix.example.com") is None
    assert cluster(table, "www.example.com") == "web"
    assert cluster(table, "xwww.example.com") is None  # anchored


def test_remove_and_duplicates() -> None:
    table = router(front("h", "a", "/x"), front("*", "b", position=PRE))
    with pytest.raises(RouterError, match="already exists"):
        table.add(front("h", "other", "/x"))
    table.remove(front("h", "ignored", "/x"))
    table.remove(front("*", None, position=PRE))
    assert len(table) == 0
    assert cluster(table, "h", "/x") is None
    with pytest.raises(RouterError, match="no frontend"):
        table.remove(front("h", "a", "/x"))


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(RouterError):
        Router().add(front("h", "a", "(", REGEX))
    with pytest.raises(RouterError):
        Router().add(front("www.*.example.com", "a"))
    with pytest.raises(RouterError):
        Router().add(front("/unterminated.example.com", "a"))


def test_routers_are_per_listener_address() -> None:
    routers = Routers([front("h", "on-8080"), front("h", "on-9090", address="127.0.0.1:9090")])
    assert routers.lookup(ADDRESS, "h", "/", "GET").cluster_id == "on-8080"  # type: ignore[union-attr]
    route = routers.lookup("127.0.0.1:9090", "h", "/", "GET")
    assert route is not None and route.cluster_id == "on-9090"
    assert routers.lookup("127.0.0.1:1", "h", "/", "GET") is None
    routers.remove(front("h", "on-8080"))
    assert routers.get(ADDRESS) is None


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("example.com", "example.com"),
        ("Example.com:80", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("10.0.0.1", "10.0.0.1"),
        ("bad host", None),
        ("example.com:http", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_split_host_port(authority: str, host: str | None) -> None:
    assert split_host_port(authority) == host
