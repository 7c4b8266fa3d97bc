"""Answers the proxy writes itself (404, 503, 400, ...): Sōzu's templates and variables.

An answer template is a whole HTTP/1.1 response as text: status line, headers, a blank line,
a body. Bodies and header values carry `%NAME` variables filled in for each answer
(`%REQUEST_ID`, `%ROUTE`, `%CLUSTER_ID`, ...; which ones a status allows is Sōzu's table,
`VARIABLES`). As in Sōzu:

- a header value that is exactly `%NAME` is replaced; `WWW-Authenticate: %WWW_AUTHENTICATE`
  and `Retry-After: %RETRY_AFTER` lines disappear when the value is empty;
- `%MESSAGE` and the parser-dump variables may only appear in the body, `%WWW_AUTHENTICATE`
  and `%RETRY_AFTER` only in headers;
- a `Content-Length` header in a template is recomputed for the filled body; none is added
  when the template has none (the built-in answers close the connection instead);
- a template carrying `Connection: close` closes the client connection after the answer.

Built-in answers (one per status Sōzu answers itself) have Sōzu's status line and headers
(`Cache-Control: no-cache`, `Connection: close`, `Sozu-Id: <request id>`; redirects have
`Location`) and a short HTML page stating the status, the route, the request id and, where
Sōzu does, the cluster, backend and a message. Operators override them per listener
(`answers`, legacy `http_answers`) and per cluster (`answers`, legacy `answer_503`); a cluster's
template wins over its listener's, which wins over the built-in one.

The built-in pages HTML-escape the values they show (a route comes from the client); Sōzu
writes them raw. Custom templates get raw values, as in Sōzu.

Sans-io: templates are parsed once (`Template.parse`) and rendered per answer (`render`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sozu.command.errors import SozuError
from sozu.command.proto import CustomHttpAnswers


class TemplateError(SozuError):
    """An answer template that cannot be used."""


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    in_body: bool = True
    in_header: bool = True
    elide_empty_header: bool = False


_ALL_VARIABLES = {
    v.name: v
    for v in (
        _Variable("ROUTE"),
        _Variable("REQUEST_ID"),
        _Variable("CLUSTER_ID"),
        _Variable("BACKEND_ID"),
        _Variable("DURATION"),
        _Variable("CAPACITY"),
        _Variable("PHASE"),
        _Variable("REDIRECT_LOCATION"),
        _Variable("MESSAGE", in_header=False),
        _Variable("TEMPLATE_NAME"),
        _Variable("WWW_AUTHENTICATE", in_body=False, elide_empty_header=True),
        _Variable("RETRY_AFTER", in_body=False, elide_empty_header=True),
        _Variable("SUCCESSFULLY_PARSED", in_header=False),
        _Variable("PARTIALLY_PARSED", in_header=False),
        _Variable("INVALID", in_header=False),
    )
}

_PARSER_DUMP = ("MESSAGE", "PHASE", "SUCCESSFULLY_PARSED", "PARTIALLY_PARSED", "INVALID")
VARIABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "301": ("ROUTE", "REQUEST_ID", "REDIRECT_LOCATION"),
        "302": ("ROUTE", "REQUEST_ID", "REDIRECT_LOCATION"),
        "308": ("ROUTE", "REQUEST_ID", "REDIRECT_LOCATION"),
        "400": ("ROUTE", "REQUEST_ID", *_PARSER_DUMP),
        "401": ("ROUTE", "REQUEST_ID", "WWW_AUTHENTICATE"),
        "404": ("ROUTE", "REQUEST_ID"),
        "408": ("ROUTE", "REQUEST_ID", "DURATION"),
        "413": ("ROUTE", "REQUEST_ID", "CAPACITY", "MESSAGE", "PHASE"),
        "421": ("ROUTE", "REQUEST_ID"),
        "429": ("ROUTE", "REQUEST_ID", "CLUSTER_ID", "RETRY_AFTER"),
        "502": ("ROUTE", "REQUEST_ID", "CLUSTER_ID", "BACKEND_ID", *_PARSER_DUMP),
        "503": ("ROUTE", "REQUEST_ID", "CLUSTER_ID", "BACKEND_ID", "MESSAGE"),
        "504": ("ROUTE", "REQUEST_ID", "CLUSTER_ID", "BACKEND_ID", "DURATION"),
        "507": ("ROUTE", "REQUEST_ID", "CLUSTER_ID", "BACKEND_ID", "CAPACITY", "MESSAGE", "PHASE"),
    }
)
"""Variables each status's template may use (Sōzu's table); other names use `_OTHER`."""
_OTHER = ("ROUTE", "REQUEST_ID", "CLUSTER_ID", "REDIRECT_LOCATION", "TEMPLATE_NAME")

_STATUS_LINE = re.compile(r"\AHTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\Z")
_TOKEN = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


@dataclass(frozen=True, slots=True)
class _Header:
    name: str
    value: str  # literal value, or the variable name when `variable` is set
    variable: _Variable | None = None
    content_length: bool = False


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed answer template; `render()` fills its variables."""

    status: int
    keep_alive: bool
    status_line: str
    headers: tuple[_Header, ...]
    body: tuple[str | _Variable, ...]
    escape_body: bool = False  # HTML-escape values put in the body (the built-in pages)

    @classmethod
    def parse(cls, name: str, text: str, escape_body: bool = False) -> Template:
        """Parse the template registered under `name` (a status such as "404")."""
        allowed = VARIABLES.get(name, _OTHER)
        normalized = text.replace("\r\n", "\n").replace("\n", "\r\n")
        head, sep, body = normalized.partition("\r\n\r\n")
        if not sep:
            raise TemplateError(f"answer {name}: no blank line after the headers")
        lines = head.split("\r\n")
        found = _STATUS_LINE.match(lines[0])
        if found is None:
            raise TemplateError(f"answer {name}: {lines[0]!r} is not an HTTP/1.x status line")
        status = int(found.group(1))
        if name in VARIABLES and str(status) != name:
            raise TemplateError(f"answer {name}: the status line says {status}")
        headers: list[_Header] = []
        keep_alive = True
        for line in lines[1:]:
            key, colon, raw = line.partition(":")
            if not colon or not _TOKEN.match(key):
                raise TemplateError(f"answer {name}: {line!r} is not a header line")
            value = raw.strip(" \t")
            lower = key.lower()
            if lower == "connection" and value.lower() == "close":
                keep_alive = False
            if lower == "transfer-encoding":
                raise TemplateError(f"answer {name}: Transfer-Encoding is not allowed")
            if lower == "content-length":
                if any(h.content_length for h in headers):
                    raise TemplateError(f"answer {name}: two Content-Length headers")
                headers.append(_Header(key, "", content_length=True))
                continue
            variable = None
            if value.startswith("%") and value[1:] in allowed:
                variable = _ALL_VARIABLES[value[1:]]
                if not variable.in_header:
                    raise TemplateError(f"answer {name}: %{variable.name} not allowed in headers")
            headers.append(_Header(key, variable.name if variable else value, variable))
        return cls(
            status,
            keep_alive,
            lines[0],
            tuple(headers),
            _parse_body(name, body, allowed),
            escape_body,
        )

    def render(self, values: Mapping[str, str]) -> bytes:
        """The answer's bytes, `values` giving each variable (absent ones are empty)."""
        escape = html.escape if self.escape_body else _same
        body = "".join(
            part if isinstance(part, str) else escape(values.get(part.name, ""))
            for part in self.body
        ).encode()
        out = [self.status_line]
        for header in self.headers:
            if header.content_length:
                out.append(f"{header.name}: {len(body)}")
            elif header.variable is None:
                out.append(f"{header.name}: {header.value}")
            else:
                value = values.get(header.value, "")
                if value or not header.variable.elide_empty_header:
                    out.append(f"{header.name}: {value}")
        out.append("\r\n")
        return "\r\n".join(out).encode() + body


def _same(text: str) -> str:
    return text


def _parse_body(name: str, body: str, allowed: tuple[str, ...]) -> tuple[str | _Variable, ...]:
    names = sorted(allowed, key=len, reverse=True)
    parts: list[str | _Variable] = []
    literal_start = 0
    index = body.find("%")
    while index >= 0:
        for candidate in names:
            if body.startswith(candidate, index + 1):
                variable = _ALL_VARIABLES[candidate]
                if not variable.in_body:
                    raise TemplateError(f"answer {name}: %{candidate} not allowed in the body")
                if literal_start < index:
                    parts.append(body[literal_start:index])
                parts.append(variable)
                literal_start = index + 1 + len(candidate)
                break
        index = body.find("%", max(index + 1, literal_start))
    if literal_start < len(body):
        parts.append(body[literal_start:])
    return tuple(parts)


# --- built-in answers ----------------------------------------------------------------------


def _page(code: int, reason: str, facts: tuple[str, ...], paragraph: str = "") -> str:
    """A built-in answer: Sōzu's status line and headers, our short HTML page."""
    details = ",\n".join(f'  "{fact}": "%{fact.upper()}"' for fact in facts)
    extra = f"<p>{paragraph}</p>\n" if paragraph else ""
    return (
        f"HTTP/1.1 {code} {reason}\r\n"
        "Cache-Control: no-cache\r\n"
        "Connection: close\r\n"
        "Sozu-Id: %REQUEST_ID\r\n"
        "\r\n"
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{code} {reason}</title></head><body>\n"
        f"<h1>{code} {reason}</h1>\n"
        f'<pre>{{\n  "status_code": {code},\n{details}\n}}</pre>\n'
        f"{extra}"
        "<footer>Answered by the sozu proxy itself.</footer>\n"
        "</body></html>\n"
    )


def _redirect(code: int, reason: str) -> str:
    return (
        f"HTTP/1.1 {code} {reason}\r\n"
        "Location: %REDIRECT_LOCATION\r\n"
        "Connection: close\r\n"
        "Sozu-Id: %REQUEST_ID\r\n"
        "\r\n"
    )


_IDS = ("route", "request_id")
_BACKEND_IDS = (*_IDS, "cluster_id", "backend_id")
_PARSER_PARAGRAPH = "%MESSAGE (parsing phase: %PHASE)"

BUILTIN_TEXT: Mapping[str, str] = MappingProxyType(
    {
        "301": _redirect(301, "Moved Permanently"),
        "302": _redirect(302, "Found"),
        "308": _redirect(308, "Permanent Redirect"),
        "400": _page(
            400, "Bad Request", _IDS, "The request could not be parsed. " + _PARSER_PARAGRAPH
        ),
        "401": _page(401, "Unauthorized", _IDS).replace(
            "Connection: close\r\n", "Connection: close\r\nWWW-Authenticate: %WWW_AUTHENTICATE\r\n"
        ),
        "404": _page(404, "Not Found", _IDS, "No frontend matches this request."),
        "408": _page(408, "Request Timeout", _IDS, "The request did not arrive within %DURATION."),
        "413": _page(
            413,
            "Payload Too Large",
            _IDS,
            "The request head does not fit in %CAPACITY bytes (phase %PHASE). %MESSAGE",
        ),
        "421": _page(421, "Misdirected Request", _IDS, "The host does not match this connection."),
        "429": _page(
            429, "Too Many Requests", (*_IDS, "cluster_id"), "Too many connections; retry later."
        ).replace("Connection: close\r\n", "Connection: close\r\nRetry-After: %RETRY_AFTER\r\n"),
        "502": _page(
            502, "Bad Gateway", _BACKEND_IDS, "The backend answer could not be parsed. "
            + _PARSER_PARAGRAPH,
        ),
        "503": _page(503, "Service Unavailable", _BACKEND_IDS, "%MESSAGE"),
        "504": _page(
            504, "Gateway Timeout", _BACKEND_IDS, "The backend did not answer within %DURATION."
        ),
        "507": _page(
            507,
            "Insufficient Storage",
            _BACKEND_IDS,
            "The backend answer does not fit in %CAPACITY bytes (phase %PHASE). %MESSAGE",
        ),
    }
)  # fmt: skip
"""Text of the built-in answer of each status Sōzu answers itself."""

BUILTIN: Mapping[str, Template] = MappingProxyType(
    {name: Template.parse(name, text, escape_body=True) for name, text in BUILTIN_TEXT.items()}
)

_LEGACY_FIELDS = (
    ("301", "answer_301"),
    ("400", "answer_400"),
    ("401", "answer_401"),
    ("404", "answer_404"),
    ("408", "answer_408"),
    ("413", "answer_413"),
    ("421", "answer_421"),
    ("429", "answer_429"),
    ("502", "answer_502"),
    ("503", "answer_503"),
    ("504", "answer_504"),
    ("507", "answer_507"),
)


def merged_answers(answers: Mapping[str, str], legacy: CustomHttpAnswers | None) -> dict[str, str]:
    """A listener's `answers` map completed by its legacy `http_answers` (the map wins)."""
    merged = dict(answers)
    if legacy is not None:
        for name, field_name in _LEGACY_FIELDS:
            if legacy.HasField(field_name):  # type: ignore[arg-type]
                merged.setdefault(name, getattr(legacy, field_name))
    return merged


def compile_answers(answers: Mapping[str, str]) -> tuple[dict[str, Template], list[str]]:
    """Parse custom templates: the usable ones, and one error text per refused template."""
    compiled: dict[str, Template] = {}
    errors: list[str] = []
    for name, text in sorted(answers.items()):
        if not text:
            continue
        try:
            compiled[name] = Template.parse(name, text)
        except TemplateError as error:
            errors.append(str(error))
    return compiled, errors


def pick(
    status: str,
    cluster_templates: Mapping[str, Template] | None,
    listener_templates: Mapping[str, Template] | None,
) -> Template:
    """The template for `status`: the cluster's, else the listener's, else the built-in one."""
    if cluster_templates:
        found = cluster_templates.get(status)
        if found is not None:
            return found
    if listener_templates:
        found = listener_templates.get(status)
        if found is not None:
            return found
    return BUILTIN[status]
