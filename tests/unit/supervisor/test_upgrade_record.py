"""The upgrade record: Sōzu's top-level keys and worker entries, a lossless config and state."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from sozu.command.certificate import self_signed
from sozu.command.config import load_config
from sozu.command.proto import RunState
from sozu.command.state import ConfigState
from sozu.supervisor.upgrade_record import (
    UpgradeRecord,
    UpgradeRecordError,
    WorkerEntry,
    decode,
    encode,
)

CONFIG = """
command_socket = "sozu.sock"
worker_count = 3
worker_timeout = 7
log_level = "debug"
command_allowed_uids = [0, 1000]

[metrics]
address = "127.0.0.1:8125"
tagged_metrics = true

[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"
answers = {{ "404" = "{answer}" }}

[[listeners]]
protocol = "https"
address = "127.0.0.1:8443"
tls_versions = ["TLS_V12", "TLS_V13"]

[[listeners]]
protocol = "tcp"
address = "127.0.0.1:9000"

[clusters.web]
protocol = "http"
load_balancing = "LEAST_LOADED"
frontends = [
    {{ address = "127.0.0.1:8080", hostname = "example.com", path = "/api", tags = {{ t = "a" }} }},
    {{ address = "127.0.0.1:8443", hostname = "ex.com", certificate = "{cert}", key = "{key}" }},
]
backends = [ {{ address = "127.0.0.1:8081", weight = 50 }} ]

[clusters.raw]
protocol = "tcp"
frontends = [ {{ address = "127.0.0.1:9000" }} ]
backends = [ {{ address = "127.0.0.1:9001" }} ]
"""


@pytest.fixture
def record(tmp_path: Path) -> UpgradeRecord:
    certificate, key = self_signed("ex.com")
    (tmp_path / "cert.pem").write_text(certificate)
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "404.html").write_text("HTTP/1.1 404 Not Found\r\n\r\nnope")
    (tmp_path / "config.toml").write_text(
        CONFIG.format(
            answer=tmp_path / "404.html", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem"
        )
    )
    config = load_config(tmp_path / "config.toml")
    return UpgradeRecord(
        command_socket_fd=5,
        config=config,
        next_client_id=12,
        next_session_id=12,
        next_task_id=40,
        next_worker_id=4,
        workers=[
            WorkerEntry(channel_fd=7, pid=4242, id=0, run_state=RunState.RUNNING, scm_fd=8),
            WorkerEntry(channel_fd=9, pid=4243, id=3, run_state=RunState.NOT_ANSWERING, scm_fd=10),
        ],
        requests=ConfigState.from_requests(config.requests()).requests(),
        request_counts=collections.Counter({"ADD_CLUSTER": 2, "ADD_BACKEND": 2}),
        listeners={
            "http": {"127.0.0.1:8080": 11},
            "tls": {"127.0.0.1:8443": 12},
            "tcp": {"127.0.0.1:9000": 13},
            "udp": {},
        },
        boot_generation=3,
    )


def test_round_trip_keeps_everything(record: UpgradeRecord) -> None:
    decoded = decode(encode(record))
    assert decoded == record
    assert decoded.config.clusters[0].frontends == record.config.clusters[0].frontends
    assert decoded.fds() == [5, 7, 8, 9, 10, 11, 12, 13]
    rebuilt = ConfigState.from_requests(decoded.requests)
    assert rebuilt.requests() == ConfigState.from_requests(record.requests).requests()
    assert decoded.config.server_config() == record.config.server_config()


def test_top_level_keys_and_worker_entries_are_sozus(record: UpgradeRecord) -> None:
    document = json.loads(encode(record))
    assert list(document)[:8] == [
        "command_socket_fd", "config", "next_client_id", "next_session_id", "next_task_id",
        "next_worker_id", "workers", "state",
    ]  # fmt: skip
    assert document["workers"][0] == {
        "channel_fd": 7, "pid": 4242, "id": 0, "run_state": "Running", "scm_fd": 8,
    }  # fmt: skip
    assert document["workers"][1]["run_state"] == "NotAnswering"
    assert document["boot_generation"] == 3
    assert document["config"]["command_socket"].endswith("sozu.sock")
    assert any("ADD_CLUSTER" in r["content"]["request_type"] for r in document["state"]["requests"])


def test_missing_boot_generation_means_first_boot(record: UpgradeRecord) -> None:
    document = json.loads(encode(record))
    del document["boot_generation"]
    assert decode(json.dumps(document).encode()).boot_generation == 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("command_socket_fd"), "record.command_socket_fd: missing"),
        (lambda d: d["workers"][1].update(run_state=2), "workers[1].run_state: unknown"),
        (lambda d: d["workers"][0].update(pid="x"), "workers[0].pid: expected an integer"),
        (lambda d: d["config"].update(worker_count="3"), "config.worker_count: expected int"),
        (lambda d: d["config"].update(surprise=1), "config: unknown key 'surprise'"),
        (lambda d: d["state"]["requests"][2].update(id=1), "state.requests[2]: WorkerRequest.id"),
        (lambda d: d["listeners"].update(http=[]), "listeners.http: expected an object"),
    ],
)
def test_bad_records_name_the_key_path(
    record: UpgradeRecord, change: object, expected: str
) -> None:
    document = json.loads(encode(record))
    assert callable(change)
    change(document)
    with pytest.raises(UpgradeRecordError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        decode(json.dumps(document).encode())


def test_not_json_is_refused() -> None:
    with pytest.raises(UpgradeRecordError, match="not JSON"):
        decode(b"{")
