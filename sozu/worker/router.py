"""Which HTTP(S) frontend a request belongs to: Sōzu's routing rules on prebuilt tables.

A `Router` holds the frontends of one listener address and answers `lookup(host, path, method)`
with the matching `Route` (the frontend and its cluster id, `None` for a deny rule) or `None`.
`Routers` keeps one `Router` per listener address. The order of evaluation is Sōzu's:

1. **PRE** rules, in the order they were added; the first one whose hostname, path and method
   rules all match wins.
2. The hostname **tree** (frontends with position TREE): the exact hostname first, else a
   wildcard `*.example.com` (it stands for exactly one leftmost label), else a hostname with
   regular-expression labels (`/api[0-9]+/.example.com`, each `/.../` label anchored). Once a
   hostname entry is found only its own path rules are tried, as in Sōzu's trie: a request
   for `a.example.com` whose path matches no rule of `a.example.com` does not fall back to
   `*.example.com`. Among the path rules of that hostname: a regex or exact-path rule with a
   matching explicit method wins at once; otherwise the longest matching prefix wins (a later
   rule wins a tie), and a regex or exact-path rule without a method counts as matching the
   whole path.
3. **POST** rules, like PRE rules.

Hostnames compare case-insensitively (both sides are lower-cased; a non-ASCII frontend
hostname is turned into its IDNA form); the request's port is not part of the match. Path
rules see the request target as received (query string included): a prefix is a byte-prefix,
an exact path is an equality and a regex is searched anywhere (unanchored), as in Sōzu.
Methods compare exactly. PRE/POST hostname rules: `*` matches any hostname, `*.suffix` one
label, a hostname with `/regex/` labels a regular expression over the whole hostname.

Deliberate difference with Sōzu's trie: a hostname that only exists in the tree as the parent
of a longer one (`x.a.example.com` defined, `a.example.com` asked) falls back to a wildcard
here; Sōzu's trie answers "no route" there.

Sans-io: no socket, clock or event loop. Tables change only through `add()` / `remove()`, so
each lookup is a few dict probes plus the path rules of one hostname.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sozu.command.addresses import to_text
from sozu.command.errors import AddressError, SozuError
from sozu.command.proto import HstsConfig, PathRuleKind, RequestHttpFrontend, RulePosition


class RouterError(SozuError):
    """A frontend the router cannot hold (bad hostname or regex, duplicate, absent)."""


@dataclass(frozen=True, slots=True)
class Route:
    """The outcome of a lookup: the frontend matched and its cluster (`None`: deny rule)."""

    cluster_id: str | None
    frontend: RequestHttpFrontend = field(compare=False)
    hsts: Hsts | None = field(default=None, compare=False)
    """The frontend's own HSTS policy (`hsts_line`); None: the listener's applies."""


Hsts = tuple[bytes, bool]
"""An HSTS policy ready to send: the `Strict-Transport-Security` header line (CRLF included,
b"" when HSTS is off) and whether it replaces the backend's own header (`force_replace_backend`;
otherwise the backend's wins, as in Sōzu)."""


def hsts_line(config: HstsConfig | None) -> Hsts | None:
    """The ready-to-send form of an HSTS policy, None when there is none. Sōzu's default
    max-age is one year."""
    if config is None:
        return None
    if not (config.HasField("enabled") and config.enabled):
        return b"", False
    max_age = config.max_age if config.HasField("max_age") else 31_536_000
    value = b"Strict-Transport-Security: max-age=%d" % max_age
    if config.HasField("include_subdomains") and config.include_subdomains:
        value += b"; includeSubDomains"
    if config.HasField("preload") and config.preload:
        value += b"; preload"
    force = config.HasField("force_replace_backend") and config.force_replace_backend
    return value + b"\r\n", force


# --- hostnames -----------------------------------------------------------------------------


def normalize_hostname(hostname: str) -> str:
    """Lower-case ASCII form of a hostname (IDNA for non-ASCII names); RouterError if invalid."""
    name = hostname.strip().lower()
    if not name:
        raise RouterError("empty hostname")
    if name.isascii():
        return name
    try:
        return ".".join(
            label.encode("idna").decode("ascii") if not label.isascii() else label
            for label in name.split(".")
        )
    except UnicodeError as error:
        raise RouterError(f"hostname {hostname!r} has no IDNA form: {error}") from None


def split_host_port(authority: str) -> str | None:
    """The lower-cased hostname of a Host header / URI authority, without its port.

    None when it is not a valid `host[:port]` (a 400 for the caller). IPv6 literals keep
    their brackets (`[::1]`).
    """
    text = authority.strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
        return host.lower()
    host, sep, port = text.partition(":")
    if sep and not port.isdigit():
        return None
    if not host or not all(c.isalnum() or c in "-._" for c in host) or not host.isascii():
        return None
    return host.lower()


class _DomainKind(enum.Enum):
    ANY = "any"
    EXACT = "exact"
    WILDCARD = "wildcard"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class DomainRule:
    """A PRE/POST hostname rule: `*`, an exact name, `*.suffix`, or a `/regex/`-label name."""

    kind: _DomainKind
    text: str  # normalized hostname, or the regex source
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, hostname: str) -> DomainRule:
        if hostname == "*":
            return cls(_DomainKind.ANY, "*")
        if "/" in hostname:
            source = _domain_regex(hostname)
            return cls(_DomainKind.REGEX, source, _compile(source, hostname))
        name = normalize_hostname(hostname)
        if "*" in name:
            if not name.startswith("*.") or "*" in name[1:]:
                raise RouterError(f"hostname {hostname!r}: a wildcard must be the leftmost label")
            return cls(_DomainKind.WILDCARD, name)
        return cls(_DomainKind.EXACT, name)

    def matches(self, host: str) -> bool:
        match self.kind:
            case _DomainKind.ANY:
                return True
            case _DomainKind.EXACT:
                return host == self.text
            case _DomainKind.WILDCARD:
                suffix = self.text[1:]
                if not host.endswith(suffix):
                    return False
                label = host[: -len(suffix)]
                return bool(label) and "." not in label
            case _DomainKind.REGEX:
                assert self.pattern is not None
                return self.pattern.match(host) is not None


def _compile(source: str, hostname: str) -> re.Pattern[str]:
    try:
        return re.compile(source)
    except re.error as error:
        raise RouterError(f"hostname {hostname!r}: invalid regular expression: {error}") from None


def _split_labels(hostname: str) -> list[str]:
    """Split on dots outside `/regex/` labels."""
    labels: list[str] = []
    current: list[str] = []
    inside = False
    for char in hostname:
        if char == "/":
            inside = not inside
        if char == "." and not inside:
            labels.append("".join(current))
            current = []
        else:
            current.append(char)
    if inside:
        raise RouterError(f"hostname {hostname!r}: unterminated /regex/ label")
    labels.append("".join(current))
    return labels


def _domain_regex(hostname: str) -> str:
    """One anchored regex for a hostname made of literal and `/regex/` labels."""
    parts = []
    for label in _split_labels(hostname):
        if len(label) >= 2 and label.startswith("/") and label.endswith("/"):
            parts.append(f"(?:{label[1:-1]})")
        elif "/" in label or not label:
            raise RouterError(f"hostname {hostname!r}: bad label {label!r}")
        else:
            parts.append(re.escape(normalize_hostname(label)))
    return r"\A" + r"\.".join(parts) + r"\Z"


def _label_patterns(hostname: str) -> tuple[re.Pattern[str] | str, ...]:
    """Tree form of a hostname with regex labels: one matcher per label, left to right."""
    out: list[re.Pattern[str] | str] = []
    for label in _split_labels(hostname):
        if len(label) >= 2 and label.startswith("/") and label.endswith("/"):
            out.append(_compile(r"\A(?:" + label[1:-1] + r")\Z", hostname))
        elif "/" in label or not label:
            raise RouterError(f"hostname {hostname!r}: bad label {label!r}")
        else:
            out.append(normalize_hostname(label))
    return tuple(out)


# --- paths and methods ---------------------------------------------------------------------


class _PathHit(enum.Enum):
    NONE = 0
    PREFIX = 1
    REGEX = 2
    EQUALS = 3


_NO_HIT = _PathHit.NONE
_PREFIX_HIT = _PathHit.PREFIX
_REGEX_HIT = _PathHit.REGEX
_EQUALS_HIT = _PathHit.EQUALS
_PREFIX = int(PathRuleKind.PREFIX)  # plain ints: a protobuf enum attribute costs a call
_EQUALS = int(PathRuleKind.EQUALS)


@dataclass(frozen=True, slots=True)
class PathRule:
    """A frontend's path rule: prefix, exact path or regex (compared by kind and source)."""

    kind: int  # PathRuleKind value
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    @classmethod
    def from_frontend(cls, front: RequestHttpFrontend) -> PathRule:
        kind, value = front.path.kind, front.path.value
        if kind == PathRuleKind.REGEX:
            try:
                return cls(kind, value, re.compile(value))
            except re.error as error:
                raise RouterError(f"path regex {value!r} is invalid: {error}") from None
        if kind not in (PathRuleKind.PREFIX, PathRuleKind.EQUALS):
            raise RouterError(f"unknown path rule kind {kind}")
        return cls(kind, value)

    def hit(self, path: str) -> _PathHit:
        kind = self.kind
        if kind == _PREFIX:
            return _PREFIX_HIT if path.startswith(self.value) else _NO_HIT
        if kind == _EQUALS:
            return _EQUALS_HIT if path == self.value else _NO_HIT
        assert self.pattern is not None
        return _REGEX_HIT if self.pattern.search(path) is not None else _NO_HIT


@dataclass(slots=True)
class _Rule:
    path: PathRule
    method: str | None
    route: Route

    def same(self, path: PathRule, method: str | None) -> bool:
        return self.path == path and self.method == method


@dataclass(slots=True)
class _LinearRule:
    domain: DomainRule
    rule: _Rule


def _select(rules: list[_Rule], path: str, method: str) -> Route | None:
    """Sōzu's choice among the path rules of one hostname (see the module docstring)."""
    best: Route | None = None
    best_length = 0
    for rule in rules:
        if rule.method is not None and rule.method != method:
            continue
        hit = rule.path.hit(path)
        if hit is _NO_HIT:
            continue
        if hit is _PREFIX_HIT:
            size = len(rule.path.value)
            if size >= best_length:
                best_length = size
                best = rule.route
        elif rule.method is not None:
            return rule.route
        else:
            best_length = len(path)
            best = rule.route
    return best


def _linear_lookup(rules: list[_LinearRule], host: str, path: str, method: str) -> Route | None:
    for entry in rules:
        rule = entry.rule
        if rule.method is not None and rule.method != method:
            continue
        if entry.domain.matches(host) and rule.path.hit(path) is not _NO_HIT:
            return rule.route
    return None


# --- one listener --------------------------------------------------------------------------


class Router:
    """The frontends of one listener address, in PRE / tree / POST tables."""

    __slots__ = ("_exact", "_post", "_pre", "_regex_hosts", "_wildcards")

    def __init__(self) -> None:
        self._pre: list[_LinearRule] = []
        self._post: list[_LinearRule] = []
        self._exact: dict[str, list[_Rule]] = {}
        self._wildcards: dict[str, list[_Rule]] = {}  # ".example.com" -> rules of *.example.com
        self._regex_hosts: list[tuple[tuple[re.Pattern[str] | str, ...], str, list[_Rule]]] = []

    def __len__(self) -> int:
        tree = sum(len(r) for r in self._exact.values())
        tree += sum(len(r) for r in self._wildcards.values())
        tree += sum(len(r) for _, _, r in self._regex_hosts)
        return len(self._pre) + len(self._post) + tree

    generation = 0
    """Bumped by every `add` / `remove` of any router: a lookup remembered under an older
    generation may be stale (`HttpSession` keeps its connection's last route)."""

    def add(self, front: RequestHttpFrontend) -> None:
        """Add a frontend; RouterError when it is invalid or the same rule is already there."""
        Router.generation += 1
        path = PathRule.from_frontend(front)
        method = front.method if front.HasField("method") else None
        cluster_id = front.cluster_id if front.HasField("cluster_id") else None
        hsts = hsts_line(front.hsts) if front.HasField("hsts") else None
        rule = _Rule(path, method, Route(cluster_id, front, hsts))
        if front.position in (RulePosition.PRE, RulePosition.POST):
            table = self._pre if front.position == RulePosition.PRE else self._post
            domain = DomainRule.parse(front.hostname)
            if any(e.domain == domain and e.rule.same(path, method) for e in table):
                raise RouterError(f"frontend {_describe(front)} already exists")
            table.append(_LinearRule(domain, rule))
            return
        rules = self._tree_rules(front.hostname, create=True)
        assert rules is not None
        if any(r.same(path, method) for r in rules):
            raise RouterError(f"frontend {_describe(front)} already exists")
        rules.append(rule)

    def remove(self, front: RequestHttpFrontend) -> None:
        """Remove the rule with this frontend's hostname, path and method; RouterError if absent."""
        Router.generation += 1
        path = PathRule.from_frontend(front)
        method = front.method if front.HasField("method") else None
        if front.position in (RulePosition.PRE, RulePosition.POST):
            table = self._pre if front.position == RulePosition.PRE else self._post
            domain = DomainRule.parse(front.hostname)
            for index, entry in enumerate(table):
                if entry.domain == domain and entry.rule.same(path, method):
                    del table[index]
                    return
            raise RouterError(f"no frontend {_describe(front)}")
        rules = self._tree_rules(front.hostname, create=False)
        if rules is not None:
            for index, rule in enumerate(rules):
                if rule.same(path, method):
                    del rules[index]
                    if not rules:
                        self._drop_tree_entry(front.hostname)
                    return
        raise RouterError(f"no frontend {_describe(front)}")

    def lookup(self, host: str, path: str, method: str) -> Route | None:
        """The route for a request (host already lower-cased, without port), or None."""
        if self._pre:
            found = _linear_lookup(self._pre, host, path, method)
            if found is not None:
                return found
        rules = self._exact.get(host)
        if rules is None:
            rules = self._find_tree_rules(host)
        if rules is not None:
            found = _select(rules, path, method)
            if found is not None:
                return found
        if self._post:
            return _linear_lookup(self._post, host, path, method)
        return None

    # --- the hostname tree ---------------------------------------------------------------

    def _find_tree_rules(self, host: str) -> list[_Rule] | None:
        rules = self._exact.get(host)
        if rules is not None:
            return rules
        dot = host.find(".")
        if dot > 0:
            rules = self._wildcards.get(host[dot:])
            if rules is not None:
                return rules
        if self._regex_hosts:
            labels = host.split(".")
            for matchers, _, rules in self._regex_hosts:
                if len(matchers) == len(labels) and all(
                    m == label if isinstance(m, str) else m.match(label) is not None
                    for m, label in zip(matchers, labels, strict=True)
                ):
                    return rules
        return None

    def _tree_rules(self, hostname: str, create: bool) -> list[_Rule] | None:
        if "/" in hostname:
            matchers = _label_patterns(hostname)
            for _, source, rules in self._regex_hosts:
                if source == hostname:
                    return rules
            if not create:
                return None
            fresh: list[_Rule] = []
            self._regex_hosts.append((matchers, hostname, fresh))
            return fresh
        name = normalize_hostname(hostname)
        if "*" in name:
            if not name.startswith("*.") or "*" in name[1:] or len(name) < 3:
                raise RouterError(f"hostname {hostname!r}: a wildcard must be the leftmost label")
            table, key = self._wildcards, name[1:]
        else:
            table, key = self._exact, name
        if create:
            return table.setdefault(key, [])
        return table.get(key)

    def _drop_tree_entry(self, hostname: str) -> None:
        if "/" in hostname:
            self._regex_hosts = [e for e in self._regex_hosts if e[1] != hostname]
            return
        name = normalize_hostname(hostname)
        if name.startswith("*."):
            self._wildcards.pop(name[1:], None)
        else:
            self._exact.pop(name, None)


def _describe(front: RequestHttpFrontend) -> str:
    method = f" {front.method}" if front.HasField("method") else ""
    kind = {PathRuleKind.PREFIX: "prefix", PathRuleKind.REGEX: "regex"}.get(
        front.path.kind, "equals"
    )
    return f"{front.hostname} {kind} {front.path.value!r}{method}"


# --- every listener ------------------------------------------------------------------------


def listener_key(front: RequestHttpFrontend) -> str:
    """The listener address text a frontend belongs to; RouterError if it has none."""
    try:
        return to_text(front.address)
    except AddressError as error:
        raise RouterError(f"frontend {_describe(front)}: {error}") from None


class Routers:
    """One `Router` per listener address (text form, as `sozu.command.addresses.to_text`)."""

    __slots__ = ("_by_address",)

    def __init__(self, fronts: Iterable[RequestHttpFrontend] = ()) -> None:
        self._by_address: dict[str, Router] = {}
        for front in fronts:
            self.add(front)

    def add(self, front: RequestHttpFrontend) -> None:
        key = listener_key(front)
        router = self._by_address.get(key)
        if router is None:
            router = Router()
            router.add(front)
            self._by_address[key] = router
        else:
            router.add(front)

    def remove(self, front: RequestHttpFrontend) -> None:
        key = listener_key(front)
        router = self._by_address.get(key)
        if router is None:
            raise RouterError(f"no frontend {_describe(front)}")
        router.remove(front)
        if not len(router):
            del self._by_address[key]

    def get(self, address: str) -> Router | None:
        """The router of one listener address, if it has any frontend."""
        return self._by_address.get(address)

    def lookup(self, address: str, host: str, path: str, method: str) -> Route | None:
        router = self._by_address.get(address)
        return None if router is None else router.lookup(host, path, method)
