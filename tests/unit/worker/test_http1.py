"""The answers an HTTP listener writes itself (sozu.worker.protocol.http1 and .answers)."""

from __future__ import annotations

import pytest

from sozu.command.addresses import to_proto
from sozu.command.proto import CustomHttpAnswers, PathRule, PathRuleKind, RequestHttpFrontend
from sozu.worker.protocol.answers import (
    BUILTIN,
    Template,
    TemplateError,
    compile_answers,
    merged_answers,
)
from sozu.worker.protocol.http1 import ClusterView, ListenerView, Routing, answer_request

ADDRESS = "127.0.0.1:8080"


def routing(*fronts: tuple[str, str | None], **clusters: ClusterView) -> Routing:
    table = Routing()
    for hostname, cluster_id in fronts:
        front = RequestHttpFrontend(
            address=to_proto(ADDRESS),
            hostname=hostname,
            path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        )
        if cluster_id is not None:
            front.cluster_id = cluster_id
        table.http.add(front)
    table.clusters.update(clusters)
    return table


def head(data: bytes) -> tuple[str, dict[str, str], str]:
    text = data.decode()
    head_text, _, body = text.partition("\r\n\r\n")
    lines = head_text.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


LISTENER = ListenerView(ADDRESS)


def test_unknown_host_is_404_with_sozu_headers() -> None:
    answer = answer_request(LISTENER, routing(), "GET", "nowhere.example", "/x", "01REQ")
    status, headers, body = head(answer.data)
    assert (answer.status, status) == (404, "HTTP/1.1 404 Not Found")
    assert headers == {"Cache-Control": "no-cache", "Connection": "close", "Sozu-Id": "01REQ"}
    assert '"route": "GET nowhere.example/x"' in body and '"request_id": "01REQ"' in body
    assert not answer.keep_alive


def test_deny_frontend_is_401_without_challenge() -> None:
    answer = answer_request(LISTENER, routing(("h", None)), "GET", "h", "/", "01REQ")
    status, headers, _ = head(answer.data)
    assert status == "HTTP/1.1 401 Unauthorized"
    assert "WWW-Authenticate" not in headers  # elided when empty, as Sōzu


def test_cluster_without_backend_is_503() -> None:
    table = routing(("h", "app"), app=ClusterView("app"))
    answer = answer_request(LISTENER, table, "GET", "h:8080", "/", "01REQ")
    assert answer.status == 503 and answer.cluster_id == "app"
    assert "No backend available for cluster app." in answer.data.decode()
    missing = answer_request(LISTENER, routing(("h", "gone")), "GET", "h", "/", "01REQ")
    assert missing.status == 503


def test_cluster_with_backends_is_forwarded() -> None:
    table = routing(("h", "app"), app=ClusterView("app", backends=2))
    answer = answer_request(LISTENER, table, "GET", "h", "/", "01REQ")
    assert answer.forward and answer.route is not None and answer.route.cluster_id == "app"


def test_https_redirect_on_plain_http() -> None:
    table = routing(("h", "app"), app=ClusterView("app", https_redirect=True))
    answer = answer_request(LISTENER, table, "GET", "h:80", "/a?b", "01REQ")
    status, headers, body = head(answer.data)
    assert status == "HTTP/1.1 301 Moved Permanently" and body == ""
    assert headers["Location"] == "https://h/a?b"
    table.clusters["app"].https_redirect_port = 8443
    answer = answer_request(LISTENER, table, "GET", "h", "/", "01REQ")
    assert head(answer.data)[1]["Location"] == "https://h:8443/"


@pytest.mark.parametrize(("authority", "message"), [(None, "no host"), ("a b", "Invalid host")])
def test_missing_or_invalid_host_is_400(authority: str | None, message: str) -> None:
    answer = answer_request(LISTENER, routing(), "GET", authority, "/", "01REQ")
    assert answer.status == 400 and message in answer.data.decode()


def test_route_values_are_escaped_in_builtin_pages() -> None:
    answer = answer_request(LISTENER, routing(), "GET", "h", "/<script>", "01REQ")
    assert b"<script>" not in answer.data and b"&lt;script&gt;" in answer.data


def test_custom_templates_cluster_over_listener_over_builtin() -> None:
    listener_templates, errors = compile_answers(
        merged_answers(
            {"404": "HTTP/1.1 404 Gone Fishing\nContent-Length: 0\n\nno %ROUTE here"},
            CustomHttpAnswers(answer_503="HTTP/1.1 503 Listener\n\nlistener 503"),
        )
    )
    assert not errors
    listener = ListenerView(ADDRESS, templates=listener_templates)
    answer = answer_request(listener, routing(), "GET", "h", "/p", "01REQ")
    status, headers, body = head(answer.data)
    assert status == "HTTP/1.1 404 Gone Fishing" and body == "no GET h/p here"
    assert headers["Content-Length"] == str(len(body))  # recomputed
    assert answer.keep_alive  # no Connection: close in this template
    cluster_templates, _ = compile_answers({"503": "HTTP/1.1 503 Cluster\n\n%CLUSTER_ID down"})
    table = routing(
        ("h", "app"), ("other", "plain"), app=ClusterView("app", templates=cluster_templates)
    )
    assert answer_request(listener, table, "GET", "h", "/", "1").data.endswith(b"app down")
    assert answer_request(listener, table, "GET", "other", "/", "1").data.endswith(b"listener 503")


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("404", "HTTP/1.1 503 Nope\r\n\r\n", "status line says 503"),
        ("404", "HTTP/1.1 404 Not Found\r\n", "no blank line"),
        ("404", "nonsense\r\n\r\n", "not an HTTP/1.x status line"),
        ("503", "HTTP/1.1 503 X\r\nX-Why: %MESSAGE\r\n\r\n", "not allowed in headers"),
        ("401", "HTTP/1.1 401 X\r\n\r\n%WWW_AUTHENTICATE", "not allowed in the body"),
        ("404", "HTTP/1.1 404 X\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
        ("404", "HTTP/1.1 404 X\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "two"),
    ],
)
def test_invalid_templates_are_refused(name: str, text: str, error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        Template.parse(name, text)
    assert compile_answers({name: text})[1]


def test_builtin_answers_close_the_connection() -> None:
    for name, template in BUILTIN.items():
        assert template.status == int(name)
        assert not template.keep_alive
