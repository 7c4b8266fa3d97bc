"""Sōzu's `config.toml`: the public door to loading a configuration.

`load_config(path)` reads, parses and validates a file into a frozen `Config` (or raises one
`ConfigError` whose message names the file, and the line or key path at fault); `Config.warnings`
lists what was accepted but looks like a mistake, such as an unknown top-level key.
`Config.to_requests()` gives the `CONFIG-n` WorkerRequests that build the initial state, in
Sōzu's order, and `Config.server_config()` the ServerConfig a worker receives first.

Key names, defaults and value spellings are Sōzu 2.x's. `command_socket` and `saved_state` are
relative to the config file's folder; every other path (certificates, keys, answers, pid file,
log files) is used as written, so a relative one is relative to the working directory, as in Sōzu.
This is the only module that imports tomllib; the format's rules live in `config_build`, the
resulting types in `config_model`.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path

from sozu.command.config_build import MAX_FILE_SIZE, build_config, describe_error
from sozu.command.config_model import (
    BackendConfig,
    ClusterConfig,
    ClusterProtocol,
    Config,
    HeaderEdit,
    HealthCheckConfig,
    HstsConfig,
    HttpFrontendConfig,
    ListenerConfig,
    ListenerProtocol,
    MetricsConfig,
    TcpFrontendConfig,
    UdpClusterConfig,
    UdpHealthConfig,
)
from sozu.command.config_reader import Context
from sozu.command.errors import ConfigError

__all__ = [
    "BackendConfig",
    "ClusterConfig",
    "ClusterProtocol",
    "Config",
    "ConfigError",
    "HeaderEdit",
    "HealthCheckConfig",
    "HstsConfig",
    "HttpFrontendConfig",
    "ListenerConfig",
    "ListenerProtocol",
    "MetricsConfig",
    "TcpFrontendConfig",
    "UdpClusterConfig",
    "UdpHealthConfig",
    "demo_config_path",
    "load_config",
    "parse_config",
]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a config file; every failure is a ConfigError naming the file."""
    label = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{label}: cannot read the configuration file: {describe_error(error)}"
        ) from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(f"{label}: the configuration file is larger than {MAX_FILE_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{label}: not UTF-8 text (bad byte at offset {error.start})") from None
    return parse_config(text, path)


def parse_config(text: str, config_path: str | os.PathLike[str]) -> Config:
    """Parse and validate config text as if read from `config_path` (used to resolve paths)."""
    label = os.fspath(config_path)
    ctx = Context(label)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{label}: {_syntax_error(text, error)}") from None
    except RecursionError:
        raise ConfigError(f"{label}: invalid TOML: values are nested too deeply") from None
    return build_config(document, ctx, Path(os.path.abspath(config_path)))


def demo_config_path() -> Path:
    """Path of the packaged demo configuration (`sozu/demo/demo.toml`)."""
    resource = resources.files("sozu") / "demo" / "demo.toml"
    return resource if isinstance(resource, Path) else Path(str(resource))


_SYNTAX_POSITION = re.compile(r"^(?P<reason>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _syntax_error(text: str, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    match = _SYNTAX_POSITION.match(message)
    if match:
        return (
            f"line {match['line']}, column {match['col']}: invalid TOML: "
            f"{match['reason'][:1].lower()}{match['reason'][1:]}"
        )
    if message.endswith("(at end of document)"):
        line = text.count("\n") + 1
        reason = message.removesuffix("(at end of document)").strip()
        return f"line {line} (end of file): invalid TOML: {reason[:1].lower()}{reason[1:]}"
    return f"invalid TOML: {message}"
