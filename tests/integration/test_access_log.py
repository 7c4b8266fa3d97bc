"""Access log records as written to their target: Sōzu's ascii line, JSON, Sōzu's binary
protobuf records, batching inside one event loop iteration, and the configuration switch.
(TCP session records from a real worker are checked in test_tcp.py.)"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from sozu.command.proto import ProtobufAccessLog, ProtobufAccessLogFormat, ServerConfig
from sozu.worker.access_log import AccessLog, duration_text

ASCII_HTTP = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d{19} \d+ INFO-ACCESS  WRK-01\t"
    r"\[01SESSION0000000000000000 01REQUEST00000000000000000 app app-0\] "
    r"127\.0\.0\.1:5555 10\.0\.0\.2:80 1250μs/80μs/15ms/-/- 120 3400 "
    r"\[user-agent=curl/8\.0_\{x\}\] None HTTP example\.com GET /a\?b=1 200$"
)


def record(access: AccessLog) -> None:
    access.http(
        "01REQUEST00000000000000000",
        "app",
        "app-0",
        "127.0.0.1:5555",
        "GET",
        "example.com",
        "/a?b=1",
        200,
        120,
        3400,
        1250,
        80,
        15_000,
        "curl/8.0 [x]",
        session_id="01SESSION0000000000000000",
        backend_address="10.0.0.2:80",
    )


def test_ascii_http_line(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    access = AccessLog(str(target), "ascii", tag="WRK-01")
    record(access)
    access.close()
    line = target.read_text().splitlines()[0]
    assert ASCII_HTTP.match(line), line


def test_json_line_has_every_field(tmp_path: Path) -> None:
    target = tmp_path / "access.json"
    access = AccessLog(f"file://{target}", "json", tag="WRK-01")
    record(access)
    access.tcp("01SESSION0000000000000000", "db", None, "127.0.0.1:6000", None, 5, 7, 20)
    access.close()
    http, tcp = (json.loads(line) for line in target.read_text().splitlines())
    assert http["method"] == "GET" and http["status"] == 200 and http["host"] == "example.com"
    assert http["request_time_us"] == 1250 and http["response_time_us"] == 15000
    assert http["user_agent"] == "curl/8.0 [x]"
    assert tcp["protocol"] == "TCP" and tcp["status"] is None and tcp["bytes_out"] == 7
    assert set(http) == set(tcp)


def test_protobuf_records_are_length_delimited_with_two_zero_bytes(tmp_path: Path) -> None:
    target = tmp_path / "access.bin"
    access = AccessLog(str(target), "protobuf")
    record(access)
    access.close()
    data = target.read_bytes()
    size, offset = 0, 0
    for shift in range(0, 35, 7):
        byte = data[offset]
        offset += 1
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    parsed = ProtobufAccessLog.FromString(data[offset : offset + size])
    assert data[offset + size :] == b"\0\0"
    assert parsed.endpoint.http.status == 200 and parsed.cluster_id == "app"
    assert parsed.bytes_out == 3400 and parsed.response_time == 15_000_000


def test_records_of_one_loop_iteration_are_written_together(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    access = AccessLog(str(target))

    async def burst() -> int:
        for _ in range(100):
            record(access)
        before = target.stat().st_size
        await asyncio.sleep(0)
        return before

    assert asyncio.run(burst()) == 0
    assert len(target.read_text().splitlines()) == 100
    access.close()


def test_duration_units() -> None:
    assert [duration_text(v) for v in (None, 0.5, 9, 10, 9999, 10_000, 12_000_000)] == [
        "-",
        "500ns",
        "9000ns",
        "10μs",
        "9999μs",
        "10ms",
        "12s",
    ]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [(ProtobufAccessLogFormat.Ascii, "ascii"), (ProtobufAccessLogFormat.Protobuf, "protobuf")],
)
def test_from_server_config(
    tmp_path: Path, fmt: ProtobufAccessLogFormat.ValueType, expected: str
) -> None:
    config = ServerConfig(access_log_format=fmt)
    assert AccessLog.from_server_config(config) is None  # no target: off
    config.access_logs_target = str(tmp_path / "a.log")
    access = AccessLog.from_server_config(config)
    assert access is not None and access.format == expected
    access.close()
