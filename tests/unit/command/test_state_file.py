"""State file codec: Sōzu's exact record bytes, round trips, lenient reading, error reports."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    AddBackend,
    AddCertificate,
    Cluster,
    Header,
    HeaderPosition,
    HealthCheckConfig,
    HstsConfig,
    HttpsListenerConfig,
    IpAddress,
    ListenerType,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    LoadMetric,
    PathRule,
    PathRuleKind,
    ProtobufAccessLog,
    ProxyProtocolConfig,
    RedirectPolicy,
    RedirectScheme,
    Request,
    RequestHttpFrontend,
    ResponseContent,
    RulePosition,
    ServerConfig,
    SocketAddress,
    Status,
    TcpListenerConfig,
    TlsVersion,
    UdpAffinityKey,
    UdpClusterConfig,
    UdpHealthConfig,
    UdpHealthMode,
    WorkerRequest,
    WorkerResponse,
)
from sozu.command.state import Applied, ConfigState, StateError, canonical
from sozu.command.state_file import (
    RECORD_SEPARATOR,
    LoadError,
    RecordError,
    StateFileError,
    decode_record,
    dump_state,
    encode_record,
    encode_requests,
    from_serde,
    load_records,
    load_state,
    parse_records,
    read_state_file,
    save_state,
    split_records,
    to_serde,
    variant_key,
)
from tests.unit.command.test_state import (
    add_cert,
    backend,
    certs,
    cluster,
    http_listener,
    messages,
    rich_state,
    state_requests,
    tcp_listener,
    udp_listener,
)

DATA = Path(__file__).parent / "data" / "state"

# The two records of SOZU-FACTS.md, byte for byte.
SOZU_ADD_CLUSTER = (
    b'{"id":"SAVE-2","content":{"request_type":{"ADD_CLUSTER":{"cluster_id":"MyCluster",'
    b'"sticky_session":false,"https_redirect":false,"proxy_protocol":null,"load_balancing":0,'
    b'"answer_503":null,"load_metric":null,"http2":null,"answers":{},"https_redirect_port":null,'
    b'"authorized_hashes":[],"www_authenticate":null,"max_connections_per_ip":null,'
    b'"retry_after":null,"health_check":null,"udp":null}}}}'
)
SOZU_ADD_BACKEND = (
    b'{"id":"SAVE-5","content":{"request_type":{"ADD_BACKEND":{"cluster_id":"MyCluster",'
    b'"backend_id":"the-backend-to-my-app","address":{"ip":{"inner":{"V4":2130706433}},'
    b'"port":1026},"sticky_id":null,"load_balancing_parameters":{"weight":100},"backup":null}}}}'
)


def worker(request_id: str, **kwargs: Any) -> WorkerRequest:
    return WorkerRequest(id=request_id, content=Request(**kwargs))


# --- exact bytes ---------------------------------------------------------------------------


def test_add_cluster_record_is_byte_identical_to_sozu() -> None:
    request = worker(
        "SAVE-2",
        add_cluster=Cluster(cluster_id="MyCluster", sticky_session=False, https_redirect=False),
    )
    assert encode_record(request) == SOZU_ADD_CLUSTER
    assert decode_record(SOZU_ADD_CLUSTER) == canonical(request)


def test_add_backend_record_is_byte_identical_to_sozu() -> None:
    request = worker(
        "SAVE-5",
        add_backend=AddBackend(
            cluster_id="MyCluster",
            backend_id="the-backend-to-my-app",
            address=to_proto("127.0.0.1:1026"),
            load_balancing_parameters=LoadBalancingParams(weight=100),
        ),
    )
    assert encode_record(request) == SOZU_ADD_BACKEND
    assert decode_record(SOZU_ADD_BACKEND) == request


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("add_cluster", "ADD_CLUSTER"),
        ("Logging", "LOGGING"),
        ("query_certificates_from_the_state", "QUERY_CERTIFICATES_FROM_THE_STATE"),
        ("v4", "V4"),
        ("v6", "V6"),
        ("time_serie", "TIME_SERIE"),
    ],
)
def test_variant_keys(field: str, key: str) -> None:
    assert variant_key(field) == key


def test_encoding_rules() -> None:
    record = json.loads(encode_record(worker("x", Logging="info")))
    assert record == {"id": "x", "content": {"request_type": {"LOGGING": "info"}}}
    assert to_serde(Request()) == {"request_type": None}
    assert to_serde(Request(status=Status())) == {"request_type": {"STATUS": {}}}
    v6 = to_serde(to_proto("[2001:db8::1]:443"))
    assert v6 == {"ip": {"inner": {"V6": {"low": 1, "high": 0x20010DB8 << 32}}}, "port": 443}
    assert to_serde(IpAddress()) == {"inner": None}
    udp = Cluster(
        cluster_id="c",
        answers={"503": "b", "404": "a"},
        udp=UdpClusterConfig(health=UdpHealthConfig(udp_probe_payload=b"\x00\xff")),
    )
    encoded = to_serde(udp)
    assert list(encoded["answers"]) == ["404", "503"]  # a BTreeMap: sorted keys
    assert encoded["udp"]["health"]["udp_probe_payload"] == [0, 255]
    assert encoded["udp"]["health"]["rise"] is None  # an unset optional, default or not
    assert encoded["load_balancing"] == 0  # a required enum, as its number


def test_strings_are_escaped_as_serde_json_does() -> None:
    request = worker('é\x01\x1f"\\/\n\t\x7f☃', status=Status())
    assert encode_record(request).startswith('{"id":"é\\u0001\\u001f\\"\\\\/\\n\\t\x7f☃"'.encode())
    assert decode_record(encode_record(request)) == request


# --- saving --------------------------------------------------------------------------------


def test_save_writes_numbered_records_each_terminated(tmp_path: Path) -> None:
    state = rich_state()
    path = tmp_path / "state.json"
    count = save_state(path, state)
    data = path.read_bytes()
    assert count == len(state.requests())
    assert data.endswith(RECORD_SEPARATOR)
    assert data.count(RECORD_SEPARATOR) == count
    records = data.split(RECORD_SEPARATOR)[:-1]
    assert [json.loads(r)["id"] for r in records] == [f"SAVE-{n}" for n in range(count)]
    assert data == dump_state(state) == encode_requests(state.requests())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_save_replaces_an_existing_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    path.chmod(0o640)
    assert save_state(path, ConfigState()) == 0
    assert path.read_bytes() == b""
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_through_a_symlink_writes_the_target(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    save_state(link, rich_state())
    assert link.is_symlink() and load_state(target).state == rich_state()


def test_save_into_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(StateFileError):
        save_state(tmp_path / "nope" / "state.json", ConfigState())


def test_a_path_with_a_nul_byte_is_a_state_file_error(tmp_path: Path) -> None:
    with pytest.raises(StateFileError):
        save_state(f"{tmp_path}/a\0b", ConfigState())
    with pytest.raises(StateFileError):
        read_state_file(f"{tmp_path}/a\0b")


# --- round trips ---------------------------------------------------------------------------


def full_state() -> ConfigState:
    state = rich_state()
    every_option = Cluster(
        cluster_id="full",
        sticky_session=True,
        https_redirect=True,
        proxy_protocol=ProxyProtocolConfig.SEND_HEADER,
        load_balancing=LoadBalancingAlgorithms.POWER_OF_TWO,
        answer_503="busy",
        load_metric=LoadMetric.CONNECTION_TIME,
        http2=True,
        answers={"404": "nothing", "503": "later"},
        https_redirect_port=8443,
        authorized_hashes=["abc", "def"],
        www_authenticate="Basic",
        max_connections_per_ip=2**40,
        retry_after=7,
        health_check=HealthCheckConfig(uri="/up", interval=3, expected_status=204),
        udp=UdpClusterConfig(
            affinity_key=UdpAffinityKey.SOURCE_IP_PORT,
            health=UdpHealthConfig(
                mode=UdpHealthMode.UDP_PROBE, udp_probe_payload=b"ping\x00", fail_open=False
            ),
        ),
    )
    rich_front = RequestHttpFrontend(
        cluster_id="full",
        address=to_proto("[::]:443"),
        hostname="*.exämple.org",
        path=PathRule(kind=PathRuleKind.REGEX, value="^/v[0-9]+/"),
        method="POST",
        position=RulePosition.PRE,
        tags={"team": "edge", "env": "prod"},
        redirect=RedirectPolicy.PERMANENT,
        required_auth=True,
        redirect_scheme=RedirectScheme.USE_HTTPS,
        redirect_template="https://%HOST%/",
        rewrite_host="backend.internal",
        rewrite_path="/x",
        rewrite_port=8080,
        headers=[Header(position=HeaderPosition.BOTH, key="X-A", val="1")],
        hsts=HstsConfig(enabled=True, max_age=31536000, include_subdomains=True),
    )
    equals_front = RequestHttpFrontend(
        address=to_proto("0.0.0.0:80"),
        hostname="deny.example",
        path=PathRule(kind=PathRuleKind.EQUALS, value="/admin"),
    )
    https = HttpsListenerConfig(
        address=to_proto("[::]:443"),
        public_address=to_proto("203.0.113.1:443"),
        sticky_name="S",
        versions=[TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3],
        alpn_protocols=["h2"],
        send_tls13_tickets=4,
        answers={"503": "x"},
        hsts=HstsConfig(enabled=False),
        h2_max_rst_stream_lifetime=2**63,
    )
    for request in (
        Request(add_cluster=every_option),
        Request(add_https_listener=https),
        Request(add_https_frontend=rich_front),
        Request(add_http_frontend=equals_front),
        Request(add_tcp_listener=TcpListenerConfig(address=to_proto("[::1]:9000"), active=True)),
        backend("full", "v6", "[2001:db8::7]:8080", sticky_id="s", backup=False),
        add_cert("[::]:443", 2),
    ):
        state.apply(request)
    return state


def test_round_trip_of_a_rich_state(tmp_path: Path) -> None:
    state = full_state()
    path = tmp_path / "state.json"
    count = save_state(path, state)
    result = load_state(path)
    assert result.errors == []
    assert len(result.ok) == count
    assert result.state == state
    assert [r.id for r in result.requests_ok] == [f"SAVE-{n}" for n in range(count)]
    assert dump_state(result.state) == path.read_bytes()


CODEC_TYPES: list[type[Message]] = [
    WorkerRequest,
    Request,
    ResponseContent,
    WorkerResponse,
    ServerConfig,
    ProtobufAccessLog,
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_codec_round_trips_any_message(data: st.DataObject) -> None:
    message_type = data.draw(st.sampled_from(CODEC_TYPES))
    message = data.draw(messages(message_type.DESCRIPTOR))
    encoded = json.dumps(to_serde(message), separators=(",", ":"), ensure_ascii=False)
    assert from_serde(message_type, json.loads(encoded)) == canonical(message)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(state_requests, max_size=25))
def test_any_reachable_state_survives_a_state_file(requests: list[Request]) -> None:
    state = ConfigState()
    for request in requests:
        with contextlib.suppress(StateError):  # refused requests are part of the exploration
            state.apply(request)
    result = load_records(dump_state(state))
    assert result.errors == []
    assert result.state == state


# --- reading files written elsewhere ---------------------------------------------------------


def test_a_sozu_style_file_with_unknown_and_missing_fields_loads() -> None:
    result = load_state(DATA / "sozu-2.1.0-style.state")
    assert result.errors == []
    assert [r.applied for r in result.ok][:2] == [Applied.CHANGED, Applied.UNCHANGED]
    state = result.state
    assert state.cluster_ids() == ["app-1"]
    found = state.cluster("app-1")
    assert found is not None and not found.HasField("http2") and not found.answers
    (front,) = state.list_frontends().http_frontends
    assert front.hostname == "example.com" and not front.headers
    assert [b.backend_id for b in state.backends("app-1")] == ["app-1-backend-0", "app-1-backend-1"]
    assert state.list_listeners().http_listeners["0.0.0.0:8080"].active
    assert list(state.list_listeners().https_listeners) == ["[::]:8443"]


def test_records_of_an_older_writer_load() -> None:
    # Records shaped as sozu-command-lib 1.1.1 wrote them: no post-1.1.1 repeated/map fields.
    data = (
        b'{"id":"PM-1","content":{"request_type":{"ADD_CLUSTER":{"cluster_id":"app-1",'
        b'"sticky_session":false,"https_redirect":false,"proxy_protocol":null,"load_balancing":0,'
        b'"answer_503":null,"load_metric":0}}}}\n\0'
        b'{"id":"PM-2","content":{"request_type":{"ADD_HTTP_FRONTEND":{"cluster_id":"app-1",'
        b'"address":{"ip":{"inner":{"V4":2130706433}},"port":80},"hostname":"example.com",'
        b'"path":{"kind":0,"value":"/"},"method":null,"position":2,"tags":{}}}}}\n\0'
    )
    result = load_records(data)
    assert result.errors == []
    assert [r.id for r in result.requests_ok] == ["PM-1", "PM-2"]


def test_separators_and_whitespace_are_tolerated() -> None:
    one = encode_record(worker("a", add_cluster=Cluster(cluster_id="a")))
    two = encode_record(worker("b", add_cluster=Cluster(cluster_id="b")))
    assert split_records(b"") == []
    assert split_records(b"\n\0  \n\0") == []
    data = one + b"\n\0\r\n  \0 " + two + b"\n  "  # a blank record, no final NUL
    assert load_records(data).state.cluster_ids() == ["a", "b"]


# --- corrupt and refused records -------------------------------------------------------------


def five_clusters() -> list[bytes]:
    return [
        encode_record(worker(f"SAVE-{n}", add_cluster=Cluster(cluster_id=f"c{n}")))
        for n in range(5)
    ]


def join(records: list[bytes]) -> bytes:
    return b"".join(record + RECORD_SEPARATOR for record in records)


def test_a_corrupt_record_is_reported_and_the_others_load() -> None:
    records = five_clusters()
    records[2] = records[2][:-7]  # cut JSON
    result = load_records(join(records))
    assert result.state.cluster_ids() == ["c0", "c1", "c3", "c4"]
    assert [r.index for r in result.ok] == [0, 1, 3, 4]
    (error,) = result.errors
    assert (error.index, error.id, error.refused) == (2, None, False)
    assert "invalid JSON" in error.reason
    assert str(error).startswith("record 2 corrupt: invalid JSON")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"request_type":{"ADD_CLUSTR":{"cluster_id":"x"}}}', "unknown variant 'ADD_CLUSTR'"),
        (
            '{"request_type":{"ADD_CLUSTER":{"sticky_session":false}}}',
            "ADD_CLUSTER.cluster_id: missing required field",
        ),
        (
            '{"request_type":{"ADD_CLUSTER":{"cluster_id":1,"sticky_session":false,'
            '"https_redirect":false,"load_balancing":0}}}',
            "cluster_id: expected a string, found a number",
        ),
        (
            '{"request_type":{"ADD_CLUSTER":{"cluster_id":"x","sticky_session":0,'
            '"https_redirect":false,"load_balancing":0}}}',
            "sticky_session: expected a boolean",
        ),
        (
            '{"request_type":{"ADD_CLUSTER":{"cluster_id":"x","sticky_session":false,'
            '"https_redirect":false,"load_balancing":9}}}',
            "9 is not a value of enum LoadBalancingAlgorithms",
        ),
        ('{"request_type":{"UPGRADE_WORKER":-1}}', "-1 is out of range"),
        ('{"request_type":{"UPGRADE_WORKER":1.0}}', "expected an integer"),
        ('{"request_type":{"STATUS":{},"HARD_STOP":{}}}', "exactly one variant"),
        ('{"request_type":{"SAVE_STATE":NaN}}', "invalid JSON number NaN"),
        ('["not", "an", "object"]', "expected an object, found a list"),
    ],
)
def test_corrupt_record_reasons(body: str, reason: str) -> None:
    record = f'{{"id":"X","content":{body}}}'.encode()
    with pytest.raises(RecordError, match=None) as caught:
        decode_record(record)
    assert reason in str(caught.value)
    parsed, errors = parse_records(record + RECORD_SEPARATOR)
    assert parsed == [] and [(e.index, e.refused) for e in errors] == [(0, False)]
    expected_id = None if "NaN" in body else "X"  # no id when the JSON itself is invalid
    assert errors[0].id == expected_id


def test_non_utf8_and_deep_records_are_corrupt() -> None:
    with pytest.raises(RecordError, match="not UTF-8"):
        decode_record(b'{"id":"\xff"}')
    with pytest.raises(RecordError):
        decode_record(b"[" * 100_000 + b"]" * 100_000)


def test_a_refused_record_is_reported_with_its_index() -> None:
    data = encode_requests(
        [
            http_listener("0.0.0.0:80"),
            cluster("a"),
            http_listener("0.0.0.0:80", sticky_name="again"),
            Request(save_state="/tmp/x"),
            backend("a", "b", "10.0.0.1:80"),
        ]
    )
    result = load_records(data)
    assert [r.index for r in result.ok] == [0, 1, 4]
    assert result.errors == [
        LoadError(2, "SAVE-2", "HTTP listener 0.0.0.0:80 already exists", refused=True),
        LoadError(3, "SAVE-3", "a save_state request is not a change of the state", refused=True),
    ]
    assert str(result.errors[0]) == (
        "record 2 (SAVE-2) refused: HTTP listener 0.0.0.0:80 already exists"
    )


def test_loading_into_an_existing_state_applies_over_it() -> None:
    state = ConfigState()
    state.apply(tcp_listener("0.0.0.0:9000"))
    data = encode_requests([tcp_listener("0.0.0.0:9000"), udp_listener("0.0.0.0:53")])
    result = load_state(data, state)
    assert result.state is state
    assert [e.index for e in result.errors] == [0]
    assert len(state.list_listeners().udp_listeners) == 1


def test_invalid_certificate_in_a_file_is_refused() -> None:
    good = add_cert("0.0.0.0:443", 0)
    bad = Request(
        add_certificate=AddCertificate(address=to_proto("0.0.0.0:443"), certificate=certs()[1])
    )
    bad.add_certificate.certificate.certificate = "garbage"
    result = load_records(encode_requests([good, bad]))
    assert [e.index for e in result.errors] == [1]
    assert result.errors[0].reason.startswith("invalid certificate")


def test_invalid_address_in_a_file_is_refused() -> None:
    listener = TcpListenerConfig(address=SocketAddress(ip=IpAddress(v4=1), port=70000))
    result = load_records(encode_requests([Request(add_tcp_listener=listener)]))
    assert result.errors[0].reason == "port 70000 is out of range"


# --- file system edge cases ------------------------------------------------------------------


def test_missing_file_is_a_state_file_error(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="cannot open"):
        load_state(tmp_path / "absent.json")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            load_state(fifo)
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "loading a FIFO blocked"
    assert isinstance(outcome[0], StateFileError)
    assert "not a regular file" in str(outcome[0])


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateFileError):
        load_state(tmp_path)


def test_listener_records_keep_their_kind() -> None:
    data = encode_requests([http_listener("0.0.0.0:80", active=True), tcp_listener("0.0.0.0:80")])
    listed = load_records(data).state.list_listeners()
    assert list(listed.http_listeners) == ["0.0.0.0:80"]
    assert list(listed.tcp_listeners) == ["0.0.0.0:80"]
    assert ListenerType.HTTP == 0
