"""Checked reading of parsed TOML tables, each value tagged with its key path for error messages.

`sozu.command.config` knows Sōzu's configuration format; this module only knows how to pull typed
Python values out of the nested dicts and lists that `tomllib` produces, and how to say what went
wrong in one consistent shape: `FILE: KEY.PATH: invalid value "htp", expected one of http, https`.
It reads no file, knows no option name and never lets a raw Python exception escape: anything
unexpected in the document becomes a `ConfigError`.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Collection, Sequence
from typing import TypeVar

from sozu.command import addresses
from sozu.command.errors import AddressError, ConfigError

U8_MAX = 0xFF
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHOW_LIMIT = 60
_T = TypeVar("_T")


class Context:
    """What one load shares: the file's name for messages and the warnings gathered so far."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> ConfigError:
        """A ConfigError for `path` (a key path, or "" for the whole file)."""
        if path:
            return ConfigError(f"{self.label}: {path}: {message}")
        return ConfigError(f"{self.label}: {message}")

    def warn(self, path: str, message: str) -> None:
        """Record a warning; the caller decides whether and where to print it."""
        self.warnings.append(
            f"{self.label}: {path}: {message}" if path else f"{self.label}: {message}"
        )


def join(path: str, key: str) -> str:
    """The key path of `key` inside the table at `path`, quoting keys that are not bare."""
    segment = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{segment}" if path else segment


def item(path: str, position: int) -> str:
    """The key path of the element at `position` of the array at `path`."""
    return f"{path}[{position}]"


def show(value: object) -> str:
    """A short TOML-like rendering of a value, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 4] + '..."'
    if isinstance(value, int | float):
        text = str(value)
        return text if len(text) <= _SHOW_LIMIT else text[:_SHOW_LIMIT] + "..."
    if isinstance(value, dict):
        return "(a table)"
    if isinstance(value, list):
        return "(an array)"
    if isinstance(value, datetime.date | datetime.time):
        return f"(a date/time {value.isoformat()})"
    return f"({type(value).__name__})"


def check_choice(
    ctx: Context, path: str, value: object, accepted: Sequence[str], *, ignore_case: bool = False
) -> str:
    """Return the accepted spelling `value` stands for, or raise naming every accepted value."""
    if isinstance(value, str):
        for spelling in accepted:
            if value == spelling or (ignore_case and value.lower() == spelling.lower()):
                return spelling
    expected = "one of " + ", ".join(accepted)
    if (
        isinstance(value, str)
        and not ignore_case
        and any(value.lower() == spelling.lower() for spelling in accepted)
    ):
        expected += " (mind the case)"
    raise ctx.error(path, f"invalid value {show(value)}, expected {expected}")


def check_string(ctx: Context, path: str, value: object) -> str:
    """`value` if it is a string, else a ConfigError."""
    if not isinstance(value, str):
        raise ctx.error(path, f"invalid value {show(value)}, expected a string")
    return value


def check_integer(ctx: Context, path: str, value: object, maximum: int, minimum: int = 0) -> int:
    """`value` if it is an integer within bounds, else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ctx.error(
            path, f"invalid value {show(value)}, expected an integer from {minimum} to {maximum}"
        )
    return value


def check_address(ctx: Context, path: str, value: object) -> str:
    """The canonical text of a socket address (`IP:PORT`, IPv6 in brackets)."""
    expected = 'an IP:PORT socket address such as "127.0.0.1:8080" or "[::1]:8080"'
    if not isinstance(value, str):
        raise ctx.error(path, f"invalid value {show(value)}, expected {expected}")
    try:
        return addresses.normalize(value)
    except AddressError:
        raise ctx.error(path, f"invalid value {show(value)}, expected {expected}") from None


class Table:
    """One TOML table being read; every getter knows the key path of what it returns.

    The set of allowed keys is given up front, so a misspelt key is reported as such (with a
    suggestion) before any "missing key" error it would otherwise cause. With `strict=False` an
    unknown key is only a warning: that is how the top level of the file is read.
    """

    def __init__(
        self,
        ctx: Context,
        path: str,
        data: dict[str, object],
        allowed: Collection[str],
        *,
        strict: bool = True,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.data = data
        for key in data:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.75)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            if strict:
                raise ctx.error(join(path, key), f"unknown key{suffix}")
            ctx.warn(join(path, key), f"unknown option, ignored{suffix}")

    def key_path(self, key: str) -> str:
        """Key path of `key` in this table."""
        return join(self.path, key)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def present(self, keys: Collection[str]) -> list[str]:
        """Those of `keys` that the table sets, in file order."""
        return [key for key in self.data if key in keys]

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError about `key` of this table."""
        return self.ctx.error(self.key_path(key), message)

    def warn(self, key: str, message: str) -> None:
        """A warning about `key` of this table."""
        self.ctx.warn(self.key_path(key), message)

    def required(self, key: str, value: _T | None) -> _T:
        """`value`, or the "missing required key" error when the table lacks `key`."""
        if value is None:
            raise self.error(key, "missing required key")
        return value

    def string(self, key: str) -> str | None:
        """A string value, or None when absent."""
        if key not in self.data:
            return None
        return check_string(self.ctx, self.key_path(key), self.data[key])

    def boolean(self, key: str) -> bool | None:
        """A boolean value, or None when absent."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.error(key, f"invalid value {show(value)}, expected true or false")
        return value

    def integer(self, key: str, maximum: int, minimum: int = 0) -> int | None:
        """An integer within [minimum, maximum], or None when absent."""
        if key not in self.data:
            return None
        return check_integer(self.ctx, self.key_path(key), self.data[key], maximum, minimum)

    def choice(self, key: str, accepted: Sequence[str], *, ignore_case: bool = False) -> str | None:
        """One of `accepted` (returned in its listed spelling), or None when absent."""
        if key not in self.data:
            return None
        return check_choice(
            self.ctx, self.key_path(key), self.data[key], accepted, ignore_case=ignore_case
        )

    def address(self, key: str) -> str | None:
        """A socket address in canonical text form, or None when absent."""
        if key not in self.data:
            return None
        return check_address(self.ctx, self.key_path(key), self.data[key])

    def array(self, key: str, what: str) -> list[object] | None:
        """A raw array (elements unchecked), or None when absent; `what` names the elements."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(key, f"invalid value {show(value)}, expected an array of {what}")
        return value

    def strings(self, key: str) -> list[str] | None:
        """An array of strings, or None when absent."""
        values = self.array(key, "strings")
        if values is None:
            return None
        path = self.key_path(key)
        return [check_string(self.ctx, item(path, i), v) for i, v in enumerate(values)]

    def choices(self, key: str, accepted: Sequence[str]) -> list[str] | None:
        """An array whose elements are each one of `accepted`, or None when absent."""
        values = self.array(key, "strings")
        if values is None:
            return None
        path = self.key_path(key)
        return [check_choice(self.ctx, item(path, i), v, accepted) for i, v in enumerate(values)]

    def integers(self, key: str, maximum: int) -> list[int] | None:
        """An array of integers within [0, maximum], or None when absent."""
        values = self.array(key, "integers")
        if values is None:
            return None
        path = self.key_path(key)
        return [check_integer(self.ctx, item(path, i), v, maximum) for i, v in enumerate(values)]

    def string_map(self, key: str) -> dict[str, str] | None:
        """A table whose values are all strings, or None when absent."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.error(key, f"invalid value {show(value)}, expected a table of strings")
        path = self.key_path(key)
        return {k: check_string(self.ctx, join(path, k), v) for k, v in value.items()}

    def raw_table(self, key: str) -> dict[str, object] | None:
        """A sub-table as a plain dict, or None when absent."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.error(key, f"invalid value {show(value)}, expected a table")
        return value

    def table(self, key: str, allowed: Collection[str]) -> Table | None:
        """A sub-table read with its own allowed keys, or None when absent."""
        value = self.raw_table(key)
        if value is None:
            return None
        return Table(self.ctx, self.key_path(key), value, allowed)

    def tables(self, key: str, allowed: Collection[str]) -> list[Table] | None:
        """An array of tables (`[[key]]` or inline), or None when absent."""
        values = self.array(key, "tables")
        if values is None:
            return None
        path = self.key_path(key)
        result = []
        for position, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.ctx.error(
                    item(path, position), f"invalid value {show(value)}, expected a table"
                )
            result.append(Table(self.ctx, item(path, position), value, allowed))
        return result
