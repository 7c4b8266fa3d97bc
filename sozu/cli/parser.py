"""The `sozu` word tree: Sōzu's subcommands, flags, aliases and defaults, as argparse parsers.

Each leaf stores `action` (`"cluster.add"`, `"listener.https.update"`, ...), which
`sozu.cli.main` dispatches on. Global flags (`-c/--config`, `-t/--timeout`, `-j/--json`) are
accepted before or after the subcommand, as with Sōzu's clap parser: every parser carries them,
and the sub-parsers' copies default to "absent" so a flag given early is not overwritten.
Values are checked here (addresses, numbers, policy names) so a typo is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any

from sozu import __version__
from sozu.cli import request_builder as rb
from sozu.command.config_model import ACCESS_LOG_FORMATS, H2_U32_KNOBS, H2_U64_KNOBS

_ACTIONS = "SUBCOMMAND"


def global_flags(suppress_defaults: bool, long_timeout: bool = True) -> argparse.ArgumentParser:
    """Flags valid at any position; subparsers suppress defaults so they don't override.

    `cluster health-check set` has its own `--timeout` (the check's), so there the command
    timeout is only `-t`.
    """
    default = argparse.SUPPRESS if suppress_defaults else None
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help="configuration file (default: $SOZU_CONFIG)",
    )
    timeout_names = ("-t", "--timeout") if long_timeout else ("-t",)
    flags.add_argument(
        *timeout_names,
        dest="timeout",
        metavar="MS",
        type=rb.u64,
        default=default,
        help="how long to wait for each answer, in milliseconds (default: the config's "
        "ctl_command_timeout, 1000); 0 waits forever",
    )
    flags.add_argument(
        "-j",
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress_defaults else False,
        help="print answers as JSON",
    )
    return flags


class _Tree:
    """Adds parsers that all carry the global flags."""

    def __init__(self) -> None:
        self.flags = global_flags(suppress_defaults=True)
        self.flags_short_timeout = global_flags(suppress_defaults=True, long_timeout=False)

    def group(self, parent: Any, name: str, help_text: str, dest: str) -> Any:
        parser = parent.add_parser(
            name, parents=[self.flags], help=help_text, description=help_text
        )
        return parser.add_subparsers(dest=dest, metavar=_ACTIONS, required=True)

    def leaf(
        self,
        parent: Any,
        name: str,
        help_text: str,
        action: str,
        short_timeout: bool = False,
        **defaults: Any,
    ) -> argparse.ArgumentParser:
        flags = self.flags_short_timeout if short_timeout else self.flags
        parser: argparse.ArgumentParser = parent.add_parser(
            name, parents=[flags], help=help_text, description=help_text
        )
        parser.set_defaults(action=action, **defaults)
        return parser


def _address(parser: argparse.ArgumentParser, help_text: str, required: bool = True) -> None:
    parser.add_argument(
        "-a",
        "--address",
        required=required,
        type=rb.address_text,
        metavar="IP:PORT",
        help=help_text,
    )


def _public_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-address",
        type=rb.address_text,
        metavar="IP:PORT",
        help="the address clients see, when it differs (logs, forwarded headers)",
    )


def _paired(
    parser: argparse.ArgumentParser, name: str, negative: str, dest: str, what: str
) -> None:
    """`--name` / `--negative` set one tri-state value; the last one given wins."""
    parser.add_argument(
        f"--{name}", dest=dest, action="store_const", const=True, help=f"enable {what}"
    )
    parser.add_argument(
        f"--{negative}", dest=dest, action="store_const", const=False, help=f"disable {what}"
    )


def _hsts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hsts-max-age",
        type=rb.u32,
        metavar="SECONDS",
        help="HSTS max-age (any --hsts-* flag enables HSTS; default one year, 0 tells browsers "
        "to forget)",
    )
    parser.add_argument(
        "--hsts-include-subdomains", action="store_true", help="add includeSubDomains"
    )
    parser.add_argument("--hsts-preload", action="store_true", help="add preload")
    parser.add_argument(
        "--hsts-disabled",
        action="store_true",
        help="turn HSTS off here, overriding an inherited policy",
    )
    parser.add_argument(
        "--hsts-force-replace-backend",
        action="store_true",
        help="replace a Strict-Transport-Security header sent by the backend",
    )


def _timeouts(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    texts = {
        "front": "seconds of client inactivity before closing",
        "back": "seconds of backend inactivity before closing",
        "connect": "seconds allowed to connect to a backend",
        "request": "seconds allowed to receive a whole request",
    }
    for name in names:
        parser.add_argument(f"--{name}-timeout", type=rb.u32, metavar="SECONDS", help=texts[name])


def _h2_and_answers(parser: argparse.ArgumentParser) -> None:
    for knob in (*H2_U32_KNOBS, *H2_U64_KNOBS):
        parser.add_argument(
            "--" + knob.replace("_", "-"),
            type=rb.u64 if knob in H2_U64_KNOBS else rb.u32,
            metavar="N",
            help=f"HTTP/2 tuning: {knob.removeprefix('h2_')}",
        )
    parser.add_argument(
        "--sozu-id-header", metavar="NAME", help="name of the per-request id header"
    )
    for code in rb.UPDATE_ANSWER_CODES:
        parser.add_argument(
            f"--answer-{code}", metavar="FILE", help=f"file holding the {code} answer template"
        )


def _listener_words(tree: _Tree, listeners: Any) -> None:
    for kind in ("http", "https", "tcp", "udp"):
        words = tree.group(listeners, kind, f"{kind.upper()} listener management", "kind_command")

        add = tree.leaf(words, "add", f"add an {kind.upper()} listener", f"listener.{kind}.add")
        _address(add, "listening address")
        _public_address(add)
        if kind in ("http", "https"):
            add.add_argument("--answer-404", metavar="FILE", help="404 answer template file")
            add.add_argument("--answer-503", metavar="FILE", help="503 answer template file")
        if kind == "https":
            add.add_argument(
                "--tls-versions",
                type=rb.tls_version,
                action="append",
                nargs="+",
                metavar="VERSION",
                help="accepted TLS versions (TLS_V12, TLS_V13; default both)",
            )
            add.add_argument(
                "--tls-cipher-list",
                dest="cipher_list",
                type=rb.comma_list,
                action="append",
                metavar="CIPHERS",
                help="TLS cipher names (repeat or separate with commas)",
            )
        if kind != "udp":
            add.add_argument(
                "--expect-proxy", action="store_true", help="expect a PROXY protocol header"
            )
        if kind in ("http", "https"):
            add.add_argument("--sticky-name", help="sticky session cookie name (SOZUBALANCEID)")
            _timeouts(add, ("front", "back", "request", "connect"))
        if kind == "udp":
            _timeouts(add, ("front", "back"))
            add.add_argument(
                "--max-rx-datagram-size",
                type=rb.u32,
                metavar="BYTES",
                help="largest datagram received (default 1500, at most buffer_size)",
            )
            add.add_argument(
                "--max-flows", type=rb.u32, metavar="N", help="concurrent flows (0 = automatic)"
            )

        for verb, text in (
            ("remove", "remove"),
            ("activate", "start accepting on"),
            ("deactivate", "stop accepting on"),
        ):
            leaf = tree.leaf(
                words,
                verb,
                f"{text} an {kind.upper()} listener",
                f"listener.{verb}",
                listener_kind=kind,
            )
            _address(leaf, "listener address")

        update = tree.leaf(
            words, "update", f"patch a running {kind.upper()} listener", f"listener.{kind}.update"
        )
        _address(update, "listener address")
        _public_address(update)
        if kind in ("http", "https"):
            update.add_argument("--sticky-name", help="sticky session cookie name")
            _timeouts(update, ("front", "back", "connect", "request"))
        elif kind == "tcp":
            _timeouts(update, ("front", "back", "connect"))
        else:
            _timeouts(update, ("front", "back"))
            update.add_argument("--max-rx-datagram-size", type=rb.u32, metavar="BYTES")
            update.add_argument("--max-flows", type=rb.u32, metavar="N")
        if kind != "udp":
            _paired(update, "expect-proxy", "no-expect-proxy", "expect_proxy", "PROXY protocol")
        if kind == "https":
            _paired(
                update,
                "strict-sni-binding",
                "no-strict-sni-binding",
                "strict_sni_binding",
                "the Host = SNI check",
            )
            update.add_argument(
                "--disable-http11",
                dest="disable_http11",
                action="store_const",
                const=True,
                help="accept HTTP/2 clients only",
            )
            update.add_argument(
                "--enable-http11",
                dest="disable_http11",
                action="store_const",
                const=False,
                help="accept HTTP/1.1 clients again",
            )
            update.add_argument(
                "--alpn-protocols",
                type=rb.comma_list,
                action="append",
                metavar="LIST",
                help="ALPN protocols to offer, e.g. h2,http/1.1",
            )
            update.add_argument(
                "--reset-alpn", action="store_true", help="back to the default ALPN list"
            )
        if kind in ("http", "https"):
            _h2_and_answers(update)
        if kind == "https":
            _hsts(update)

    tree.leaf(listeners, "list", "list every listener", "listener.list")


def _frontend_words(tree: _Tree, frontends: Any) -> None:
    for kind in ("http", "https"):
        words = tree.group(frontends, kind, f"{kind.upper()} frontend management", "kind_command")
        for verb in ("add", "remove"):
            leaf = tree.leaf(
                words,
                verb,
                f"{verb} an {kind.upper()} frontend, then `id CLUSTER_ID` or `deny`",
                f"frontend.{kind}.{verb}",
            )
            _address(leaf, "listener address of the frontend")
            leaf.add_argument(
                "--hostname", "--host", dest="hostname", required=True, help="host to match"
            )
            leaf.add_argument("-p", "--path-prefix", help="match paths starting with this")
            leaf.add_argument("--path-regex", help="match paths matching this regular expression")
            leaf.add_argument("--path-equals", help="match exactly this path")
            leaf.add_argument("-m", "--method", help="match this HTTP method only")
            if verb == "add":
                leaf.add_argument(
                    "--tags",
                    type=rb.tags,
                    help="key=value pairs for the access logs, e.g. 'owner=alice, env=prod'",
                )
                leaf.add_argument(
                    "--redirect",
                    help="forward (default), permanent or unauthorized",
                )
                leaf.add_argument(
                    "--redirect-scheme", help="use-same (default), use-http or use-https"
                )
                leaf.add_argument("--redirect-template", help="template of the redirect answer")
                leaf.add_argument("--rewrite-host", help="host rewrite template")
                leaf.add_argument("--rewrite-path", help="path rewrite template")
                leaf.add_argument("--rewrite-port", type=rb.u32, help="port of the rewritten URL")
                leaf.add_argument(
                    "--required-auth",
                    action="store_true",
                    help="require Basic credentials of the cluster's authorized hashes",
                )
                leaf.add_argument(
                    "--header",
                    action="append",
                    metavar="POSITION=NAME=VALUE",
                    help="set a header (position request, response or both; an empty value "
                    "deletes it); repeatable",
                )
                _hsts(leaf)
            route = leaf.add_subparsers(dest="route", metavar="{id,deny}", required=True)
            target = route.add_parser(
                "id", parents=[tree.flags], help="send the traffic to this cluster"
            )
            target.add_argument("cluster_id", metavar="CLUSTER_ID")
            route.add_parser(
                "deny", parents=[tree.flags], help="answer 401 and never forward (deny rule)"
            )

    for kind in ("tcp", "udp"):
        words = tree.group(frontends, kind, f"{kind.upper()} frontend management", "kind_command")
        for verb in ("add", "remove"):
            leaf = tree.leaf(
                words, verb, f"{verb} a {kind.upper()} frontend", f"frontend.{kind}.{verb}"
            )
            leaf.add_argument("-i", "--id", required=True, help="cluster id")
            _address(leaf, "frontend address")
            if verb == "add":
                leaf.add_argument("--tags", type=rb.tags, help="key=value pairs for the logs")

    listing = tree.leaf(frontends, "list", "list frontends", "frontend.list")
    listing.add_argument("--http", action="store_true", help="HTTP frontends")
    listing.add_argument("--https", action="store_true", help="HTTPS frontends")
    listing.add_argument("--tcp", action="store_true", help="TCP frontends")
    listing.add_argument("-d", "--domain", help="only hostnames containing this")


def _cluster_words(tree: _Tree, clusters: Any) -> None:
    listing = tree.leaf(clusters, "list", "query clusters: all, by id or by domain", "cluster.list")
    listing.add_argument("-i", "--id", help="cluster id")
    listing.add_argument("-d", "--domain", help="hostname, optionally with a path: example.com/api")

    remove = tree.leaf(clusters, "remove", "remove a cluster", "cluster.remove")
    remove.add_argument("-i", "--id", required=True, help="cluster id")

    add = tree.leaf(clusters, "add", "add or replace a cluster", "cluster.add")
    add.add_argument("-i", "--id", required=True, help="cluster id")
    add.add_argument("-s", "--sticky-session", action="store_true", help="sticky sessions")
    add.add_argument(
        "-r", "--https-redirect", action="store_true", help="redirect HTTP requests to HTTPS"
    )
    add.add_argument(
        "--send-proxy", action="store_true", help="send a PROXY protocol v2 header to backends"
    )
    add.add_argument(
        "--expect-proxy", action="store_true", help="expect a PROXY protocol v2 header"
    )
    add.add_argument(
        "--load-balancing-policy",
        required=True,
        type=rb.load_balancing_policy,
        metavar="POLICY",
        help="round_robin, random, least_loaded, power_of_two, hrw or maglev",
    )
    add.add_argument("--http2", action="store_true", help="speak HTTP/2 to the backends")
    add.add_argument(
        "--https-redirect-port", type=rb.u32, metavar="PORT", help="port of the HTTPS redirect"
    )
    add.add_argument("--www-authenticate", metavar="REALM", help="realm of the 401 challenge")
    add.add_argument(
        "--authorized-hash",
        action="append",
        metavar="USER:SHA256",
        help="Basic credential user:hex(sha256(password)); repeatable",
    )
    add.add_argument(
        "--answer",
        action="append",
        metavar="CODE=BODY",
        help="answer template for a status, inline or CODE=file://PATH; repeatable",
    )

    h2 = tree.group(clusters, "h2", "HTTP/2 towards the backends", "h2_command")
    for verb in ("enable", "disable"):
        leaf = tree.leaf(
            h2, verb, f"{verb} HTTP/2 towards the backends", "cluster.h2", enable=verb == "enable"
        )
        leaf.add_argument("-i", "--id", required=True, help="cluster id")

    checks = tree.group(clusters, "health-check", "backend health checks", "health_check_command")
    set_check = tree.leaf(
        checks,
        "set",
        "set or replace a cluster's health check",
        "cluster.health-check.set",
        short_timeout=True,
    )
    set_check.add_argument("-i", "--id", required=True, help="cluster id")
    set_check.add_argument("-u", "--uri", required=True, help="path to request, e.g. /health")
    set_check.add_argument("--interval", type=rb.u32, default=10, help="seconds between checks")
    set_check.add_argument(
        "--timeout", dest="hc_timeout", type=rb.u32, default=5, help="seconds to wait for an answer"
    )
    set_check.add_argument("--healthy-threshold", type=rb.u32, default=3)
    set_check.add_argument("--unhealthy-threshold", type=rb.u32, default=3)
    set_check.add_argument(
        "--expected-status", type=rb.u32, default=0, help="status counted as success; 0 = any 2xx"
    )
    remove_check = tree.leaf(
        checks, "remove", "remove a cluster's health check", "cluster.health-check.remove"
    )
    remove_check.add_argument("-i", "--id", required=True, help="cluster id")
    list_checks = tree.leaf(checks, "list", "list health checks", "cluster.health-check.list")
    list_checks.add_argument("-i", "--id", help="only this cluster")


def _certificate_words(tree: _Tree, certs: Any) -> None:
    listing = tree.leaf(certs, "list", "list certificates", "certificate.list")
    listing.add_argument("-f", "--fingerprint", help="only this fingerprint")
    listing.add_argument("-d", "--domain", help="only certificates for this name")
    listing.add_argument(
        "-w", "--workers", action="store_true", help="ask each worker instead of the state"
    )

    add = tree.leaf(certs, "add", "add a certificate to an HTTPS listener", "certificate.add")
    _address(add, "HTTPS listener address")
    add.add_argument("--certificate", required=True, metavar="FILE", help="certificate (PEM)")
    add.add_argument(
        "--certificate-chain", required=True, metavar="FILE", help="certificate chain (PEM)"
    )
    add.add_argument("--key", required=True, metavar="FILE", help="private key (PEM)")
    add.add_argument(
        "--tls-versions", type=rb.tls_version, action="append", nargs="+", metavar="VERSION"
    )

    remove = tree.leaf(certs, "remove", "remove a certificate", "certificate.remove")
    _address(remove, "HTTPS listener address")
    remove.add_argument("--certificate", "--cert", metavar="FILE", help="certificate (PEM)")
    remove.add_argument("-f", "--fingerprint", help="certificate fingerprint (hex)")

    replace = tree.leaf(certs, "replace", "replace a certificate", "certificate.replace")
    _address(replace, "HTTPS listener address")
    replace.add_argument("--new-certificate", required=True, metavar="FILE")
    replace.add_argument("--new-certificate-chain", required=True, metavar="FILE")
    replace.add_argument("--new-key", required=True, metavar="FILE")
    replace.add_argument(
        "--old-certificate", "--old-cert", metavar="FILE", help="the certificate to replace"
    )
    replace.add_argument("-f", "--fingerprint", help="fingerprint of the certificate to replace")
    replace.add_argument(
        "--tls-versions", type=rb.tls_version, action="append", nargs="+", metavar="VERSION"
    )


def _metrics_words(tree: _Tree, metrics: Any) -> None:
    for verb, text in (
        ("enable", "enable metrics collection"),
        ("disable", "disable metrics collection"),
        ("clear", "reset the collected metrics"),
    ):
        tree.leaf(metrics, verb, text, "metrics.configure")
    get = tree.leaf(metrics, "get", "show metrics, filtered, or their names", "metrics.get")
    get.add_argument("-l", "--list", action="store_true", help="list the metric names")
    get.add_argument("-r", "--refresh", type=rb.u32, metavar="SECONDS", help="repeat every N s")
    get.add_argument("-n", "--names", type=rb.comma_list, action="append", metavar="A,B")
    get.add_argument("-k", "--clusters", type=rb.comma_list, action="append", metavar="A,B")
    get.add_argument("-b", "--backends", type=rb.comma_list, action="append", metavar="A,B")
    get.add_argument(
        "--no-clusters", action="store_true", help="main process and worker metrics only"
    )
    get.add_argument("-w", "--workers", action="store_true", help="each worker separately")


def _internal_words(tree: _Tree, commands: Any) -> None:
    start = tree.leaf(commands, "start", "run the supervisor and its workers", "start")
    start.add_argument("--daemonize", action="store_true", help="detach and write pid_file_path")

    worker = tree.leaf(
        commands, "worker", "run a worker (internal: started by the supervisor)", "worker"
    )
    worker.add_argument("--id", type=int, required=True, help="worker id")
    worker.add_argument("--fd", type=int, required=True, help="channel to the supervisor")
    worker.add_argument("--scm", type=int, required=True, help="socket carrying listeners")
    worker.add_argument(
        "--configuration-state-fd", type=int, required=True, help="initial state file"
    )
    worker.add_argument("--command-buffer-size", type=rb.u64, default=1_000_000)
    worker.add_argument("--max-command-buffer-size", type=rb.u64)
    worker.add_argument(
        "--access-logs-format",
        choices=ACCESS_LOG_FORMATS,
        help="sozu-py extension: overrides ServerConfig's format (json has no value there)",
    )

    main = tree.leaf(commands, "main", "run a new main process (internal: main upgrade)", "main")
    main.add_argument("--fd", type=int, required=True, help="channel to the old main process")
    main.add_argument("--upgrade-fd", type=int, required=True, help="upgrade record file")
    main.add_argument("--command-buffer-size", type=rb.u64, default=1_000_000)
    main.add_argument("--max-command-buffer-size", type=rb.u64)

    top = tree.leaf(commands, "top", "live operator view (needs the tui extra)", "top")
    top.add_argument("--refresh-ms", type=rb.u64, default=1000)
    top.add_argument("--no-mouse", action="store_true")
    top.add_argument("--skin")
    top.add_argument("--detail", choices=("process", "frontend", "cluster", "backend"))
    top.add_argument("--lease-ttl-seconds", type=rb.u32, default=60)
    top.add_argument("--snapshot", type=rb.u32)
    top.add_argument("--tick-once", action="store_true")
    top.add_argument("--glyphs", choices=("braille", "block", "tty"))


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="sozu",
        description="sozu-py: a hot-reconfigurable reverse proxy (Sōzu-compatible)",
        parents=[global_flags(suppress_defaults=False)],
    )
    parser.add_argument("-V", "--version", action="version", version=f"sozu-py {__version__}")
    tree = _Tree()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _internal_words(tree, commands)

    shutdown = tree.leaf(commands, "shutdown", "stop the proxy", "shutdown")
    shutdown.add_argument(
        "--hard", action="store_true", help="close every connection now instead of draining"
    )
    upgrade = tree.leaf(
        commands,
        "upgrade",
        "upgrade the main process and every worker, or one worker; give a long timeout",
        "upgrade",
    )
    upgrade.add_argument("--worker", type=rb.u32, metavar="ID", help="upgrade only this worker")
    tree.leaf(commands, "status", "show the workers and their state", "status")
    _metrics_words(tree, tree.group(commands, "metrics", "metrics", "metrics_command"))
    logging = tree.leaf(commands, "logging", "change the log level", "logging")
    logging.add_argument("filter", metavar="FILTER", help="e.g. info, debug, or info,sozu=debug")

    state = tree.group(commands, "state", "state management", "state_command")
    for verb, text in (("save", "save the state to this file"), ("load", "load this state file")):
        leaf = tree.leaf(state, verb, text, f"state.{verb}")
        leaf.add_argument("-f", "--file", required=True, metavar="FILE")
    tree.leaf(state, "stats", "count the requests received since start-up", "state.stats")

    reload = tree.leaf(
        commands, "reload", "reload clusters, frontends and backends from a config file", "reload"
    )
    reload.add_argument(
        "-f", "--file", metavar="FILE", help="another configuration file than the running one"
    )

    _cluster_words(tree, tree.group(commands, "cluster", "cluster management", "cluster_command"))

    backends = tree.group(commands, "backend", "backend management", "backend_command")
    for verb in ("add", "remove"):
        leaf = tree.leaf(backends, verb, f"{verb} a backend", f"backend.{verb}")
        leaf.add_argument("-i", "--id", required=True, help="cluster id")
        leaf.add_argument("--backend-id", required=True, help="backend id")
        _address(leaf, "backend address")
        if verb == "add":
            leaf.add_argument("-s", "--sticky-id", help="sticky session cookie value")
            leaf.add_argument(
                "-b", "--backup", type=rb.boolean, metavar="BOOL", help="true: a backup backend"
            )
            leaf.add_argument(
                "--weight",
                type=int,
                default=100,
                help="share of the traffic (default 100, as in the config file)",
            )

    _frontend_words(
        tree, tree.group(commands, "frontend", "frontend management", "frontend_command")
    )
    _listener_words(
        tree, tree.group(commands, "listener", "listener management", "listener_command")
    )
    _certificate_words(
        tree, tree.group(commands, "certificate", "certificate management", "certificate_command")
    )

    config = tree.group(commands, "config", "configuration file tools", "config_command")
    tree.leaf(config, "check", "check the configuration file and exit", "config.check")

    tree.leaf(commands, "events", "print events (changes, backend health) as they happen", "events")

    limits = tree.group(
        commands,
        "connection-limit",
        "connections per (cluster, source IP) limit",
        "connection_limit_command",
    )
    set_limit = tree.leaf(
        limits, "set", "set the global limit (0 = unlimited)", "connection-limit.set"
    )
    set_limit.add_argument("limit", type=rb.u64, metavar="N")
    tree.leaf(
        limits, "remove", "remove the global limit (same as set 0)", "connection-limit.remove"
    )
    tree.leaf(limits, "show", "show the global limit", "connection-limit.show")

    demo = tree.leaf(commands, "demo", "run sozu on its embedded demo configuration", "demo")
    demo.add_argument(
        "--once",
        action="store_true",
        help="start, send one request through the proxy, print the answer and stop",
    )
    return parser
