"""The `sozu` command line: Sōzu's words and global flags, dispatched to one handler each.

The word tree lives in `sozu.cli.parser`; a leaf that talks to a running proxy has its Request
built by `sozu.cli.request_builder`, sent by `sozu.cli.client` and printed by `sozu.cli.render`.
The process entry points (`start`, `worker`) are imported only when used, so the command line
works whatever state those packages are in. Every failure an operator can cause ends as one line
on stderr and exit code 1 (2 for words that do not parse), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sozu.cli import demo, render
from sozu.cli import request_builder as rb
from sozu.cli.client import Client, ClientError
from sozu.cli.parser import build_parser
from sozu.command.config import Config, load_config
from sozu.command.errors import ExitCode, SozuError
from sozu.command.proto import Request

Handler = Callable[[argparse.Namespace], int]

# Each step of `upgrade` may take a while (a process starts, another drains): unless -t says
# otherwise it waits this long for each answer (Sōzu's CLI gives its worker upgrades 60 s).
UPGRADE_TIMEOUT_MS = 60_000


def config_path(args: argparse.Namespace) -> Path:
    """The configuration file: `-c`, else $SOZU_CONFIG, else a clear error."""
    chosen = args.config or os.environ.get("SOZU_CONFIG")
    if not chosen:
        raise SozuError("no configuration file: use -c FILE or set SOZU_CONFIG")
    return Path(chosen)


def load_checked(args: argparse.Namespace) -> Config:
    """Load the configuration, printing its warnings on stderr."""
    config = load_config(config_path(args))
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def config_check(args: argparse.Namespace) -> int:
    """`sozu config check`: validate the file (syntax, values, certificates) and exit."""
    config = load_checked(args)
    if args.json:
        print(json.dumps({"valid": True, "warnings": config.warnings}))
    else:
        print("Configuration file is valid")
    return ExitCode.OK


def _client(args: argparse.Namespace, config: Config) -> Client:
    return Client.from_config(config, args.timeout, quiet=args.json)


def send_request(args: argparse.Namespace) -> int:
    """Every command that is one Request and one final answer."""
    config = load_config(config_path(args))
    request = rb.build_request(args, config)
    with _client(args, config) as client:
        answer = client.call(request)
    print(render.response(answer, args.json))
    return ExitCode.OK


def events(args: argparse.Namespace) -> int:
    """`sozu events`: print each event until interrupted (Ctrl-C ends it normally, exit 0).

    The supervisor closing the connection (it stopped) is an error: exit 1.
    """
    config = load_config(config_path(args))
    try:
        with _client(args, config) as client:
            for answer in client.stream(rb.build_request(args, config)):
                line = render.event_line(answer, args.json)
                if line is not None:
                    print(line, flush=True)
                elif answer.message and not args.json:
                    print(answer.message, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK  # a final OK: the supervisor ended the subscription itself


def upgrade(args: argparse.Namespace) -> int:
    """`sozu upgrade`: one worker with --worker; else the main process, then each worker in turn."""
    if args.timeout is None:
        args.timeout = UPGRADE_TIMEOUT_MS
    if args.worker is not None:
        return send_request(args)
    config = load_config(config_path(args))
    with _client(args, config) as client:
        answer = client.call(rb.upgrade_main())
        if not args.json:
            print(answer.message or "main process upgraded")
        # The new main process serves the same socket; talk to it on a fresh connection.
        client.connect()
        ids = rb.worker_ids(client.call(rb.list_workers()))
        failures = []
        results = []
        for worker_id in ids:
            try:
                client.call(Request(upgrade_worker=worker_id))
            except ClientError as error:
                failures.append(f"worker {worker_id}: {error}")
                results.append({"worker": worker_id, "upgraded": False, "error": str(error)})
                client.connect()
                continue
            results.append({"worker": worker_id, "upgraded": True, "error": None})
            if not args.json:
                print(f"worker {worker_id} upgraded")
    if args.json:
        print(render.dumps({"workers": results}))
    if failures:
        raise ClientError("upgrade incomplete: " + "; ".join(failures))
    return ExitCode.OK


def cluster_h2(args: argparse.Namespace) -> int:
    """`sozu cluster h2 enable|disable -i ID`: re-send the cluster with http2 set, as Sōzu does."""
    config = load_config(config_path(args))
    with _client(args, config) as client:
        current = client.call(rb.build_request(args, config))
        answer = client.call(rb.cluster_with_http2(current, args.id, args.enable))
    print(render.response(answer, args.json))
    return ExitCode.OK


def metrics_get(args: argparse.Namespace) -> int:
    """`sozu metrics get`: once, or every --refresh seconds until interrupted."""
    if args.refresh is None:
        return send_request(args)
    config = load_config(config_path(args))
    request = rb.build_request(args, config)
    clear = sys.stdout.isatty() and not args.json
    try:
        with _client(args, config) as client:
            while True:
                answer = client.call(request)
                if clear:
                    print("\x1b[H\x1b[2J", end="")
                print(render.response(answer, args.json), flush=True)
                time.sleep(args.refresh)
    except KeyboardInterrupt:
        return ExitCode.OK


def start(args: argparse.Namespace) -> int:
    """`sozu start [--daemonize]`: run the supervisor (foreground by default)."""
    try:
        from sozu.supervisor.main import start as start_supervisor
    except ImportError as error:
        raise SozuError(f"the supervisor cannot be loaded: {error}") from None
    return int(start_supervisor(config_path(args), args.daemonize))


def worker(args: argparse.Namespace) -> int:
    """`sozu worker ...`: a worker process, started by the supervisor with its descriptors."""
    try:
        from sozu.worker.main import run as run_worker
    except ImportError as error:
        raise SozuError(f"the worker cannot be loaded: {error}") from None
    max_size = args.max_command_buffer_size
    if max_size is None:
        max_size = args.command_buffer_size * 2
    return int(
        run_worker(
            args.id,
            args.fd,
            args.scm,
            args.configuration_state_fd,
            args.command_buffer_size,
            max_size,
            access_logs_format=args.access_logs_format,
        )
    )


def main_process(args: argparse.Namespace) -> int:
    """`sozu main --fd F --upgrade-fd U ...`: the new main process of a main upgrade."""
    try:
        from sozu.supervisor.main import run_upgraded
    except ImportError as error:
        raise SozuError(f"the supervisor cannot be loaded: {error}") from None
    return int(run_upgraded(args.fd, args.upgrade_fd))


def not_supported(what: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        raise SozuError(f"{what} is not supported yet")

    return handler


HANDLERS: dict[str, Handler] = {
    "config.check": config_check,
    "demo": demo.run,
    "start": start,
    "worker": worker,
    "main": main_process,
    "top": not_supported("`sozu top` (it needs the tui extra)"),
    "events": events,
    "upgrade": upgrade,
    "cluster.h2": cluster_h2,
    "metrics.get": metrics_get,
}


def handler_for(args: argparse.Namespace) -> Handler:
    return HANDLERS.get(args.action, send_request)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the words, run the handler, turn every SozuError into one line on stderr."""
    args = build_parser().parse_args(argv)
    handler = handler_for(args)
    try:
        return int(handler(args))
    except SozuError as error:  # RequestFailed and every ClientError included
        print(f"error: {error}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    except KeyboardInterrupt:
        return int(ExitCode.FAILURE)
    except BrokenPipeError:
        # stdout closed early (`sozu events | head`): nothing left to say to anyone.
        _silence_stdout()
        return int(ExitCode.FAILURE)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


__all__ = ["build_parser", "config_path", "load_checked", "main"]
