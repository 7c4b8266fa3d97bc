"""The `sozu` command line: Sōzu's words and global flags, dispatched to one handler each.

Global flags (`-c/--config`, `-t/--timeout`, `-j/--json`) are accepted before or after the
subcommand, as with Sōzu's clap parser. Every failure an operator can cause ends as one line on
stderr and exit code 1 (3 for an unusable configuration), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sozu import __version__
from sozu.cli import demo
from sozu.command.config import Config, load_config
from sozu.command.errors import ExitCode, SozuError

Handler = Callable[[argparse.Namespace], int]


def _global_flags(suppress_defaults: bool) -> argparse.ArgumentParser:
    """Flags valid at any position; subparsers suppress defaults so they don't override."""
    default = argparse.SUPPRESS if suppress_defaults else None
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help="configuration file (default: $SOZU_CONFIG)",
    )
    flags.add_argument(
        "-t",
        "--timeout",
        metavar="MS",
        type=int,
        default=default,
        help="timeout for commands in milliseconds; 0 disables it",
    )
    flags.add_argument(
        "-j",
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress_defaults else False,
        help="print answers as JSON",
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="sozu",
        description="sozu-py: a hot-reconfigurable reverse proxy (Sōzu-compatible)",
        parents=[_global_flags(suppress_defaults=False)],
    )
    parser.add_argument("-V", "--version", action="version", version=f"sozu-py {__version__}")
    flags = _global_flags(suppress_defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = commands.add_parser("config", parents=[flags], help="configuration file tools")
    config_commands = config.add_subparsers(
        dest="config_command", metavar="SUBCOMMAND", required=True
    )
    check = config_commands.add_parser(
        "check", parents=[flags], help="check the configuration file and exit"
    )
    check.set_defaults(handler=config_check)

    demo_parser = commands.add_parser(
        "demo", parents=[flags], help="run sozu on its embedded demo configuration"
    )
    demo_parser.set_defaults(handler=demo.run)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the words, run the handler, turn every SozuError into one line on stderr."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SozuError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    except KeyboardInterrupt:
        return int(ExitCode.FAILURE)
