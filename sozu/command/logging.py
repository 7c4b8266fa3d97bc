"""Log set-up for every sozu process (supervisor, workers, CLI), on top of structlog.

Each process calls `setup_logging(level, target, colored, process)` once, early; modules then
log through `get_logger(name)` with snake_case event names and key=value context
(`log.info("worker_spawned", worker_id=1, pid=4242)`). Lines are plain text, in the spirit of
Sōzu's logs:

    2024-05-01T12:00:00.123456Z INFO  [main] worker_spawned worker_id=1 pid=4242

Targets are Sōzu's `log_target` values that make sense here: `stdout`, `stderr`, a
`file:///path` URL, or a bare path (appended, created if missing). Level names are Sōzu's
(`error`, `warn`, `info`, `debug`, `trace`, `off`); `trace` is logged as `debug`. A Sōzu/
RUST_LOG-style filter such as `info,sozu=debug` is reduced to its global level (the first
directive without a module name, else the first directive).

State: structlog's configuration is process-global by nature, and this module keeps nothing
else. `setup_logging` and `set_level` replace that configuration; the open log file lives in
the logger factory structlog holds, and `reopen()` reopens it (SIGHUP after logrotate).
Loggers are not cached (so `structlog.testing.capture_logs` and a later `setup_logging` see
every logger): a call below the level costs about a microsecond and a half, the lazy binding.
Code on a hot path binds once after set-up, `log = get_logger(__name__).bind()`, and then pays
one no-op method call; `set_level` changes the level of the bound-logger class in place, so it
reaches those loggers too.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from sozu.command.errors import SozuError

ERROR = 40
WARN = 30
INFO = 20
DEBUG = 10
OFF = 50  # structlog knows no level above critical; nothing here logs at critical

LEVELS: Mapping[str, int] = {
    "off": OFF,
    "error": ERROR,
    "warn": WARN,
    "warning": WARN,
    "info": INFO,
    "debug": DEBUG,
    "trace": DEBUG,
}
"""Sōzu's level names (case-insensitive) -> numeric level; `trace` is `debug` here."""

_NUMERIC = {"0": "off", "1": "error", "2": "warn", "3": "info", "4": "debug", "5": "trace"}

_LEVEL_LABELS = {
    "critical": "ERROR",
    "exception": "ERROR",
    "error": "ERROR",
    "warning": "WARN ",
    "warn": "WARN ",
    "info": "INFO ",
    "debug": "DEBUG",
}
_LEVEL_COLORS = {
    "ERROR": "\x1b[;31;1m",
    "WARN ": "\x1b[;33;1m",
    "INFO ": "\x1b[;32;1m",
    "DEBUG": "\x1b[;36m",
}
_RESET = "\x1b[m"
_DIM = "\x1b[2m"


class LoggingError(SozuError, ValueError):
    """A log level filter or a log target that cannot be used."""


def parse_level(spec: str) -> int:
    """The numeric level a Sōzu logging filter sets globally, or raise LoggingError.

    `info` -> INFO; `info,sozu=debug` -> INFO; `sozu=debug` -> DEBUG; `3` -> INFO.
    Module-specific directives are accepted but apply to the whole process.
    """
    modules = spec.split("/")
    if len(modules) > 2:
        raise LoggingError(f"invalid logging filter {spec!r}: too many '/'")
    global_level: int | None = None
    first_level: int | None = None
    for directive in modules[0].split(","):
        directive = directive.strip()
        if not directive:
            continue
        parts = directive.split("=")
        if len(parts) > 2:
            raise LoggingError(f"invalid logging filter {spec!r}: too many '=' in {directive!r}")
        if len(parts) == 1:
            level = _level_of(parts[0], spec)
            if global_level is None:
                global_level = level
        else:
            name, value = parts[0].strip(), parts[1].strip()
            level = DEBUG if value == "" else _level_of(value, spec)
            if not name:
                raise LoggingError(f"invalid logging filter {spec!r}: empty module name")
        if first_level is None:
            first_level = level
    if global_level is not None:
        return global_level
    if first_level is not None:
        return first_level
    raise LoggingError(f"invalid logging filter {spec!r}: no level")


def _level_of(word: str, spec: str) -> int:
    key = _NUMERIC.get(word.strip(), word.strip().lower())
    try:
        return LEVELS[key]
    except KeyError:
        raise LoggingError(f"invalid log level {word.strip()!r} in filter {spec!r}") from None


class _LineWriterFactory:
    """structlog logger factory writing whole lines to one target; knows how to reopen it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._owned: IO[str] | None = None
        self.stream: TextIO = self._open()

    def _open(self) -> TextIO:
        if self.target == "stdout":
            return sys.stdout
        if self.target == "stderr":
            return sys.stderr
        path = self.target.removeprefix("file://")
        if not path or "://" in path:
            raise LoggingError(f"unsupported log target {self.target!r}")
        try:
            handle = open(path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        except OSError as error:
            raise LoggingError(f"cannot open log target {self.target!r}: {error}") from None
        self._owned = handle
        return handle

    def __call__(self, *args: Any) -> _LineWriter:
        return _LineWriter(self)

    def write(self, line: str) -> None:
        with self._lock:
            stream = self.stream
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken log target must not take the process down

    def reopen(self) -> None:
        with self._lock:
            if self._owned is None:
                return
            old = self._owned
            try:
                self.stream = self._open()
            except LoggingError:
                return
            with contextlib.suppress(OSError):
                old.close()

    def close(self) -> None:
        with self._lock:
            if self._owned is not None:
                with contextlib.suppress(OSError):
                    self._owned.close()
                self._owned = None
                self.stream = io.StringIO()


class _LineWriter:
    """The wrapped logger structlog calls with the rendered line."""

    __slots__ = ("_factory",)

    def __init__(self, factory: _LineWriterFactory) -> None:
        self._factory = factory

    def msg(self, message: str) -> None:
        self._factory.write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = msg


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return event_dict


class _Renderer:
    """`timestamp LEVEL [process] event key=value ...`, plus a traceback when there is one."""

    def __init__(self, process: str, colored: bool) -> None:
        self.process = process
        self.colored = colored

    def __call__(self, _: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        timestamp = event_dict.pop("timestamp", "")
        event = event_dict.pop("event", "")
        exc = event_dict.pop("exception", None)
        event_dict.pop("level", None)
        label = _LEVEL_LABELS.get(method_name, method_name.upper()[:5].ljust(5))
        pairs = " ".join(f"{key}={_value(value)}" for key, value in event_dict.items())
        if self.colored:
            color = _LEVEL_COLORS.get(label, "")
            head = (
                f"{_DIM}{timestamp}{_RESET} {color}{label}{_RESET} {_DIM}[{self.process}]{_RESET}"
            )
        else:
            head = f"{timestamp} {label} [{self.process}]"
        line = f"{head} {event}" if not pairs else f"{head} {event} {pairs}"
        if exc:
            line = f"{line}\n{exc}"
        return line


def _value(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if text == "" or any(c in text for c in ' \t\n\r"='):
        return repr(text) if isinstance(value, str) else text.replace("\n", "\\n")
    return text


def _make_wrapper_class(level: int) -> type[FilteringBoundLogger]:
    """A bound-logger class of our own whose level `set_level` changes in place."""
    base = structlog.make_filtering_bound_logger(level)
    wrapper = type("SozuBoundLogger", (base,), {"_sozu_wrapper": True})
    return cast(type[FilteringBoundLogger], wrapper)


def _set_wrapper_level(wrapper: type[FilteringBoundLogger], level: int) -> None:
    source = structlog.make_filtering_bound_logger(level)
    for name, value in vars(source).items():
        if not name.startswith("__"):
            setattr(wrapper, name, value)


def setup_logging(level: str, target: str, colored: bool = False, process: str = "main") -> None:
    """Configure structlog for this process: level filter, target, colours, process tag.

    Raises LoggingError for an unknown level or an unusable target. Calling it again
    replaces the previous set-up (closing a log file it had opened).
    """
    numeric = parse_level(level)
    factory = _LineWriterFactory(target)
    previous = _current_factory()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _timestamp,
            structlog.processors.format_exc_info,
            _Renderer(process, colored),
        ],
        wrapper_class=_make_wrapper_class(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    if previous is not None and previous is not factory:
        previous.close()


def set_level(filter: str) -> None:
    """Change this process's level at runtime (the `logging` verb). Raises LoggingError.

    The change reaches every logger at once, including concrete ones made with
    `get_logger(name).bind()` after `setup_logging` (the fast form for hot paths).
    """
    numeric = parse_level(filter)
    wrapper = structlog.get_config().get("wrapper_class")
    if isinstance(wrapper, type) and getattr(wrapper, "_sozu_wrapper", False):
        _set_wrapper_level(cast(type[FilteringBoundLogger], wrapper), numeric)
    else:
        structlog.configure(wrapper_class=_make_wrapper_class(numeric))


def current_level() -> int:
    """The numeric level now in force (INFO when structlog was never configured by us)."""
    wrapper = structlog.get_config().get("wrapper_class")
    getter = getattr(wrapper, "get_effective_level", None)
    if getter is None:
        return INFO
    try:
        return int(getter(None))
    except Exception:
        return INFO


def reopen() -> None:
    """Reopen the log file after a rotation (no-op for stdout / stderr)."""
    factory = _current_factory()
    if factory is not None:
        factory.reopen()


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger for module `name` (the name is not printed; events carry their context)."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))


def bind_context(**values: Any) -> None:
    """Add key=values to every line this task / thread logs next (structlog contextvars)."""
    structlog.contextvars.bind_contextvars(**values)


def _current_factory() -> _LineWriterFactory | None:
    factory = structlog.get_config().get("logger_factory")
    return factory if isinstance(factory, _LineWriterFactory) else None


__all__ = [
    "DEBUG",
    "ERROR",
    "INFO",
    "LEVELS",
    "OFF",
    "WARN",
    "LoggingError",
    "bind_context",
    "current_level",
    "get_logger",
    "parse_level",
    "reopen",
    "set_level",
    "setup_logging",
]
