"""`access_logs_format = "json"`: a sozu-py extension carried beside ServerConfig, not in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sozu.command.config import load_config
from sozu.command.proto import ProtobufAccessLogFormat, ServerConfig
from sozu.worker.access_log import AccessLog


@pytest.mark.parametrize(
    ("value", "wire", "arguments", "used"),
    [
        ("ascii", ProtobufAccessLogFormat.Ascii, (), "ascii"),
        ("protobuf", ProtobufAccessLogFormat.Protobuf, (), "protobuf"),
        ("json", ProtobufAccessLogFormat.Ascii, ("--access-logs-format", "json"), "json"),
    ],
)
def test_each_format_reaches_the_worker(
    tmp_path: Path,
    value: str,
    wire: ProtobufAccessLogFormat.ValueType,
    arguments: tuple[str, ...],
    used: str,
) -> None:
    path = tmp_path / "config.toml"
    target = tmp_path / "access.log"
    path.write_text(f'access_logs_target = "{target}"\naccess_logs_format = "{value}"\n')
    config = load_config(path)
    server_config = config.server_config()
    assert server_config.access_log_format == wire  # Sōzu's schema: ascii or protobuf only
    assert config.worker_arguments() == arguments
    override = arguments[1] if arguments else None
    access = AccessLog.from_server_config(server_config, fmt=override)
    assert access is not None and access.format == used
    access.close()


def test_no_target_means_no_access_log_whatever_the_format() -> None:
    assert AccessLog.from_server_config(ServerConfig(), fmt="json") is None
