"""The command protocol schema: fresh bindings, exact wire bytes, and Sōzu's field numbers.

Four guards around `proto/command.proto` and its committed bindings:
- the bindings are regenerated and compared (`scripts/gen_proto.py --check`);
- a handful of messages are checked byte for byte against protobuf encodings written out by
  hand below, in both directions (encode, then decode);
- the numbers of the oneof variants, key fields and enum values are compared with tables copied
  from Sōzu's `command/src/command.proto`, so an accidental edit of the schema fails here;
- classes built at test time from the proto *text* (in a private descriptor pool) exchange bytes
  with the committed bindings.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from sozu.command.proto import (
    FAILURE,
    PREFIX,
    ROUND_ROBIN,
    TREE,
    AddBackend,
    Cluster,
    EventKind,
    InitialState,
    IpAddress,
    ListenersCount,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    PathRuleKind,
    Request,
    RequestHttpFrontend,
    Response,
    ResponseContent,
    ResponseStatus,
    RulePosition,
    RunState,
    SocketAddress,
    Status,
    TlsVersion,
    Uint128,
    WorkerRequest,
    WorkerResponse,
)

ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = ROOT / "proto"
GEN_PROTO = ROOT / "scripts" / "gen_proto.py"


def require_grpc_tools() -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed: protoc is unavailable to compile the schema")


# ---------------------------------------------------------------------------------------------
# 1. The committed bindings match the schema.
# ---------------------------------------------------------------------------------------------


def test_committed_bindings_are_not_stale() -> None:
    require_grpc_tools()
    result = subprocess.run(
        [sys.executable, str(GEN_PROTO), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


# ---------------------------------------------------------------------------------------------
# 2. Byte-level encodings, computed by hand.
#
# A protobuf tag is the varint (field_number << 3) | wire_type, wire types: 0 varint, 2
# length-delimited (LEN), 5 fixed32. proto2 serializes every field that was set, even to its
# default value, in field-number order.
# ---------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Protobuf base-128 varint: 7 bits per byte, least significant group first."""
    out = bytearray()
    while True:
        group, value = value & 0x7F, value >> 7
        if value:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def read_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode the varint at `offset`: (value, offset just past it)."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def test_varint_helpers() -> None:
    assert varint(0) == b"\x00"
    assert varint(8080) == bytes.fromhex("90 3f")  # 8080 = 63 * 128 + 16: 0x10|0x80, 0x3f
    assert read_varint(bytes.fromhex("90 3f ff")) == (8080, 2)


LOCALHOST_8080 = SocketAddress(ip=IpAddress(v4=0x7F000001), port=8080)
LOCALHOST_8080_BYTES = bytes.fromhex(
    "0a 05"  # SocketAddress.ip (1), LEN, 5 bytes:
    "   0d 01 00 00 7f"  # IpAddress.v4 (1), fixed32 (tag 1<<3|5 = 0x0d), 0x7f000001 little-endian
    "10 90 3f"  # SocketAddress.port (2), varint: 8080
)

# 2001:db8::1 as a 128-bit number: high = 0x20010db800000000, low = 1.
V6_443 = SocketAddress(
    ip=IpAddress(v6=Uint128(low=1, high=0x20010DB800000000)),
    port=443,
)
V6_443_BYTES = bytes.fromhex(
    "0a 0e"  # SocketAddress.ip (1), LEN, 14 bytes:
    "   12 0c"  # IpAddress.v6 (2), LEN, 12 bytes:
    "      08 01"  # Uint128.low (1), varint 1: the least significant half
    # Uint128.high (2), varint 0x20010db800000000, 9 groups of 7 bits, low group first: bits 0-34
    # are zero (5 x 0x80), then bits 35-41 = 0x37, 42-48 = 0x43, 49-55 = 0x00, 56-62 = 0x20.
    "      10 80 80 80 80 80 b7 c3 80 20"
    "10 bb 03"  # SocketAddress.port (2), varint 443 = 3 * 128 + 59: 0x3b|0x80, 0x03
)

ENCODINGS: list[tuple[str, Message, bytes]] = [
    (
        "add_cluster",
        Request(
            add_cluster=Cluster(
                cluster_id="app",
                sticky_session=False,
                https_redirect=False,
                load_balancing=ROUND_ROBIN,
            )
        ),
        bytes.fromhex(
            "6a 0b"  # Request.add_cluster (13), LEN: tag 13<<3|2 = 0x6a, 11 bytes:
            "   0a 03 61 70 70"  # Cluster.cluster_id (1), LEN, "app"
            "   10 00"  # Cluster.sticky_session (2), varint false
            "   18 00"  # Cluster.https_redirect (3), varint false
            "   28 00"  # Cluster.load_balancing (5), varint ROUND_ROBIN = 0
        ),
    ),
    (
        "status",
        Request(status=Status()),
        bytes.fromhex("62 00"),  # Request.status (12), LEN: tag 12<<3|2 = 0x62, empty message
    ),
    (
        "worker_request",
        WorkerRequest(id="ID-1", content=Request(remove_cluster="x")),
        bytes.fromhex(
            "0a 04 49 44 2d 31"  # WorkerRequest.id (1), LEN, "ID-1"
            "12 03"  # WorkerRequest.content (2), LEN, 3 bytes:
            "   72 01 78"  # Request.remove_cluster (14), LEN: tag 14<<3|2 = 0x72, "x"
        ),
    ),
    (
        "response_failure",
        Response(status=FAILURE, message="boom"),
        bytes.fromhex(
            "08 02"  # Response.status (1), varint FAILURE = 2
            "12 04 62 6f 6f 6d"  # Response.message (2), LEN, "boom"
        ),
    ),
    ("socket_address_v4", LOCALHOST_8080, LOCALHOST_8080_BYTES),
    ("socket_address_v6", V6_443, V6_443_BYTES),
    (
        "add_backend",
        AddBackend(
            cluster_id="app",
            backend_id="app-0",
            address=LOCALHOST_8080,
            load_balancing_parameters=LoadBalancingParams(weight=100),
        ),
        bytes.fromhex(
            "0a 03 61 70 70"  # AddBackend.cluster_id (1), LEN, "app"
            "12 05 61 70 70 2d 30"  # AddBackend.backend_id (2), LEN, "app-0"
            "1a 0a"  # AddBackend.address (3), LEN, 10 bytes: 127.0.0.1:8080 as above
            "   0a 05 0d 01 00 00 7f 10 90 3f"
            "2a 02"  # AddBackend.load_balancing_parameters (5), LEN: tag 5<<3|2 = 0x2a, 2 bytes:
            "   08 64"  # LoadBalancingParams.weight (1), varint 100
        ),
    ),
    (
        "initial_state",
        InitialState(requests=[WorkerRequest(id="ID-1", content=Request(remove_cluster="x"))]),
        bytes.fromhex(
            "0a 0b"  # InitialState.requests (1), LEN, 11 bytes: the WorkerRequest above
            "   0a 04 49 44 2d 31 12 03 72 01 78"
        ),
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"),
    [(message, expected) for _, message, expected in ENCODINGS],
    ids=[name for name, _, _ in ENCODINGS],
)
def test_encoding_matches_hand_computed_bytes(message: Message, expected: bytes) -> None:
    assert message.SerializeToString() == expected
    decoded = type(message).FromString(expected)
    assert decoded == message
    assert decoded.IsInitialized()


def test_v4_address_is_a_big_endian_number_sent_as_fixed32() -> None:
    # 127.0.0.1 is the number 0x7f000001 (first octet most significant); fixed32 puts it on the
    # wire little-endian, so the octets appear reversed.
    assert IpAddress(v4=0x7F000001).SerializeToString() == bytes.fromhex("0d 01 00 00 7f")


def test_response_status_defaults_to_failure() -> None:
    assert Response().status == FAILURE
    assert not Response().HasField("status")


# ListenersCount as sent in the data part of the SCM message: varint length, then the message.
LISTENERS_COUNT = ListenersCount(http=["127.0.0.1:80"], tls=["127.0.0.1:443"])
LISTENERS_COUNT_DELIMITED = bytes.fromhex(
    "1d"  # varint length of the message: 29 bytes
    "0a 0c"  # ListenersCount.http (1), LEN, 12 bytes:
    "   31 32 37 2e 30 2e 30 2e 31 3a 38 30"  # "127.0.0.1:80"
    "12 0d"  # ListenersCount.tls (2), LEN, 13 bytes:
    "   31 32 37 2e 30 2e 30 2e 31 3a 34 34 33"  # "127.0.0.1:443"
)


def test_listeners_count_varint_delimited() -> None:
    payload = LISTENERS_COUNT.SerializeToString()
    assert varint(len(payload)) + payload == LISTENERS_COUNT_DELIMITED

    length, start = read_varint(LISTENERS_COUNT_DELIMITED)
    assert start + length == len(LISTENERS_COUNT_DELIMITED)
    decoded = ListenersCount.FromString(LISTENERS_COUNT_DELIMITED[start : start + length])
    assert decoded == LISTENERS_COUNT
    assert list(decoded.tcp) == [] and list(decoded.udp) == []


# ---------------------------------------------------------------------------------------------
# 3. Field numbers and enum values, copied from Sōzu's command/src/command.proto.
#
# Fields are described as name -> (number, type, label); the type is the message or enum name,
# or the scalar type as spelled in the .proto file.
# ---------------------------------------------------------------------------------------------

FieldTable = dict[str, tuple[int, str, str]]

REQUEST_TYPE: FieldTable = {
    "save_state": (1, "string", "optional"),
    "load_state": (2, "string", "optional"),
    "list_workers": (4, "ListWorkers", "optional"),
    "list_frontends": (5, "FrontendFilters", "optional"),
    "list_listeners": (6, "ListListeners", "optional"),
    "launch_worker": (7, "string", "optional"),
    "upgrade_main": (8, "UpgradeMain", "optional"),
    "upgrade_worker": (9, "uint32", "optional"),
    "subscribe_events": (10, "SubscribeEvents", "optional"),
    "reload_configuration": (11, "string", "optional"),
    "status": (12, "Status", "optional"),
    "add_cluster": (13, "Cluster", "optional"),
    "remove_cluster": (14, "string", "optional"),
    "add_http_frontend": (15, "RequestHttpFrontend", "optional"),
    "remove_http_frontend": (16, "RequestHttpFrontend", "optional"),
    "add_https_frontend": (17, "RequestHttpFrontend", "optional"),
    "remove_https_frontend": (18, "RequestHttpFrontend", "optional"),
    "add_certificate": (19, "AddCertificate", "optional"),
    "replace_certificate": (20, "ReplaceCertificate", "optional"),
    "remove_certificate": (21, "RemoveCertificate", "optional"),
    "add_tcp_frontend": (22, "RequestTcpFrontend", "optional"),
    "remove_tcp_frontend": (23, "RequestTcpFrontend", "optional"),
    "add_backend": (24, "AddBackend", "optional"),
    "remove_backend": (25, "RemoveBackend", "optional"),
    "add_http_listener": (26, "HttpListenerConfig", "optional"),
    "add_https_listener": (27, "HttpsListenerConfig", "optional"),
    "add_tcp_listener": (28, "TcpListenerConfig", "optional"),
    "remove_listener": (29, "RemoveListener", "optional"),
    "activate_listener": (30, "ActivateListener", "optional"),
    "deactivate_listener": (31, "DeactivateListener", "optional"),
    "query_cluster_by_id": (35, "string", "optional"),
    "query_clusters_by_domain": (36, "QueryClusterByDomain", "optional"),
    "query_clusters_hashes": (37, "QueryClustersHashes", "optional"),
    "query_metrics": (38, "QueryMetricsOptions", "optional"),
    "soft_stop": (39, "SoftStop", "optional"),
    "hard_stop": (40, "HardStop", "optional"),
    "configure_metrics": (41, "MetricsConfiguration", "optional"),
    "Logging": (42, "string", "optional"),
    "return_listen_sockets": (43, "ReturnListenSockets", "optional"),
    "query_certificates_from_the_state": (44, "QueryCertificatesFilters", "optional"),
    "query_certificates_from_workers": (45, "QueryCertificatesFilters", "optional"),
    "count_requests": (46, "CountRequests", "optional"),
    "update_http_listener": (47, "UpdateHttpListenerConfig", "optional"),
    "update_https_listener": (48, "UpdateHttpsListenerConfig", "optional"),
    "update_tcp_listener": (49, "UpdateTcpListenerConfig", "optional"),
    "set_max_connections_per_ip": (50, "uint64", "optional"),
    "query_max_connections_per_ip": (51, "QueryMaxConnectionsPerIp", "optional"),
    "set_health_check": (52, "SetHealthCheck", "optional"),
    "remove_health_check": (53, "string", "optional"),
    "query_health_checks": (54, "QueryHealthChecks", "optional"),
    "set_metric_detail": (55, "SetMetricDetail", "optional"),
    "add_udp_listener": (56, "UdpListenerConfig", "optional"),
    "update_udp_listener": (57, "UpdateUdpListenerConfig", "optional"),
    "add_udp_frontend": (58, "RequestUdpFrontend", "optional"),
    "remove_udp_frontend": (59, "RequestUdpFrontend", "optional"),
}

CONTENT_TYPE: FieldTable = {
    "workers": (1, "WorkerInfos", "optional"),
    "metrics": (2, "AggregatedMetrics", "optional"),
    "worker_responses": (3, "WorkerResponses", "optional"),
    "event": (4, "Event", "optional"),
    "frontend_list": (5, "ListedFrontends", "optional"),
    "listeners_list": (6, "ListenersList", "optional"),
    "worker_metrics": (7, "WorkerMetrics", "optional"),
    "available_metrics": (8, "AvailableMetrics", "optional"),
    "clusters": (9, "ClusterInformations", "optional"),
    "cluster_hashes": (10, "ClusterHashes", "optional"),
    "certificates_by_address": (11, "ListOfCertificatesByAddress", "optional"),
    "certificates_with_fingerprints": (12, "CertificatesWithFingerprints", "optional"),
    "request_counts": (13, "RequestCounts", "optional"),
    "max_connections_per_ip_limit": (14, "MaxConnectionsPerIpLimit", "optional"),
    "health_checks_list": (15, "HealthChecksList", "optional"),
    "metric_detail_status": (16, "MetricDetailStatus", "optional"),
    "worker_metric_detail_status": (17, "WorkerMetricDetailStatus", "optional"),
}

RESPONSE: FieldTable = {
    "status": (1, "ResponseStatus", "required"),
    "message": (2, "string", "required"),
    "content": (3, "ResponseContent", "optional"),
}

WORKER_REQUEST: FieldTable = {
    "id": (1, "string", "required"),
    "content": (2, "Request", "required"),
}

WORKER_RESPONSE: FieldTable = {
    "id": (1, "string", "required"),
    "status": (2, "ResponseStatus", "required"),
    "message": (3, "string", "required"),
    "content": (4, "ResponseContent", "optional"),
}

SOCKET_ADDRESS: FieldTable = {
    "ip": (1, "IpAddress", "required"),
    "port": (2, "uint32", "required"),
}

IP_ADDRESS: FieldTable = {
    "v4": (1, "fixed32", "optional"),
    "v6": (2, "Uint128", "optional"),
}

UINT128: FieldTable = {
    "low": (1, "uint64", "required"),
    "high": (2, "uint64", "required"),
}

LISTENERS_COUNT_FIELDS: FieldTable = {
    "http": (1, "string", "repeated"),
    "tls": (2, "string", "repeated"),
    "tcp": (3, "string", "repeated"),
    "udp": (4, "string", "repeated"),
}

_SCALAR_NAMES = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


def describe(field: FieldDescriptor) -> tuple[int, str, str]:
    if field.message_type is not None:
        kind = field.message_type.name
    elif field.enum_type is not None:
        kind = field.enum_type.name
    else:
        kind = _SCALAR_NAMES[field.type]
    label = "required" if field.is_required else "repeated" if field.is_repeated else "optional"
    return field.number, kind, label


def fields_of(message: Descriptor) -> FieldTable:
    return {field.name: describe(field) for field in message.fields}


def oneof_of(message: Descriptor, oneof: str) -> FieldTable:
    return {field.name: describe(field) for field in message.oneofs_by_name[oneof].fields}


@pytest.mark.parametrize(
    ("descriptor", "oneof", "expected"),
    [
        (Request.DESCRIPTOR, "request_type", REQUEST_TYPE),
        (ResponseContent.DESCRIPTOR, "content_type", CONTENT_TYPE),
        (IpAddress.DESCRIPTOR, "inner", IP_ADDRESS),
    ],
    ids=["Request.request_type", "ResponseContent.content_type", "IpAddress.inner"],
)
def test_oneof_variants_match_sozu(
    descriptor: Descriptor, oneof: str, expected: FieldTable
) -> None:
    assert oneof_of(descriptor, oneof) == expected
    # The oneof is the whole message: no field lives outside it.
    assert fields_of(descriptor) == expected


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        (Response.DESCRIPTOR, RESPONSE),
        (WorkerRequest.DESCRIPTOR, WORKER_REQUEST),
        (WorkerResponse.DESCRIPTOR, WORKER_RESPONSE),
        (SocketAddress.DESCRIPTOR, SOCKET_ADDRESS),
        (Uint128.DESCRIPTOR, UINT128),
        (ListenersCount.DESCRIPTOR, LISTENERS_COUNT_FIELDS),
    ],
    ids=[
        "Response",
        "WorkerRequest",
        "WorkerResponse",
        "SocketAddress",
        "Uint128",
        "ListenersCount",
    ],
)
def test_message_fields_match_sozu(descriptor: Descriptor, expected: FieldTable) -> None:
    assert fields_of(descriptor) == expected


ENUMS: list[tuple[EnumDescriptor, dict[str, int]]] = [
    (ResponseStatus.DESCRIPTOR, {"OK": 0, "PROCESSING": 1, "FAILURE": 2}),
    (RunState.DESCRIPTOR, {"RUNNING": 0, "STOPPING": 1, "STOPPED": 2, "NOT_ANSWERING": 3}),
    (
        EventKind.DESCRIPTOR,
        {
            "BACKEND_DOWN": 0,
            "BACKEND_UP": 1,
            "NO_AVAILABLE_BACKENDS": 2,
            "REMOVED_BACKEND_HAS_NO_CONNECTIONS": 3,
            "CLUSTER_ADDED": 4,
            "CLUSTER_REMOVED": 5,
            "FRONTEND_ADDED": 6,
            "FRONTEND_REMOVED": 7,
            "CERTIFICATE_ADDED": 8,
            "CERTIFICATE_REMOVED": 9,
            "CERTIFICATE_REPLACED": 10,
            "LISTENER_ACTIVATED": 11,
            "LISTENER_DEACTIVATED": 12,
            "CONFIGURATION_RELOADED": 13,
            "WORKER_KILLED": 14,
            "WORKER_RELAUNCHED": 15,
            "LOGGING_LEVEL_CHANGED": 16,
            "METRICS_CONFIGURED": 17,
            "LISTENER_UPDATED": 18,
            "STATE_LOADED": 19,
            "STATE_SAVED": 20,
            "LISTENER_ADDED": 21,
            "LISTENER_REMOVED": 22,
            "SOZU_STOP_REQUESTED": 23,
            "MAIN_UPGRADED": 24,
            "WORKER_UPGRADED": 25,
            "EVENTS_SUBSCRIBED": 26,
            "HEALTH_CHECK_HEALTHY": 27,
            "HEALTH_CHECK_UNHEALTHY": 28,
            "CLUSTER_RECOVERED": 29,
            "METRIC_DETAIL_CHANGED": 30,
        },
    ),
    (
        LoadBalancingAlgorithms.DESCRIPTOR,
        {
            "ROUND_ROBIN": 0,
            "RANDOM": 1,
            "LEAST_LOADED": 2,
            "POWER_OF_TWO": 3,
            "HRW": 4,
            "MAGLEV": 5,
        },
    ),
    (PathRuleKind.DESCRIPTOR, {"PREFIX": 0, "REGEX": 1, "EQUALS": 2}),
    (RulePosition.DESCRIPTOR, {"PRE": 0, "POST": 1, "TREE": 2}),
    (
        TlsVersion.DESCRIPTOR,
        {"SSL_V2": 0, "SSL_V3": 1, "TLS_V1_0": 2, "TLS_V1_1": 3, "TLS_V1_2": 4, "TLS_V1_3": 5},
    ),
]


@pytest.mark.parametrize(
    ("descriptor", "expected"), ENUMS, ids=[descriptor.name for descriptor, _ in ENUMS]
)
def test_enum_values_match_sozu(descriptor: EnumDescriptor, expected: dict[str, int]) -> None:
    assert {value.name: value.number for value in descriptor.values} == expected


def test_defaults_that_matter_on_the_wire() -> None:
    # A frontend added without a position lands in the hostname tree; a path rule without a kind
    # is a prefix; a cluster without an algorithm is round robin.
    http_frontend = RequestHttpFrontend()
    assert http_frontend.position == TREE
    assert http_frontend.path.kind == PREFIX
    assert Cluster().load_balancing == ROUND_ROBIN


# ---------------------------------------------------------------------------------------------
# 4. Classes compiled at test time from the proto text talk to the committed bindings.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_schema(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    """proto/command.proto compiled by protoc, as a FileDescriptorProto without source info."""
    require_grpc_tools()
    out = tmp_path_factory.mktemp("schema") / "command.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--descriptor_set_out={out}",
            "command.proto",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert len(files) == 1
    schema = files[0]
    schema.ClearField("source_code_info")
    return schema


@pytest.fixture(scope="module")
def text_pool(text_schema: descriptor_pb2.FileDescriptorProto) -> descriptor_pool.DescriptorPool:
    """A private pool, so the text-built classes never clash with the committed ones."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_schema)
    return pool


def strip_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """Drop the derived json_name that protoc adds to a descriptor set but not to _pb2 files."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        strip_json_names(message.nested_type)


def test_bindings_embed_the_text_schema(text_schema: descriptor_pb2.FileDescriptorProto) -> None:
    embedded = descriptor_pb2.FileDescriptorProto.FromString(Request.DESCRIPTOR.file.serialized_pb)
    expected = descriptor_pb2.FileDescriptorProto()
    expected.CopyFrom(text_schema)
    strip_json_names(expected.message_type)
    assert embedded == expected


ROUND_TRIPS: list[tuple[str, str]] = [
    (
        "WorkerRequest",
        """
        id: "SAVE-7"
        content {
          add_https_listener {
            address { ip { v6 { low: 1 high: 2306139568115548160 } } port: 8443 }
            public_address { ip { v4: 2130706433 } port: 443 }
            expect_proxy: false
            sticky_name: "SOZUBALANCEID"
            front_timeout: 60 back_timeout: 30 connect_timeout: 3 request_timeout: 10
            active: true
            versions: TLS_V1_2 versions: TLS_V1_3
            send_tls13_tickets: 4
            alpn_protocols: "h2" alpn_protocols: "http/1.1"
            answers { key: "404" value: "nothing here" }
            answers { key: "503" value: "busy" }
            hsts { enabled: true max_age: 31536000 include_subdomains: true }
          }
        }
        """,
    ),
    (
        "Request",
        """
        add_http_frontend {
          cluster_id: "app"
          address { ip { v4: 2130706433 } port: 8080 }
          hostname: "*.example.com"
          path { kind: REGEX value: "^/api/(.*)$" }
          method: "GET"
          position: PRE
          tags { key: "owner" value: "team-a" }
          redirect: PERMANENT redirect_scheme: USE_HTTPS
          rewrite_path: "/$PATH[1]"
          headers { position: BOTH key: "X-Via" val: "sozu" }
        }
        """,
    ),
    (
        "Request",
        """
        add_cluster {
          cluster_id: "dns" sticky_session: false https_redirect: false
          load_balancing: MAGLEV
          udp {
            affinity_key: SOURCE_IP_PORT
            health { mode: UDP_PROBE udp_probe_payload: "\\x00\\xffping" }
          }
          health_check { uri: "/health" interval: 10 timeout: 5 healthy_threshold: 3
                         unhealthy_threshold: 3 expected_status: 0 }
        }
        """,
    ),
    (
        "Response",
        """
        status: OK message: "ok"
        content {
          metrics {
            main { key: "sozu.command.ok" value { count: -3 } }
            proxying { key: "http.latency" value { percentiles { samples: 1 p_50: 2 p_90: 3
              p_99: 4 p_99_9: 5 p_99_99: 6 p_99_999: 7 p_100: 8 sum: 9 } } }
            clusters { key: "app" value { backends { backend_id: "app-0"
              metrics { key: "bytes_out" value { gauge: 12345678901 } } } } }
          }
        }
        """,
    ),
    (
        "WorkerResponse",
        """
        id: "ID-9" status: PROCESSING message: "0"
        content { event { kind: BACKEND_DOWN cluster_id: "app" backend_id: "app-0"
                          address { ip { v4: 167772161 } port: 80 } } }
        """,
    ),
    (
        "Response",
        """
        status: OK message: ""
        content { workers { vec { id: 0 pid: 4242 run_state: RUNNING }
                            vec { id: 1 pid: -1 run_state: NOT_ANSWERING } } }
        """,
    ),
]


@pytest.mark.parametrize(
    ("name", "text"),
    ROUND_TRIPS,
    ids=[f"{name}-{index}" for index, (name, _) in enumerate(ROUND_TRIPS)],
)
def test_text_compiled_classes_round_trip_with_bindings(
    text_pool: descriptor_pool.DescriptorPool, name: str, text: str
) -> None:
    ours_class: type[Message] = {
        "Request": Request,
        "Response": Response,
        "WorkerRequest": WorkerRequest,
        "WorkerResponse": WorkerResponse,
    }[name]
    theirs_class = message_factory.GetMessageClass(
        text_pool.FindMessageTypeByName(f"command.{name}")
    )
    assert theirs_class is not ours_class

    theirs = text_format.Parse(text, theirs_class())
    ours = text_format.Parse(text, ours_class())
    assert theirs.IsInitialized() and ours.IsInitialized()

    wire = theirs.SerializeToString(deterministic=True)
    assert ours.SerializeToString(deterministic=True) == wire

    # text-built bytes -> our classes -> bytes, and back the other way.
    from_theirs = ours_class.FromString(wire)
    assert from_theirs == ours
    assert from_theirs.SerializeToString(deterministic=True) == wire
    assert theirs_class.FromString(ours.SerializeToString(deterministic=True)) == theirs
