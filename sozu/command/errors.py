"""The one exception root of sozu-py and the process exit codes.

Errors become answers at three boundaries only (DESIGN.md §7): an HTTP answer, a Response FAILURE,
or a process exit with one of the codes below. Everything raised inside sozu derives from
`SozuError`, so those boundaries catch one type and never print a traceback to an operator.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (doc/cli.md)."""

    OK = 0
    FAILURE = 1  # a refused request, an unreachable proxy, a timeout
    USAGE = 2  # bad command-line words (argparse's own code)


class SozuError(Exception):
    """Root of every error sozu-py raises on purpose."""


class ConfigError(SozuError):
    """A configuration file that cannot be used; the message names the file and the place."""


class AddressError(SozuError, ValueError):
    """A socket address that cannot be parsed or encoded."""
