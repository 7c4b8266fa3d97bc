"""The audit record: rendering, sanitising, the three sinks, reopen and failure handling."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from sozu.command.proto import Cluster, LoadBalancingAlgorithms, Request
from sozu.supervisor import audit
from sozu.supervisor.audit import (
    AuditLog,
    AuditRecord,
    AuditSubject,
    ClientContext,
    FanOut,
    new_ulid,
    render_json,
    render_text,
)
from sozu.supervisor.peer import PeerCredentials, peer_credentials

SOCKET_PATH = "/run/sozu/sozu.sock"
TEXT_FIELDS = [
    "ts",
    "verb",
    "actor_uid",
    "actor_gid",
    "actor_pid",
    "actor_role",
    "actor_user",
    "actor_comm",
    "client_id",
    "connect_ts",
    "socket",
    "target",
    "result",
]
TEXT_TAIL = ["sozu_version", "build_git_sha", "boot_generation"]
JSON_KEYS = {
    "ts",
    "boot_generation",
    "session_ulid",
    "request_ulid",
    "actor",
    "client_id",
    "connect_ts",
    "socket",
    "verb",
    "target",
    "result",
    "cluster_id",
    "backend_id",
    "sozu_version",
    "build_git_sha",
    "extras",
}
ACTOR_KEYS = {"uid", "gid", "pid", "user", "comm", "role"}
EXTRAS_KEYS = {"error_code", "reason", "elapsed_ms", "fanout", "request_sha256"}
FANOUT_KEYS = {"status", "workers_ok", "workers_err", "workers_expected"}
LINE = re.compile(
    r"^\[(?P<session>[0-9A-Z]{26}|-) (?P<request>\S+) (?P<cluster>\S+) (?P<backend>\S+)\]"
    r"\tAUDIT\tCommand\((?P<body>[^\t\n]*)\)$"
)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def peer() -> PeerCredentials:
    return PeerCredentials(uid=1000, gid=1000, pid=4242, user="alice", comm="sozu")


@pytest.fixture
def client(peer: PeerCredentials) -> ClientContext:
    return ClientContext.accepted(7, SOCKET_PATH, peer)


def fields_of(line: str) -> list[tuple[str, str]]:
    match = LINE.match(line)
    assert match, f"not an audit line: {line!r}"
    pairs = [part.split("=", 1) for part in match["body"].split(", ")]
    return [(key, value) for key, value in pairs]


def make_log(tmp_path: Path, **kwargs: object) -> AuditLog:
    return AuditLog(
        text_path=str(tmp_path / "audit.log"),
        json_path=str(tmp_path / "audit.jsonl"),
        boot_generation=3,
        sozu_version="9.9.9",
        **kwargs,  # type: ignore[arg-type]
    )


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------- helpers


def test_ulid_shape_time_and_uniqueness() -> None:
    value = new_ulid(timestamp_ms=1_700_000_000_123)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", value)
    decoded = 0
    for char in value:
        decoded = decoded * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert decoded >> 80 == 1_700_000_000_123
    assert new_ulid(timestamp_ms=1) < new_ulid(timestamp_ms=2)
    assert len({new_ulid() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain-id_42:8080", "plain-id_42:8080"),
        ("a\nb", "a?b"),
        ("a\tb", "a?b"),
        ("a\x00b", "a?b"),
        ("a\x7fb", "a?b"),
        ("a\x1b[31mb", "a?[31mb"),
        ("a\x85b", "a?b"),
        ("a\u2028b\u2029c", "a?b?c"),
        ("a\u202eb\ufeff", "a?b?"),
        ("x,y=z", "x,y=z"),
        ("é ünïcode", "é ünïcode"),
    ],
)
def test_sanitize(raw: str, clean: str) -> None:
    assert audit.sanitize(raw) == clean


def test_reason_is_cut_to_256_characters() -> None:
    assert audit.truncate_reason("x" * 256) == "x" * 256
    cut = audit.truncate_reason("y" * 1000)
    assert len(cut) == 256
    assert cut.endswith("…")
    assert audit.truncate_reason("a\nb") == "a?b"


def test_strip_ansi() -> None:
    assert audit.strip_ansi("\x1b[1;97mAUDIT\x1b[0m x\x1b[;31;1my") == "AUDIT xy"
    assert audit.strip_ansi("no escapes") == "no escapes"


def test_rfc3339_and_roles() -> None:
    assert audit.rfc3339_utc(0) == "1970-01-01T00:00:00.000000Z"
    assert audit.rfc3339_utc(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
    assert [audit.actor_role(u) for u in (None, 0, 1, 999, 1000, 65534)] == [
        "unknown",
        "root",
        "system",
        "system",
        "user",
        "user",
    ]


def test_request_sha256_is_the_first_16_hex_of_the_wire_bytes() -> None:
    request = Request(
        add_cluster=Cluster(
            cluster_id="app",
            sticky_session=False,
            https_redirect=False,
            load_balancing=LoadBalancingAlgorithms.ROUND_ROBIN,
        )
    )
    expected = hashlib.sha256(request.SerializeToString()).hexdigest()[:16]
    assert audit.request_sha256(request) == expected
    # an incomplete proto2 message is hashed, not refused
    assert len(audit.request_sha256(Request(add_cluster=Cluster(cluster_id="x")))) == 16


@pytest.mark.parametrize(
    ("counts", "timed_out", "status", "failed"),
    [
        ((2, 0, 2), False, "ok", False),
        ((1, 1, 2), False, "partial", True),
        ((1, 0, 2), True, "timeout", True),
        ((0, 0, 0), False, "local_only", False),
    ],
)
def test_fanout_status(
    counts: tuple[int, int, int], timed_out: bool, status: str, failed: bool
) -> None:
    fanout = FanOut.from_counts(*counts, timed_out=timed_out)
    assert fanout.status == status
    assert fanout.failed is failed
    assert (fanout.workers_ok, fanout.workers_err, fanout.workers_expected) == counts


# ---------------------------------------------------------------------------- rendering


def test_text_line_has_every_envelope_field_in_sozu_order(client: ClientContext) -> None:
    record = AuditRecord(
        ts="2024-01-01T00:00:00.000000Z",
        boot_generation=2,
        client=client,
        subject=AuditSubject("cluster_added", "cluster:my_app", cluster_id="my_app"),
        request_ulid=new_ulid(),
        result="ok",
        sozu_version="1.2.3",
        build_git_sha="abc",
    )
    line = render_text(record)
    match = LINE.match(line)
    assert match
    assert match["session"] == client.session_ulid
    assert (match["cluster"], match["backend"]) == ("my_app", "-")
    fields = fields_of(line)
    assert [k for k, _ in fields] == TEXT_FIELDS + TEXT_TAIL
    values = dict(fields)
    assert values["verb"] == "cluster_added"
    assert values["actor_uid"] == "1000"
    assert values["actor_gid"] == "1000"
    assert values["actor_pid"] == "4242"
    assert values["actor_role"] == "user"
    assert values["actor_user"] == "alice"
    assert values["actor_comm"] == "sozu"
    assert values["client_id"] == "7"
    assert values["connect_ts"] == client.connect_ts
    assert values["socket"] == SOCKET_PATH
    assert values["target"] == "cluster:my_app"
    assert values["result"] == "ok"
    assert values["sozu_version"] == "1.2.3"
    assert values["build_git_sha"] == "abc"
    assert values["boot_generation"] == "2"


def test_text_line_optional_fields_in_order(client: ClientContext) -> None:
    record = AuditRecord(
        ts="t",
        boot_generation=0,
        client=client,
        subject=AuditSubject("backend_added", "backend:a/b", cluster_id="a", backend_id="b"),
        request_ulid=new_ulid(),
        result="err",
        error_code="worker_failure",
        reason="worker 1: boom",
        elapsed_ms=17,
        fanout=FanOut("partial", 1, 1, 2),
        request_sha256="0123456789abcdef",
    )
    line = render_text(record)
    keys = [k for k, _ in fields_of(line.replace("worker 1: boom", "worker-1:-boom"))]
    extras = ["error_code", "reason", "elapsed_ms", "fanout", "workers", "request_sha256"]
    assert keys == [*TEXT_FIELDS, *extras, *TEXT_TAIL]
    assert ", workers=1/1/2, " in line
    assert ", fanout=partial, " in line
    assert "[" + client.session_ulid in line and " a b]\tAUDIT\t" in line


def test_unknown_peer_renders_unknown_and_json_nulls() -> None:
    context = ClientContext.accepted(1, SOCKET_PATH, PeerCredentials.unavailable())
    record = AuditRecord(
        ts="t",
        boot_generation=0,
        client=context,
        subject=AuditSubject("state_saved", "file:/x"),
        request_ulid=new_ulid(),
        result="err",
        error_code="peer_cred_unavailable",
    )
    values = dict(fields_of(render_text(record)))
    for key in ("actor_uid", "actor_gid", "actor_pid", "actor_role", "actor_user", "actor_comm"):
        assert values[key] == "unknown"
    actor = json.loads(render_json(record))["actor"]
    assert actor == {
        "uid": None,
        "gid": None,
        "pid": None,
        "user": None,
        "comm": None,
        "role": "unknown",
    }


def test_record_without_client() -> None:
    record = AuditRecord(
        ts="t",
        boot_generation=0,
        client=None,
        subject=AuditSubject("configuration_reloaded", "config:/etc/sozu.toml"),
        request_ulid=new_ulid(),
        result="ok",
    )
    assert render_text(record).startswith("[- ")
    data = json.loads(render_json(record))
    assert data["session_ulid"] is None and data["client_id"] is None and data["socket"] is None


def test_json_record_has_every_key(client: ClientContext) -> None:
    bare = AuditRecord(
        ts="t",
        boot_generation=1,
        client=client,
        subject=AuditSubject("sozu_stop_requested", "stop:hard"),
        request_ulid=new_ulid(),
        result="ok",
    )
    data = json.loads(render_json(bare))
    assert set(data) == JSON_KEYS
    assert set(data["actor"]) == ACTOR_KEYS
    assert set(data["extras"]) == EXTRAS_KEYS
    assert all(value is None for value in data["extras"].values())
    assert data["cluster_id"] is None and data["backend_id"] is None
    assert data["actor"]["role"] == "user"
    assert list(data) == sorted(data), "keys sorted as Sōzu's serde_json writes them"

    full = AuditRecord(
        ts="t",
        boot_generation=1,
        client=client,
        subject=AuditSubject("backend_removed", "backend:c/b", cluster_id="c", backend_id="b"),
        request_ulid="R",
        result="err",
        error_code="worker_timeout",
        reason="worker 0: timeout",
        elapsed_ms=5000,
        fanout=FanOut("timeout", 1, 0, 2),
        request_sha256="0123456789abcdef",
    )
    data = json.loads(render_json(full))
    assert set(data) == JSON_KEYS
    assert data["extras"] == {
        "error_code": "worker_timeout",
        "reason": "worker 0: timeout",
        "elapsed_ms": 5000,
        "fanout": {"status": "timeout", "workers_ok": 1, "workers_err": 0, "workers_expected": 2},
        "request_sha256": "0123456789abcdef",
    }
    assert set(data["extras"]["fanout"]) == FANOUT_KEYS
    assert (data["cluster_id"], data["backend_id"], data["request_ulid"]) == ("c", "b", "R")


# ---------------------------------------------------------------------------- sinks


def test_record_writes_main_log_text_and_json(tmp_path: Path, client: ClientContext) -> None:
    log = make_log(tmp_path)
    request = Request(remove_cluster="my_app")
    subject = audit.describe(request)
    assert subject is not None
    ulid = new_ulid()
    with capture_logs() as captured:
        log.record(client, subject, request_ulid=ulid, result="ok", request_sha256="ab" * 8)
    log.close()
    assert len(captured) == 1
    assert captured[0]["log_level"] == "info"
    main_line = captured[0]["event"]
    assert "\tAUDIT\t" in main_line
    [text] = lines(tmp_path / "audit.log")
    assert text == main_line
    values = dict(fields_of(text))
    assert values["verb"] == "cluster_removed"
    assert values["boot_generation"] == "3"
    assert values["sozu_version"] == "9.9.9"
    [raw] = lines(tmp_path / "audit.jsonl")
    data = json.loads(raw)
    assert data["request_ulid"] == ulid
    assert data["session_ulid"] == client.session_ulid
    assert data["verb"] == "cluster_removed" and data["target"] == "cluster:my_app"
    assert data["extras"]["request_sha256"] == "ab" * 8
    assert data["ts"] == values["ts"]


def test_control_characters_cannot_forge_lines_or_records(
    tmp_path: Path, client: ClientContext
) -> None:
    log = make_log(tmp_path)
    evil_cluster = "evil\n[X Y Z W]\tAUDIT\tCommand(verb=cluster_removed)\t"
    evil_backend = "b\x00\x7f\r\n"
    request = Request(add_cluster=Cluster(cluster_id=evil_cluster))
    subject = audit.describe(request)
    assert subject is not None
    log.record(client, subject, request_ulid=new_ulid(), result="ok")
    log.record(
        client,
        AuditSubject("backend_added", f"backend:{evil_cluster}/{evil_backend}", None, evil_backend),
        request_ulid=new_ulid(),
        result="err",
        error_code="dispatch_error",
        reason='no\n{"verb":"forged"}\ttab\x00nul\x7fdel\u2028ls',
    )
    log.close()
    raw_text = (tmp_path / "audit.log").read_text()
    assert raw_text.count("\n") == 2
    first = LINE.match(raw_text.splitlines()[0])
    assert first and first["cluster"] == "evil??X?Y?Z?W??AUDIT?Command(verb=cluster_removed)?"
    assert first["backend"] == "-"
    for line in raw_text.splitlines():
        assert line.count("\t") == 2
        assert LINE.match(line)
    raw_json = (tmp_path / "audit.jsonl").read_text()
    assert raw_json.count("\n") == 2
    records = [json.loads(line) for line in raw_json.splitlines()]
    assert records[0]["cluster_id"] == "evil?[X Y Z W]?AUDIT?Command(verb=cluster_removed)?"
    assert records[1]["backend_id"] == "b????"
    assert records[1]["extras"]["reason"] == 'no?{"verb":"forged"}?tab?nul?del?ls'
    for record in records:
        for value in (record["cluster_id"], record["backend_id"], record["target"]):
            assert value is None or not re.search(r"[\x00-\x1f\x7f]", value)


def test_control_characters_in_peer_and_socket(tmp_path: Path) -> None:
    peer = PeerCredentials(uid=5, gid=5, pid=9, user="us\ner", comm="co\tmm")
    context = ClientContext.accepted(1, "/tmp/so\nck", peer)
    log = make_log(tmp_path)
    log.record(context, AuditSubject("state_saved", "file:/a\n"), request_ulid="R", result="ok")
    log.close()
    [line] = lines(tmp_path / "audit.log")
    values = dict(fields_of(line))
    assert (values["actor_user"], values["actor_comm"], values["socket"]) == (
        "us?er",
        "co?mm",
        "/tmp/so?ck",
    )
    [raw] = lines(tmp_path / "audit.jsonl")
    data = json.loads(raw)
    assert data["actor"]["user"] == "us?er" and data["socket"] == "/tmp/so?ck"


def test_long_reason_truncated_in_both_sinks(tmp_path: Path, client: ClientContext) -> None:
    log = make_log(tmp_path)
    log.record(
        client,
        AuditSubject("cluster_added", "cluster:a", "a"),
        request_ulid="R",
        result="err",
        error_code="worker_failure",
        reason="r" * 5000,
    )
    log.close()
    [line] = lines(tmp_path / "audit.log")
    reason = re.search(r", reason=([^,]*), ", line)
    assert reason and len(reason.group(1)) == 256
    [raw] = lines(tmp_path / "audit.jsonl")
    assert len(json.loads(raw)["extras"]["reason"]) == 256


def test_colours_reach_the_main_log_but_not_the_file(tmp_path: Path, client: ClientContext) -> None:
    log = make_log(tmp_path, colored=True)
    with capture_logs() as captured:
        log.record(
            client, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
        )
    log.close()
    assert "\x1b[" in captured[0]["event"]
    [line] = lines(tmp_path / "audit.log")
    assert "\x1b" not in line
    assert line == audit.strip_ansi(captured[0]["event"])
    assert LINE.match(line.replace("[- ", "[- "))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_files_are_created_0640(tmp_path: Path, client: ClientContext, umask: int) -> None:
    old = os.umask(umask)
    try:
        log = make_log(tmp_path)
    finally:
        os.umask(old)
    log.record(
        client, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
    )
    log.close()
    for name in ("audit.log", "audit.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


def test_existing_files_are_appended_and_narrowed(tmp_path: Path, client: ClientContext) -> None:
    existing = tmp_path / "audit.log"
    existing.write_text("previous line\n")
    existing.chmod(0o644)
    with capture_logs() as captured:
        log = make_log(tmp_path)
    assert any(entry["event"] == "audit_sink_mode_narrowed" for entry in captured)
    for n in range(3):
        log.record(
            client,
            AuditSubject("cluster_added", f"cluster:{n}", str(n)),
            request_ulid="R",
            result="ok",
        )
    log.close()
    content = lines(existing)
    assert content[0] == "previous line"
    assert len(content) == 4
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    # a second AuditLog on the same paths appends too (restart)
    log = make_log(tmp_path)
    log.record(
        client, AuditSubject("cluster_added", "cluster:z", "z"), request_ulid="R", result="ok"
    )
    log.close()
    assert len(lines(existing)) == 5
    assert len(lines(tmp_path / "audit.jsonl")) == 4


def test_file_url_form_is_accepted(tmp_path: Path, client: ClientContext) -> None:
    log = AuditLog(
        text_path=f"file://{tmp_path}/a.log",
        json_path=None,
        boot_generation=0,
        sozu_version="x",
    )
    log.record(
        client, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
    )
    log.close()
    assert len(lines(tmp_path / "a.log")) == 1


def test_reopen_after_rotation(tmp_path: Path, client: ClientContext) -> None:
    log = make_log(tmp_path)
    subject = AuditSubject("cluster_added", "cluster:a", "a")
    log.record(client, subject, request_ulid="BEFORE", result="ok")
    (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")
    (tmp_path / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")
    log.record(client, subject, request_ulid="BETWEEN", result="ok")  # still the old inode
    log.reopen()
    log.record(client, subject, request_ulid="AFTER", result="ok")
    log.close()
    old_text = (tmp_path / "audit.log.1").read_text()
    assert "BEFORE" in old_text and "BETWEEN" in old_text and "AFTER" not in old_text
    new_text = lines(tmp_path / "audit.log")
    assert len(new_text) == 1 and " AFTER " in new_text[0]
    assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o640
    [new_json] = lines(tmp_path / "audit.jsonl")
    assert json.loads(new_json)["request_ulid"] == "AFTER"
    assert len(lines(tmp_path / "audit.jsonl.1")) == 2


def test_close_stops_file_writes_until_reopen(tmp_path: Path, client: ClientContext) -> None:
    log = make_log(tmp_path)
    subject = AuditSubject("cluster_added", "cluster:a", "a")
    log.close()
    with capture_logs() as captured:
        log.record(client, subject, request_ulid="R", result="ok")
    assert len(captured) == 1  # main log still gets it
    assert lines(tmp_path / "audit.log") == []
    log.reopen()
    log.record(client, subject, request_ulid="R", result="ok")
    log.close()
    assert len(lines(tmp_path / "audit.log")) == 1


@pytest.mark.parametrize(
    "bad_path",
    ["DIRECTORY", "/dev/null/not-a-dir/audit.log", "/proc/version"],
    ids=["directory", "enotdir", "proc-file"],
)
def test_unopenable_sink_warns_and_never_raises(
    tmp_path: Path, client: ClientContext, bad_path: str
) -> None:
    path = str(tmp_path) if bad_path == "DIRECTORY" else bad_path
    good = tmp_path / "ok.jsonl"
    with capture_logs() as captured:
        log = AuditLog(text_path=path, json_path=str(good), boot_generation=0, sozu_version="x")
        log.record(
            client, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
        )
        log.reopen()
        log.record(
            client, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
        )
        log.close()
    warnings = [e for e in captured if e["log_level"] == "warning"]
    assert warnings
    assert {e["event"] for e in warnings} <= {"audit_sink_open_failed", "audit_sink_write_failed"}
    assert warnings[0]["sink"] == "audit_logs_target"
    assert sum(1 for e in captured if "\tAUDIT\t" in str(e["event"])) == 2
    assert len(lines(good)) == 2  # the other sink is unaffected


def test_failing_write_warns_and_never_raises(client: ClientContext) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with capture_logs() as captured:
        log = AuditLog(
            text_path="/dev/full", json_path="/dev/full", boot_generation=0, sozu_version="x"
        )
        log.record(
            client, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
        )
        log.close()
    failures = [e for e in captured if e["event"] == "audit_sink_write_failed"]
    assert {e["sink"] for e in failures} == {"audit_logs_target", "audit_logs_json_target"}


def test_record_never_raises_on_odd_input(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    weird = AuditSubject(verb="x", target=None)  # type: ignore[arg-type]
    with capture_logs() as captured:
        log.record(None, weird, request_ulid="R", result="ok")
    log.close()
    assert any(e["event"] == "audit_record_failed" for e in captured)


def test_boot_generation_is_mutable(tmp_path: Path, client: ClientContext) -> None:
    log = make_log(tmp_path)
    log.boot_generation += 1
    log.record(
        client,
        AuditSubject("main_upgraded", "executable:x boot_generation:4"),
        request_ulid="R",
        result="ok",
    )
    log.close()
    [raw] = lines(tmp_path / "audit.jsonl")
    assert json.loads(raw)["boot_generation"] == 4


def test_real_peer_in_a_record(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    with left, right:
        context = ClientContext.accepted(1, SOCKET_PATH, peer_credentials(left))
    log = make_log(tmp_path)
    log.record(
        context, AuditSubject("cluster_added", "cluster:a", "a"), request_ulid="R", result="ok"
    )
    log.close()
    values = dict(fields_of(lines(tmp_path / "audit.log")[0]))
    assert values["actor_uid"] == str(os.getuid())
    assert values["actor_gid"] == str(os.getgid())
    assert values["actor_pid"] == str(os.getpid())
