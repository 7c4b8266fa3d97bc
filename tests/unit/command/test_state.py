"""ConfigState: Sōzu's acceptance rules, request order, diff, queries, and a state machine."""

from __future__ import annotations

import datetime
import functools
import hashlib
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sozu.command import proto
from sozu.command.addresses import to_proto
from sozu.command.certificate import fingerprint_hex, names, split_chain
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    AlpnProtocols,
    CertificateAndKey,
    Cluster,
    CustomHttpAnswers,
    DeactivateListener,
    FrontendFilters,
    HealthCheckConfig,
    HstsConfig,
    HttpListenerConfig,
    HttpsListenerConfig,
    IpAddress,
    ListenerType,
    LoadBalancingParams,
    PathRule,
    PathRuleKind,
    QueryCertificatesFilters,
    RemoveBackend,
    RemoveCertificate,
    RemoveListener,
    ReplaceCertificate,
    Request,
    RequestHttpFrontend,
    RequestTcpFrontend,
    RequestUdpFrontend,
    SetHealthCheck,
    SocketAddress,
    Status,
    TcpListenerConfig,
    TlsVersion,
    UdpListenerConfig,
    UpdateHttpListenerConfig,
    UpdateHttpsListenerConfig,
    UpdateTcpListenerConfig,
    UpdateUdpListenerConfig,
)
from sozu.command.state import (
    Applied,
    ConfigState,
    StateError,
    StateErrorKind,
    address_key_text,
    address_text,
    canonical,
    frontend_key,
)

# --- builders ------------------------------------------------------------------------------


def req(**kwargs: Any) -> Request:
    return Request(**kwargs)


def http_listener(address: str, **kwargs: Any) -> Request:
    return req(add_http_listener=HttpListenerConfig(address=to_proto(address), **kwargs))


def https_listener(address: str, **kwargs: Any) -> Request:
    return req(add_https_listener=HttpsListenerConfig(address=to_proto(address), **kwargs))


def tcp_listener(address: str, **kwargs: Any) -> Request:
    return req(add_tcp_listener=TcpListenerConfig(address=to_proto(address), **kwargs))


def udp_listener(address: str, **kwargs: Any) -> Request:
    return req(add_udp_listener=UdpListenerConfig(address=to_proto(address), **kwargs))


def activate(address: str, kind: ListenerType.ValueType) -> Request:
    return req(activate_listener=ActivateListener(address=to_proto(address), proxy=kind))


def deactivate(address: str, kind: ListenerType.ValueType) -> Request:
    return req(deactivate_listener=DeactivateListener(address=to_proto(address), proxy=kind))


def remove_listener(address: str, kind: ListenerType.ValueType) -> Request:
    return req(remove_listener=RemoveListener(address=to_proto(address), proxy=kind))


def cluster(cluster_id: str, **kwargs: Any) -> Request:
    return req(add_cluster=Cluster(cluster_id=cluster_id, **kwargs))


def http_front(
    address: str,
    hostname: str,
    cluster_id: str | None = "app",
    path: str = "/",
    kind: PathRuleKind.ValueType = PathRuleKind.PREFIX,
    **kwargs: Any,
) -> RequestHttpFrontend:
    front = RequestHttpFrontend(
        address=to_proto(address),
        hostname=hostname,
        path=PathRule(kind=kind, value=path),
        **kwargs,
    )
    if cluster_id is not None:
        front.cluster_id = cluster_id
    return front


def tcp_front(cluster_id: str, address: str, **tags: str) -> RequestTcpFrontend:
    return RequestTcpFrontend(cluster_id=cluster_id, address=to_proto(address), tags=tags)


def udp_front(cluster_id: str, address: str, **tags: str) -> RequestUdpFrontend:
    return RequestUdpFrontend(cluster_id=cluster_id, address=to_proto(address), tags=tags)


def backend(cluster_id: str, backend_id: str, address: str, **kwargs: Any) -> Request:
    return req(
        add_backend=AddBackend(
            cluster_id=cluster_id, backend_id=backend_id, address=to_proto(address), **kwargs
        )
    )


def remove_backend(cluster_id: str, backend_id: str, address: str) -> Request:
    return req(
        remove_backend=RemoveBackend(
            cluster_id=cluster_id, backend_id=backend_id, address=to_proto(address)
        )
    )


@functools.cache
def certs() -> tuple[CertificateAndKey, ...]:
    """Three leaf certificates of one trustme CA: a.example (+www), b.example, c.example."""
    ca = trustme.CA()
    out = []
    for hostnames in (("a.example", "www.a.example"), ("b.example",), ("c.example",)):
        leaf = ca.issue_cert(*hostnames)
        out.append(
            CertificateAndKey(
                certificate=leaf.cert_chain_pems[0].bytes().decode(),
                certificate_chain=[ca.cert_pem.bytes().decode()],
                key=leaf.private_key_pem.bytes().decode(),
                versions=[TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3],
            )
        )
    return tuple(out)


@functools.cache
def cn_only_cert() -> str:
    """A self-signed certificate with a Common Name and no subjectAltName."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy.example")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def add_cert(address: str, index: int, **kwargs: Any) -> Request:
    return req(
        add_certificate=AddCertificate(
            address=to_proto(address), certificate=certs()[index], **kwargs
        )
    )


def fp(index: int) -> str:
    return fingerprint_hex(certs()[index].certificate)


def applied(state: ConfigState, *requests: Request) -> ConfigState:
    for request in requests:
        state.apply(request)
    return state


def refused(state: ConfigState, request: Request, kind: StateErrorKind) -> StateError:
    before = state.copy()
    with pytest.raises(StateError) as caught:
        state.apply(request)
    assert caught.value.kind is kind
    assert state == before, "a refused request must leave the state unchanged"
    return caught.value


def variants(requests: list[Request]) -> list[str]:
    return [str(r.WhichOneof("request_type")) for r in requests]


def wire(request: Message) -> bytes:
    return request.SerializePartialToString(deterministic=True)


# --- certificates helpers ------------------------------------------------------------------


def test_fingerprint_is_sha256_of_leaf_der() -> None:
    pem = certs()[0].certificate
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    assert fingerprint_hex(pem) == hashlib.sha256(der).hexdigest()
    bundle = pem + certs()[1].certificate
    assert fingerprint_hex(bundle) == fp(0)  # the leaf is the first block
    assert split_chain(bundle) == [pem.strip(), certs()[1].certificate.strip()]


def test_names_prefer_san_and_fall_back_to_common_name() -> None:
    assert names(certs()[0].certificate) == ["a.example", "www.a.example"]
    assert names(cn_only_cert()) == ["legacy.example"]


# --- addresses and keys --------------------------------------------------------------------


def test_address_text_follows_rust_display() -> None:
    assert address_text(to_proto("10.0.0.1:80")) == "10.0.0.1:80"
    assert address_text(to_proto("[::1]:443")) == "[::1]:443"
    assert address_key_text((6, (0xFFFF << 32) | 0x7F000001, 80)) == "[::ffff:127.0.0.1]:80"


def test_frontend_key_marks_path_kind_and_method() -> None:
    assert frontend_key(http_front("0.0.0.0:80", "x.example", path="/api")) == (
        "0.0.0.0:80;x.example;P/api"
    )
    regex = http_front("0.0.0.0:80", "x.example", path="^/a", kind=PathRuleKind.REGEX)
    assert frontend_key(regex) == "0.0.0.0:80;x.example;R^/a"
    equals = http_front("0.0.0.0:80", "x", path="/a", kind=PathRuleKind.EQUALS, method="GET")
    assert frontend_key(equals) == "0.0.0.0:80;x;=/a;GET"


@pytest.mark.parametrize(
    "address",
    [
        SocketAddress(ip=IpAddress(v4=1), port=70000),
        SocketAddress(port=80),
    ],
    ids=["port-out-of-range", "no-ip"],
)
def test_invalid_addresses_are_refused(address: SocketAddress) -> None:
    state = ConfigState()
    refused(
        state,
        req(add_http_listener=HttpListenerConfig(address=address)),
        StateErrorKind.INVALID_VALUE,
    )
    bad_backend = AddBackend(cluster_id="a", backend_id="b", address=address)
    refused(state, req(add_backend=bad_backend), StateErrorKind.INVALID_VALUE)


# --- listeners -----------------------------------------------------------------------------


def test_duplicate_listener_is_refused_per_kind() -> None:
    state = applied(ConfigState(), http_listener("0.0.0.0:80"))
    error = refused(state, http_listener("0.0.0.0:80", sticky_name="X"), StateErrorKind.EXISTS)
    assert "HTTP listener 0.0.0.0:80 already exists" in str(error)
    # The same address for another kind is another listener.
    assert state.apply(tcp_listener("0.0.0.0:80")) is Applied.CHANGED


def test_listener_activation_and_removal() -> None:
    state = applied(ConfigState(), https_listener("0.0.0.0:443"))
    assert state.apply(activate("0.0.0.0:443", ListenerType.HTTPS)) is Applied.CHANGED
    assert state.apply(activate("0.0.0.0:443", ListenerType.HTTPS)) is Applied.UNCHANGED
    assert variants(state.requests()) == ["add_https_listener", "activate_listener"]
    assert state.apply(deactivate("0.0.0.0:443", ListenerType.HTTPS)) is Applied.CHANGED
    assert variants(state.requests()) == ["add_https_listener"]
    refused(state, activate("0.0.0.0:443", ListenerType.HTTP), StateErrorKind.NOT_FOUND)
    refused(state, remove_listener("0.0.0.0:443", ListenerType.TCP), StateErrorKind.NOT_FOUND)
    assert state.apply(remove_listener("0.0.0.0:443", ListenerType.HTTPS)) is Applied.CHANGED
    assert state == ConfigState()
    refused(state, remove_listener("0.0.0.0:443", ListenerType.HTTPS), StateErrorKind.NOT_FOUND)


def test_update_listener_patches_only_given_fields() -> None:
    state = applied(ConfigState(), http_listener("0.0.0.0:80", sticky_name="S", front_timeout=5))
    patch = UpdateHttpListenerConfig(
        address=to_proto("0.0.0.0:80"),
        back_timeout=7,
        h2_max_ping_per_window=3,
        http_answers=CustomHttpAnswers(answer_404="gone"),
        answers={"503": "busy", "504": ""},
        public_address=to_proto("1.2.3.4:80"),
    )
    assert state.apply(req(update_http_listener=patch)) is Applied.CHANGED
    listener = state.listener(ListenerType.HTTP, to_proto("0.0.0.0:80"))
    assert isinstance(listener, HttpListenerConfig)
    assert (listener.sticky_name, listener.front_timeout, listener.back_timeout) == ("S", 5, 7)
    assert listener.h2_max_ping_per_window == 3
    assert listener.http_answers.answer_404 == "gone"
    assert dict(listener.answers) == {"503": "busy"}  # empty bodies are not stored
    assert address_text(listener.public_address) == "1.2.3.4:80"
    merge = UpdateHttpListenerConfig(
        address=to_proto("0.0.0.0:80"), http_answers=CustomHttpAnswers(answer_503="x")
    )
    state.apply(req(update_http_listener=merge))
    listener = state.listener(ListenerType.HTTP, to_proto("0.0.0.0:80"))
    assert isinstance(listener, HttpListenerConfig)
    assert (listener.http_answers.answer_404, listener.http_answers.answer_503) == ("gone", "x")
    assert state.apply(req(update_http_listener=merge)) is Applied.UNCHANGED


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (UpdateHttpsListenerConfig(h2_max_glitch_count=0), "h2_max_glitch_count must be >= 1"),
        (UpdateHttpsListenerConfig(h2_stream_shrink_ratio=1), "must be >= 2"),
        (UpdateHttpsListenerConfig(sozu_id_header="X Id"), "not a valid HTTP header name"),
        (UpdateHttpsListenerConfig(sozu_id_header=""), "not a valid HTTP header name"),
        (
            UpdateHttpsListenerConfig(alpn_protocols=AlpnProtocols(values=["h3"])),
            "ALPN protocol 'h3'",
        ),
        (UpdateHttpsListenerConfig(hsts=HstsConfig(max_age=5)), "whether HSTS is enabled"),
    ],
)
def test_invalid_listener_updates_are_refused(
    patch: UpdateHttpsListenerConfig, message: str
) -> None:
    state = applied(ConfigState(), https_listener("0.0.0.0:443"))
    patch.address.CopyFrom(to_proto("0.0.0.0:443"))
    error = refused(state, req(update_https_listener=patch), StateErrorKind.INVALID_VALUE)
    assert message in str(error)


def test_https_update_sets_alpn_hsts_and_graceful_zero() -> None:
    state = applied(ConfigState(), https_listener("0.0.0.0:443", alpn_protocols=["http/1.1"]))
    patch = UpdateHttpsListenerConfig(
        address=to_proto("0.0.0.0:443"),
        alpn_protocols=AlpnProtocols(values=["h2", "http/1.1"]),
        hsts=HstsConfig(enabled=True, max_age=60),
        h2_graceful_shutdown_deadline_seconds=0,
        sozu_id_header="X-Sozu-Id",
    )
    state.apply(req(update_https_listener=patch))
    listener = state.listener(ListenerType.HTTPS, to_proto("0.0.0.0:443"))
    assert isinstance(listener, HttpsListenerConfig)
    assert list(listener.alpn_protocols) == ["h2", "http/1.1"]
    assert listener.hsts.max_age == 60
    assert listener.h2_graceful_shutdown_deadline_seconds == 0
    assert listener.sozu_id_header == "X-Sozu-Id"


def test_tcp_and_udp_updates() -> None:
    state = applied(ConfigState(), tcp_listener("0.0.0.0:9000"), udp_listener("0.0.0.0:53"))
    tcp_patch = UpdateTcpListenerConfig(address=to_proto("0.0.0.0:9000"), expect_proxy=True)
    assert state.apply(req(update_tcp_listener=tcp_patch)) is Applied.CHANGED
    udp_patch = UpdateUdpListenerConfig(address=to_proto("0.0.0.0:53"), max_flows=9)
    assert state.apply(req(update_udp_listener=udp_patch)) is Applied.CHANGED
    tcp = state.listener(ListenerType.TCP, to_proto("0.0.0.0:9000"))
    udp = state.listener(ListenerType.UDP, to_proto("0.0.0.0:53"))
    assert isinstance(tcp, TcpListenerConfig) and tcp.expect_proxy
    assert isinstance(udp, UdpListenerConfig) and udp.max_flows == 9
    missing = UpdateTcpListenerConfig(address=to_proto("0.0.0.0:9001"))
    refused(state, req(update_tcp_listener=missing), StateErrorKind.NOT_FOUND)


@pytest.mark.parametrize(
    ("patch_type", "config_type"),
    [
        (UpdateHttpListenerConfig, HttpListenerConfig),
        (UpdateHttpsListenerConfig, HttpsListenerConfig),
        (UpdateTcpListenerConfig, TcpListenerConfig),
        (UpdateUdpListenerConfig, UdpListenerConfig),
    ],
)
def test_every_patch_field_exists_in_its_listener(patch_type: Any, config_type: Any) -> None:
    config_fields = set(config_type.DESCRIPTOR.fields_by_name)
    assert set(patch_type.DESCRIPTOR.fields_by_name) <= config_fields


# --- clusters and backends -----------------------------------------------------------------


def test_add_cluster_is_an_upsert() -> None:
    state = ConfigState()
    assert state.apply(cluster("app")) is Applied.CHANGED
    assert state.apply(cluster("app")) is Applied.UNCHANGED
    assert state.apply(cluster("app", sticky_session=True)) is Applied.CHANGED
    assert state.cluster_ids() == ["app"]
    found = state.cluster("app")
    assert found is not None and found.sticky_session
    refused(state, req(remove_cluster="nope"), StateErrorKind.NOT_FOUND)
    assert state.apply(req(remove_cluster="app")) is Applied.CHANGED
    assert state.cluster("app") is None


def test_health_checks_are_validated_set_and_removed() -> None:
    state = ConfigState()
    bad = HealthCheckConfig(uri="health", interval=1, timeout=1)
    refused(state, cluster("app", health_check=bad), StateErrorKind.INVALID_VALUE)
    crlf = HealthCheckConfig(uri="/h\r\nX: y")
    refused(state, cluster("app", health_check=crlf), StateErrorKind.INVALID_VALUE)
    good = HealthCheckConfig(uri="/health")
    set_check = req(set_health_check=SetHealthCheck(cluster_id="app", config=good))
    refused(state, set_check, StateErrorKind.NOT_FOUND)
    state.apply(cluster("app"))
    zero = SetHealthCheck(cluster_id="app", config=HealthCheckConfig(uri="/", interval=0))
    refused(state, req(set_health_check=zero), StateErrorKind.INVALID_VALUE)
    assert state.apply(set_check) is Applied.CHANGED
    assert dict(state.health_checks().map)["app"].interval == 10  # proto default
    assert state.apply(req(remove_health_check="app")) is Applied.CHANGED
    assert state.apply(req(remove_health_check="app")) is Applied.UNCHANGED
    refused(state, req(remove_health_check="nope"), StateErrorKind.NOT_FOUND)


def test_add_backend_is_an_upsert_on_id_and_address() -> None:
    state = ConfigState()
    assert state.apply(backend("app", "b1", "10.0.0.1:80")) is Applied.CHANGED
    assert state.apply(backend("app", "b1", "10.0.0.1:80")) is Applied.UNCHANGED
    weight = LoadBalancingParams(weight=5)
    upsert = backend("app", "b1", "10.0.0.1:80", load_balancing_parameters=weight)
    assert state.apply(upsert) is Applied.CHANGED
    assert state.count_backends() == 1
    assert state.backends("app")[0].load_balancing_parameters.weight == 5
    state.apply(backend("app", "b1", "10.0.0.2:80"))  # same id, another address
    assert state.count_backends() == 2
    refused(state, remove_backend("app", "b1", "10.0.0.3:80"), StateErrorKind.NOT_FOUND)
    refused(state, remove_backend("other", "b1", "10.0.0.1:80"), StateErrorKind.NOT_FOUND)
    state.apply(remove_backend("app", "b1", "10.0.0.1:80"))
    state.apply(remove_backend("app", "b1", "10.0.0.2:80"))
    assert state == ConfigState()


def test_removing_a_cluster_keeps_its_backends_and_frontends() -> None:
    # As in Sōzu, the state has no referential integrity: each map is its own.
    state = applied(
        ConfigState(),
        cluster("app"),
        backend("app", "b", "10.0.0.1:80"),
        req(add_tcp_frontend=tcp_front("app", "0.0.0.0:9000")),
        req(remove_cluster="app"),
    )
    assert state.count_backends() == 1 and state.count_frontends() == 1


# --- frontends -----------------------------------------------------------------------------


def test_http_frontends_are_unique_per_route() -> None:
    state = ConfigState()
    front = http_front("0.0.0.0:80", "x.example", path="/api")
    assert state.apply(req(add_http_frontend=front)) is Applied.CHANGED
    other_cluster = http_front("0.0.0.0:80", "x.example", cluster_id="other", path="/api")
    refused(state, req(add_http_frontend=other_cluster), StateErrorKind.EXISTS)
    # The same route on HTTPS, with a method, or another path kind is another frontend.
    state.apply(req(add_https_frontend=front))
    state.apply(
        req(add_http_frontend=http_front("0.0.0.0:80", "x.example", path="/api", method="GET"))
    )
    equals = http_front("0.0.0.0:80", "x.example", path="/api", kind=PathRuleKind.EQUALS)
    state.apply(req(add_http_frontend=equals))
    assert state.count_frontends() == 4
    # Removal matches the route, not the rest of the frontend.
    assert state.apply(req(remove_http_frontend=other_cluster)) is Applied.CHANGED
    refused(state, req(remove_http_frontend=other_cluster), StateErrorKind.NOT_FOUND)
    refused(state, req(remove_https_frontend=equals), StateErrorKind.NOT_FOUND)


def test_tcp_frontends_duplicate_and_removal_by_address() -> None:
    state = ConfigState()
    state.apply(req(add_tcp_frontend=tcp_front("app", "0.0.0.0:9000")))
    refused(state, req(add_tcp_frontend=tcp_front("app", "0.0.0.0:9000")), StateErrorKind.EXISTS)
    # Sōzu compares whole frontends: other tags on the same address are another frontend.
    state.apply(req(add_tcp_frontend=tcp_front("app", "0.0.0.0:9000", team="x")))
    state.apply(req(add_udp_frontend=udp_front("app", "0.0.0.0:53")))
    assert state.count_frontends() == 3
    # A removal takes every frontend of the cluster on that address.
    state.apply(req(remove_tcp_frontend=tcp_front("app", "0.0.0.0:9000")))
    assert state.count_frontends() == 1
    refused(
        state, req(remove_tcp_frontend=tcp_front("app", "0.0.0.0:9000")), StateErrorKind.NOT_FOUND
    )
    refused(
        state, req(remove_udp_frontend=udp_front("app", "0.0.0.0:54")), StateErrorKind.NOT_FOUND
    )
    state.apply(req(remove_udp_frontend=udp_front("app", "0.0.0.0:53")))
    assert state == ConfigState()


# --- certificates --------------------------------------------------------------------------


def test_add_certificate_resolves_names_and_skips_duplicates() -> None:
    state = ConfigState()
    assert state.apply(add_cert("0.0.0.0:443", 0)) is Applied.CHANGED
    assert state.apply(add_cert("0.0.0.0:443", 0)) is Applied.UNCHANGED
    stored = state.certificates_at(to_proto("0.0.0.0:443"))
    assert list(stored) == [fp(0)]
    assert list(stored[fp(0)].names) == ["a.example", "www.a.example"]
    # Explicit names win over the certificate's.
    explicit = AddCertificate(address=to_proto("0.0.0.0:8443"), certificate=certs()[0])
    explicit.certificate.names.append("override.example")
    state.apply(req(add_certificate=explicit))
    assert list(state.certificates_at(to_proto("0.0.0.0:8443"))[fp(0)].names) == [
        "override.example"
    ]


def test_certificate_requests_with_bad_input_are_refused() -> None:
    state = applied(ConfigState(), add_cert("0.0.0.0:443", 0))
    garbage = CertificateAndKey(certificate="not a pem", key="k")
    bad = req(add_certificate=AddCertificate(address=to_proto("0.0.0.0:443"), certificate=garbage))
    refused(state, bad, StateErrorKind.CERTIFICATE)
    bad_fp = RemoveCertificate(address=to_proto("0.0.0.0:443"), fingerprint="xyz")
    refused(state, req(remove_certificate=bad_fp), StateErrorKind.CERTIFICATE)
    replace_bad = ReplaceCertificate(
        address=to_proto("0.0.0.0:443"), new_certificate=garbage, old_fingerprint=fp(0)
    )
    refused(state, req(replace_certificate=replace_bad), StateErrorKind.CERTIFICATE)
    nowhere = ReplaceCertificate(
        address=to_proto("0.0.0.0:1"), new_certificate=certs()[1], old_fingerprint=fp(0)
    )
    refused(state, req(replace_certificate=nowhere), StateErrorKind.NOT_FOUND)


def test_replace_and_remove_certificate() -> None:
    state = applied(ConfigState(), add_cert("0.0.0.0:443", 0))
    replace = ReplaceCertificate(
        address=to_proto("0.0.0.0:443"),
        new_certificate=certs()[1],
        old_fingerprint=fp(0).upper(),  # hex in either case, as Sōzu's hex decoder
    )
    assert state.apply(req(replace_certificate=replace)) is Applied.CHANGED
    stored = state.certificates_at(to_proto("0.0.0.0:443"))
    assert list(stored) == [fp(1)]
    assert list(stored[fp(1)].names) == ["b.example"]  # resolved, unlike Sōzu
    absent = RemoveCertificate(address=to_proto("0.0.0.0:443"), fingerprint=fp(2))
    assert state.apply(req(remove_certificate=absent)) is Applied.UNCHANGED  # Sōzu: Ok
    present = RemoveCertificate(address=to_proto("0.0.0.0:443"), fingerprint=fp(1))
    assert state.apply(req(remove_certificate=present)) is Applied.CHANGED
    assert state == ConfigState()


def test_certificate_queries() -> None:
    state = applied(ConfigState(), add_cert("0.0.0.0:443", 0), add_cert("[::]:443", 1))
    assert sorted(state.certificates().certs) == sorted([fp(0), fp(1)])
    by_domain = state.certificates(QueryCertificatesFilters(domain="www.a.example"))
    assert list(by_domain.certs) == [fp(0)]
    by_fp = state.certificates(QueryCertificatesFilters(fingerprint=fp(1)))
    assert list(by_fp.certs) == [fp(1)]
    assert not state.certificates(QueryCertificatesFilters(domain="a")).certs


# --- requests that are not state changes ---------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        req(status=Status()),
        req(Logging="debug"),
        req(query_cluster_by_id="app"),
        req(set_max_connections_per_ip=3),
        req(configure_metrics=0),
    ],
    ids=lambda r: r.WhichOneof("request_type"),
)
def test_query_and_runtime_requests_are_ignored(request_: Request) -> None:
    state = applied(ConfigState(), cluster("app"))
    before = state.copy()
    assert state.apply(request_) is Applied.IGNORED
    assert state == before


@pytest.mark.parametrize(
    "request_",
    [req(save_state="/tmp/x"), req(list_listeners=proto.ListListeners()), req(upgrade_worker=1)],
    ids=lambda r: r.WhichOneof("request_type"),
)
def test_supervisor_requests_are_undispatchable(request_: Request) -> None:
    refused(ConfigState(), request_, StateErrorKind.UNDISPATCHABLE)


def test_empty_request_is_refused() -> None:
    refused(ConfigState(), Request(), StateErrorKind.EMPTY_REQUEST)


# --- requests(), order and rebuild ----------------------------------------------------------


def rich_state() -> ConfigState:
    return applied(
        ConfigState(),
        backend("b", "z", "10.0.0.9:80"),
        backend("a", "y", "[::1]:80"),
        backend("a", "x", "10.0.0.2:80", sticky_id="s"),
        backend("a", "x", "10.0.0.1:80", sticky_id="s"),
        req(add_udp_frontend=udp_front("a", "0.0.0.0:53")),
        req(add_tcp_frontend=tcp_front("b", "0.0.0.0:9001")),
        req(add_tcp_frontend=tcp_front("a", "0.0.0.0:9000")),
        req(add_https_frontend=http_front("0.0.0.0:443", "x.example", cluster_id="a")),
        add_cert("0.0.0.0:443", 1),
        add_cert("0.0.0.0:443", 0),
        add_cert("0.0.0.0:8443", 2),
        req(add_http_frontend=http_front("0.0.0.0:80", "y.example", cluster_id=None)),
        req(add_http_frontend=http_front("0.0.0.0:80", "x.example", cluster_id="a")),
        cluster("b"),
        cluster("a", health_check=HealthCheckConfig(uri="/h")),
        udp_listener("0.0.0.0:53", active=True),
        tcp_listener("0.0.0.0:9000"),
        https_listener("0.0.0.0:443"),
        activate("0.0.0.0:443", ListenerType.HTTPS),
        http_listener("[::]:80"),
        http_listener("10.0.0.1:80"),
        activate("10.0.0.1:80", ListenerType.HTTP),
        http_listener("9.0.0.1:8080"),
    )


def summary(request: Request) -> str:
    kind = request.WhichOneof("request_type")
    body = getattr(request, str(kind))
    if kind in ("add_http_listener", "add_https_listener", "add_tcp_listener", "add_udp_listener"):
        return f"{kind} {address_text(body.address)}"
    if kind == "activate_listener":
        return f"{kind} {address_text(body.address)} {body.proxy}"
    if kind == "add_cluster":
        return f"{kind} {body.cluster_id}"
    if kind in ("add_http_frontend", "add_https_frontend"):
        return f"{kind} {frontend_key(body)}"
    if kind == "add_certificate":
        return (
            f"{kind} {address_text(body.address)} {fingerprint_hex(body.certificate.certificate)}"
        )
    if kind in ("add_tcp_frontend", "add_udp_frontend"):
        return f"{kind} {body.cluster_id} {address_text(body.address)}"
    assert kind == "add_backend"
    return f"{kind} {body.cluster_id} {body.backend_id} {address_text(body.address)}"


def test_requests_follow_sozu_order() -> None:
    cert_0443 = sorted([fp(0), fp(1)])
    assert [summary(r) for r in rich_state().requests()] == [
        # Listeners by kind, each kind sorted by address (IPv4 before IPv6).
        "add_http_listener 9.0.0.1:8080",
        "add_http_listener 10.0.0.1:80",
        "activate_listener 10.0.0.1:80 0",
        "add_http_listener [::]:80",
        "add_https_listener 0.0.0.0:443",
        "activate_listener 0.0.0.0:443 1",
        "add_tcp_listener 0.0.0.0:9000",
        "add_udp_listener 0.0.0.0:53",
        "activate_listener 0.0.0.0:53 3",
        "add_cluster a",
        "add_cluster b",
        "add_http_frontend 0.0.0.0:80;x.example;P/",
        "add_http_frontend 0.0.0.0:80;y.example;P/",
        f"add_certificate 0.0.0.0:443 {cert_0443[0]}",
        f"add_certificate 0.0.0.0:443 {cert_0443[1]}",
        f"add_certificate 0.0.0.0:8443 {fp(2)}",
        "add_https_frontend 0.0.0.0:443;x.example;P/",
        "add_tcp_frontend a 0.0.0.0:9000",
        "add_tcp_frontend b 0.0.0.0:9001",
        "add_udp_frontend a 0.0.0.0:53",
        "add_backend a x 10.0.0.1:80",
        "add_backend a x 10.0.0.2:80",
        "add_backend a y [::1]:80",
        "add_backend b z 10.0.0.9:80",
    ]


def test_rebuild_from_requests_gives_an_equal_state() -> None:
    state = rich_state()
    assert ConfigState.from_requests(state.requests()) == state
    initial = state.initial_state()
    assert [r.id for r in initial.requests][:2] == ["SAVE-0", "SAVE-1"]
    assert [r.content for r in initial.requests] == state.requests()


def test_stored_messages_are_canonical_and_independent() -> None:
    front = http_front("0.0.0.0:80", "x.example")
    state = applied(ConfigState(), req(add_http_frontend=front))
    front.hostname = "changed"
    (stored,) = state.list_frontends().http_frontends
    assert stored.hostname == "x.example"
    assert stored.HasField("position")  # a required field is always explicitly set
    assert stored == canonical(http_front("0.0.0.0:80", "x.example"))


# --- diff ----------------------------------------------------------------------------------


def replay(state: ConfigState, requests: list[Request]) -> ConfigState:
    result = state.copy()
    for request in requests:
        result.apply(request)
    return result


def test_diff_from_empty_is_the_rebuild_list_as_a_set() -> None:
    state = rich_state()
    assert sorted(map(wire, ConfigState().diff(state))) == sorted(map(wire, state.requests()))
    assert state.diff(state) == []


def test_diff_of_a_changed_active_listener_keeps_it_active() -> None:
    old = applied(
        ConfigState(), http_listener("0.0.0.0:80"), activate("0.0.0.0:80", ListenerType.HTTP)
    )
    new = applied(
        ConfigState(),
        http_listener("0.0.0.0:80", front_timeout=5),
        activate("0.0.0.0:80", ListenerType.HTTP),
    )
    steps = old.diff(new)
    assert variants(steps) == [
        "deactivate_listener",
        "remove_listener",
        "add_http_listener",
        "activate_listener",
    ]
    assert steps[2].add_http_listener.active is False
    assert replay(old, steps) == new
    assert replay(new, new.diff(old)) == old


def test_diff_of_stream_frontends_sharing_an_address() -> None:
    # A TCP removal takes every frontend on the address; the diff adds back the kept one.
    old = applied(
        ConfigState(),
        req(add_tcp_frontend=tcp_front("a", "0.0.0.0:9000")),
        req(add_tcp_frontend=tcp_front("a", "0.0.0.0:9000", k="v")),
        req(add_tcp_frontend=tcp_front("a", "0.0.0.0:9000", k="w")),
    )
    new = applied(ConfigState(), req(add_tcp_frontend=tcp_front("a", "0.0.0.0:9000")))
    steps = old.diff(new)
    assert variants(steps) == ["remove_tcp_frontend", "add_tcp_frontend"]
    assert replay(old, steps) == new


def test_diff_replaces_a_certificate_whose_content_changed() -> None:
    old = applied(ConfigState(), add_cert("0.0.0.0:443", 0))
    renamed = AddCertificate(address=to_proto("0.0.0.0:443"), certificate=certs()[0])
    renamed.certificate.names.append("other.example")
    new = applied(ConfigState(), req(add_certificate=renamed))
    steps = old.diff(new)
    assert variants(steps) == ["remove_certificate", "add_certificate"]
    assert replay(old, steps) == new


def test_diff_both_ways_between_rich_states() -> None:
    old = rich_state()
    new = applied(
        rich_state(),
        req(remove_cluster="b"),
        cluster("c", https_redirect=True),
        backend("a", "x", "10.0.0.1:80", backup=True),
        remove_backend("b", "z", "10.0.0.9:80"),
        deactivate("10.0.0.1:80", ListenerType.HTTP),
        remove_listener("[::]:80", ListenerType.HTTP),
        tcp_listener("0.0.0.0:9009", active=True),
        req(remove_http_frontend=http_front("0.0.0.0:80", "y.example")),
        req(add_https_frontend=http_front("0.0.0.0:443", "z.example", cluster_id="c")),
        req(
            remove_certificate=RemoveCertificate(address=to_proto("0.0.0.0:443"), fingerprint=fp(1))
        ),
        add_cert("0.0.0.0:9443", 1),
    )
    assert replay(old, old.diff(new)) == new
    assert replay(new, new.diff(old)) == old


# --- queries -------------------------------------------------------------------------------


def test_cluster_information_and_domain_queries() -> None:
    state = rich_state()
    info = state.cluster_information("a")
    assert info is not None
    assert info.configuration.cluster_id == "a"
    assert [f.hostname for f in info.http_frontends] == ["x.example"]
    assert [f.hostname for f in info.https_frontends] == ["x.example"]
    assert [address_text(f.address) for f in info.tcp_frontends] == ["0.0.0.0:9000"]
    assert [address_text(f.address) for f in info.udp_frontends] == ["0.0.0.0:53"]
    assert [b.backend_id for b in info.backends] == ["x", "x", "y"]
    assert state.cluster_information("nope") is None
    assert state.cluster_ids_by_domain("x.example") == ["a"]
    assert state.cluster_ids_by_domain("x.example", "/") == ["a"]
    assert state.cluster_ids_by_domain("x.example", "/other") == []
    assert state.cluster_ids_by_domain("y.example") == []  # a deny frontend has no cluster
    assert [i.configuration.cluster_id for i in state.clusters_by_domain("x.example").vec] == ["a"]


def test_list_frontends_filters() -> None:
    state = rich_state()
    everything = state.list_frontends()
    assert (len(everything.http_frontends), len(everything.https_frontends)) == (2, 1)
    assert (len(everything.tcp_frontends), len(everything.udp_frontends)) == (2, 1)
    only_https = state.list_frontends(FrontendFilters(https=True))
    assert len(only_https.https_frontends) == 1 and not only_https.http_frontends
    by_domain = state.list_frontends(FrontendFilters(domain="y.ex"))
    assert [f.hostname for f in by_domain.http_frontends] == ["y.example"]
    assert not by_domain.tcp_frontends and not by_domain.https_frontends


def test_list_listeners_and_counts() -> None:
    state = rich_state()
    listed = state.list_listeners()
    assert sorted(listed.http_listeners) == ["10.0.0.1:80", "9.0.0.1:8080", "[::]:80"]
    assert listed.https_listeners["0.0.0.0:443"].active
    assert list(listed.udp_listeners) == ["0.0.0.0:53"]
    assert [address_text(x.address) for x in state.listeners(ListenerType.TCP)] == ["0.0.0.0:9000"]
    assert (state.count_frontends(), state.count_backends()) == (6, 4)
    assert "clusters=2" in repr(state)


def test_cluster_hashes_are_stable_and_follow_changes() -> None:
    first, second = rich_state().cluster_hashes(), rich_state().cluster_hashes()
    assert dict(first.map) == dict(second.map) and set(first.map) == {"a", "b"}
    changed = applied(rich_state(), backend("a", "new", "10.1.1.1:1")).cluster_hashes()
    assert changed.map["a"] != first.map["a"] and changed.map["b"] == first.map["b"]


# --- fuzzing: any Request, valid or not ----------------------------------------------------

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def scalar_values(fd: Any) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=8)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=8)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in fd.enum_type.values])
    low, high = _INT_BOUNDS[fd.type]
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, 80, 65536]))


@st.composite
def messages(draw: st.DrawFn, descriptor: Any, depth: int = 3) -> Message:
    """Any message of `descriptor`: random optional presence, required fields sometimes unset."""
    message: Message = getattr(proto, descriptor.name)()
    for fd in descriptor.fields:
        if fd.containing_oneof is not None:
            continue
        is_message = fd.type == FieldDescriptor.TYPE_MESSAGE
        if fd.is_repeated and is_message and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            target = getattr(message, fd.name)
            for _ in range(draw(st.integers(0, 2))):
                key = draw(scalar_values(key_fd))
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth > 0:
                        target[key].CopyFrom(draw(messages(value_fd.message_type, depth - 1)))
                else:
                    target[key] = draw(scalar_values(value_fd))
        elif fd.is_repeated:
            target = getattr(message, fd.name)
            for _ in range(draw(st.integers(0, 2))):
                if not is_message:
                    target.append(draw(scalar_values(fd)))
                elif depth > 0:
                    target.add().CopyFrom(draw(messages(fd.message_type, depth - 1)))
        elif draw(st.integers(0, 9)) < (8 if fd.is_required else 4):
            if not is_message:
                setattr(message, fd.name, draw(scalar_values(fd)))
            elif depth > 0:
                getattr(message, fd.name).CopyFrom(draw(messages(fd.message_type, depth - 1)))
            else:
                getattr(message, fd.name).SetInParent()
    for oneof in descriptor.oneofs:
        choice = draw(st.sampled_from([None, *oneof.fields]))
        if choice is None:
            continue
        if choice.type == FieldDescriptor.TYPE_MESSAGE:
            child = getattr(message, choice.name)
            child.SetInParent()
            if depth > 0:
                child.CopyFrom(draw(messages(choice.message_type, depth - 1)))
        else:
            setattr(message, choice.name, draw(scalar_values(choice)))
    return message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=messages(Request.DESCRIPTOR))
def test_any_request_is_applied_or_refused_cleanly(request: Message) -> None:
    assert isinstance(request, Request)
    state = rich_state_cached().copy()
    before = state.copy()
    try:
        outcome = state.apply(request)
    except StateError:
        assert state == before
    else:
        assert (state == before) == (outcome is not Applied.CHANGED)
    assert ConfigState.from_requests(state.requests()) == state


@functools.cache
def rich_state_cached() -> ConfigState:
    return rich_state()


# --- rule-based state machine ----------------------------------------------------------------

ADDRESSES = ["127.0.0.1:80", "127.0.0.1:443", "10.0.0.1:80", "[::1]:80"]
CLUSTER_IDS = ["a", "b"]
KINDS = [ListenerType.HTTP, ListenerType.HTTPS, ListenerType.TCP, ListenerType.UDP]
ADD_LISTENER = {
    ListenerType.HTTP: http_listener,
    ListenerType.HTTPS: https_listener,
    ListenerType.TCP: tcp_listener,
    ListenerType.UDP: udp_listener,
}
UPDATE = {
    ListenerType.HTTP: ("update_http_listener", UpdateHttpListenerConfig),
    ListenerType.HTTPS: ("update_https_listener", UpdateHttpsListenerConfig),
    ListenerType.TCP: ("update_tcp_listener", UpdateTcpListenerConfig),
    ListenerType.UDP: ("update_udp_listener", UpdateUdpListenerConfig),
}
addresses = st.sampled_from(ADDRESSES)
cluster_ids = st.sampled_from(CLUSTER_IDS)
kinds = st.sampled_from(KINDS)
tags = st.sampled_from([{}, {"k": "v"}])


@st.composite
def listener_requests(draw: st.DrawFn) -> Request:
    kind, address = draw(kinds), draw(addresses)
    action = draw(st.sampled_from(["add", "remove", "activate", "deactivate", "update"]))
    if action == "add":
        return ADD_LISTENER[kind](
            address, front_timeout=draw(st.sampled_from([60, 5])), active=draw(st.booleans())
        )
    if action == "remove":
        return remove_listener(address, kind)
    if action == "activate":
        return activate(address, kind)
    if action == "deactivate":
        return deactivate(address, kind)
    field, patch_type = UPDATE[kind]
    return req(
        **{
            field: patch_type(
                address=to_proto(address), front_timeout=draw(st.sampled_from([1, 60]))
            )
        }
    )


@st.composite
def cluster_requests(draw: st.DrawFn) -> Request:
    cluster_id = draw(cluster_ids)
    action = draw(st.sampled_from(["add", "remove", "set_check", "remove_check"]))
    check = HealthCheckConfig(uri=draw(st.sampled_from(["/h", "h"])))
    if action == "add":
        extra: dict[str, Any] = {"sticky_session": draw(st.booleans())}
        if draw(st.booleans()):
            extra["health_check"] = check
        return cluster(cluster_id, **extra)
    if action == "remove":
        return req(remove_cluster=cluster_id)
    if action == "set_check":
        return req(set_health_check=SetHealthCheck(cluster_id=cluster_id, config=check))
    return req(remove_health_check=cluster_id)


@st.composite
def frontend_requests(draw: st.DrawFn) -> Request:
    address, cluster_id = draw(addresses), draw(cluster_ids)
    kind = draw(st.sampled_from(["http", "https", "tcp", "udp"]))
    verb = draw(st.sampled_from(["add", "remove"]))
    if kind in ("http", "https"):
        front = http_front(
            address,
            draw(st.sampled_from(["x.example", "y.example"])),
            cluster_id=draw(st.sampled_from([cluster_id, None])),
            path=draw(st.sampled_from(["/", "/api"])),
            method=draw(st.sampled_from(["GET", None])),
            tags=draw(tags),
        )
        if front.method == "":
            front.ClearField("method")
        return req(**{f"{verb}_{kind}_frontend": front})
    build = tcp_front if kind == "tcp" else udp_front
    return req(**{f"{verb}_{kind}_frontend": build(cluster_id, address, **draw(tags))})


@st.composite
def backend_requests(draw: st.DrawFn) -> Request:
    cluster_id, address = draw(cluster_ids), draw(addresses)
    backend_id = draw(st.sampled_from(["b0", "b1"]))
    if draw(st.booleans()):
        return remove_backend(cluster_id, backend_id, address)
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["load_balancing_parameters"] = LoadBalancingParams(
            weight=draw(st.sampled_from([1, 100]))
        )
    if draw(st.booleans()):
        extra["backup"] = draw(st.booleans())
    return backend(cluster_id, backend_id, address, **extra)


@st.composite
def certificate_requests(draw: st.DrawFn) -> Request:
    address, index = draw(addresses), draw(st.integers(0, 2))
    action = draw(st.sampled_from(["add", "add-named", "remove", "replace"]))
    if action == "add":
        return add_cert(address, index)
    if action == "add-named":
        request = add_cert(address, index)
        request.add_certificate.certificate.names.append("named.example")
        return request
    if action == "remove":
        return req(
            remove_certificate=RemoveCertificate(address=to_proto(address), fingerprint=fp(index))
        )
    return req(
        replace_certificate=ReplaceCertificate(
            address=to_proto(address),
            new_certificate=certs()[draw(st.integers(0, 2))],
            old_fingerprint=fp(index),
        )
    )


junk_requests = st.sampled_from(
    [
        Request(),
        req(status=Status()),
        req(save_state="x"),
        req(add_http_listener=HttpListenerConfig(address=SocketAddress(port=80))),
        req(
            add_backend=AddBackend(
                cluster_id="a",
                backend_id="b0",
                address=SocketAddress(ip=IpAddress(v4=1), port=99999),
            )
        ),
    ]
)
state_requests = st.one_of(
    listener_requests(),
    cluster_requests(),
    frontend_requests(),
    backend_requests(),
    certificate_requests(),
    junk_requests,
)


class StateMachine(RuleBasedStateMachine):
    """Random valid and invalid Requests; the state can always be rebuilt and diffed."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ConfigState()
        self.snapshots = [ConfigState()]

    @rule(request=state_requests)
    def apply(self, request: Request) -> None:
        before = self.state.copy()
        try:
            outcome = self.state.apply(request)
        except StateError:
            assert self.state == before
        else:
            assert (self.state == before) == (outcome is not Applied.CHANGED)
        self.snapshots = [*self.snapshots[-2:], self.state.copy()]

    @invariant()
    def rebuilds_from_its_requests(self) -> None:
        requests = self.state.requests()
        assert ConfigState.from_requests(requests) == self.state
        from_empty = ConfigState().diff(self.state)
        assert sorted(map(wire, from_empty)) == sorted(map(wire, requests))

    @invariant()
    def diff_turns_one_state_into_another(self) -> None:
        for old in self.snapshots:
            assert replay(old, old.diff(self.state)) == self.state
            assert replay(self.state, self.state.diff(old)) == old


StateMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStateMachine = StateMachine.TestCase


def test_flow_hashing_algorithms_need_a_udp_cluster() -> None:
    from sozu.command.proto import Cluster, LoadBalancingAlgorithms, Request, UdpClusterConfig

    for algorithm in (LoadBalancingAlgorithms.HRW, LoadBalancingAlgorithms.MAGLEV):
        state = ConfigState()
        cluster = Cluster(
            cluster_id="c", sticky_session=False, https_redirect=False, load_balancing=algorithm
        )
        with pytest.raises(StateError) as refused:
            state.apply(Request(add_cluster=cluster))
        assert refused.value.kind is StateErrorKind.INVALID_VALUE
        assert "only for UDP clusters" in str(refused.value)
        assert state == ConfigState()
        cluster.udp.CopyFrom(UdpClusterConfig())
        assert state.apply(Request(add_cluster=cluster)) is not None
