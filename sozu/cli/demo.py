"""`sozu demo`: sozu-py on its embedded demo configuration, for a newcomer's first minute.

Until the supervisor and workers exist, the demo loads and validates the packaged demo config,
shows what it sets up (the same Requests the supervisor will build the initial state from) and
says plainly what is not built yet. Each later step makes it do more.
"""

from __future__ import annotations

import argparse

from sozu.command.config import Config, load_config
from sozu.command.config import demo_config_path as packaged_demo_config

DEMO_CURL = "curl -H 'Host: localhost' http://127.0.0.1:8080/"
NOT_BUILT = (
    "not built yet: the supervisor and its workers (`sozu start`) and the proxying itself;\n"
    "once they are, `sozu demo` starts them with a demo backend on 127.0.0.1:8081 and this\n"
    f"line shows a proxied answer:\n    {DEMO_CURL}"
)


def describe(config: Config) -> list[str]:
    """Human lines for what the configuration sets up."""
    lines = [f"configuration: {config.config_path} (valid)"]
    lines.append(f"command socket: {config.command_socket}")
    lines.append(f"workers: {config.worker_count}")
    for listener in config.listeners:
        lines.append(f"listener: {listener.protocol.value} {listener.address}")
    for cluster in config.clusters:
        lines.append(f"cluster: {cluster.cluster_id} ({cluster.load_balancing})")
        for frontend in cluster.frontends:
            host = getattr(frontend, "hostname", None)
            lines.append(f"  frontend: {frontend.address}" + (f" host {host}" if host else ""))
        for backend in cluster.backends:
            lines.append(f"  backend: {backend.backend_id} -> {backend.address}")
    requests = config.to_requests()
    kinds = ", ".join(sorted({r.content.WhichOneof("request_type") or "?" for r in requests}))
    lines.append(f"initial state: {len(requests)} requests ({kinds})")
    return lines


def run(args: argparse.Namespace) -> int:
    """Validate and show the demo configuration (or the one given with -c)."""
    config = load_config(args.config or packaged_demo_config())
    for warning in config.warnings:
        print(f"warning: {warning}")
    print("\n".join(describe(config)))
    print()
    print(NOT_BUILT)
    return 0
