"""describe(): every Request variant -> Sōzu's audit verb and target (or None for queries)."""

from __future__ import annotations

import pytest
import trustme
from google.protobuf.descriptor import FieldDescriptor

from sozu.command import certificate
from sozu.command.addresses import to_proto
from sozu.command.config import demo_config_path, load_config
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    CertificateAndKey,
    Cluster,
    DeactivateListener,
    HardStop,
    HttpListenerConfig,
    ListenerType,
    MetricDetail,
    MetricsConfiguration,
    RemoveBackend,
    RemoveCertificate,
    RemoveListener,
    ReplaceCertificate,
    Request,
    RequestHttpFrontend,
    RequestTcpFrontend,
    RequestUdpFrontend,
    SetHealthCheck,
    SetMetricDetail,
    SoftStop,
    Status,
    SubscribeEvents,
    UpdateHttpListenerConfig,
    UpdateHttpsListenerConfig,
    UpdateTcpListenerConfig,
    UpgradeMain,
)
from sozu.command.state import ConfigState
from sozu.supervisor import audit
from sozu.supervisor.audit import AuditSubject, describe, refusal_subject
from sozu.supervisor.peer import PeerCredentials
from tests.unit.supervisor.samples import minimal_request

ONEOF = Request.DESCRIPTOR.oneofs_by_name["request_type"]

VERBS = {
    "save_state": "state_saved",
    "load_state": "state_loaded",
    "upgrade_main": "main_upgraded",
    "upgrade_worker": "worker_upgraded",
    "subscribe_events": "events_subscribed",
    "reload_configuration": "configuration_reloaded",
    "add_cluster": "cluster_added",
    "remove_cluster": "cluster_removed",
    "add_http_frontend": "http_frontend_added",
    "remove_http_frontend": "http_frontend_removed",
    "add_https_frontend": "https_frontend_added",
    "remove_https_frontend": "https_frontend_removed",
    "add_certificate": "certificate_added",
    "replace_certificate": "certificate_replaced",
    "remove_certificate": "certificate_removed",
    "add_tcp_frontend": "tcp_frontend_added",
    "remove_tcp_frontend": "tcp_frontend_removed",
    "add_backend": "backend_added",
    "remove_backend": "backend_removed",
    "add_http_listener": "http_listener_added",
    "add_https_listener": "https_listener_added",
    "add_tcp_listener": "tcp_listener_added",
    "remove_listener": "listener_removed",
    "activate_listener": "listener_activated",
    "deactivate_listener": "listener_deactivated",
    "soft_stop": "sozu_stop_requested",
    "hard_stop": "sozu_stop_requested",
    "configure_metrics": "metrics_configured",
    "Logging": "logging_level_changed",
    "update_http_listener": "http_listener_updated",
    "update_https_listener": "https_listener_updated",
    "update_tcp_listener": "tcp_listener_updated",
    "set_max_connections_per_ip": "max_connections_per_ip_set",
    "set_health_check": "health_check_set",
    "remove_health_check": "health_check_removed",
    "set_metric_detail": "metric_detail_changed",
    "add_udp_listener": "udp_listener_added",
    "update_udp_listener": "udp_listener_updated",
    "add_udp_frontend": "udp_frontend_added",
    "remove_udp_frontend": "udp_frontend_removed",
}
UNAUDITED = {
    "list_workers",
    "list_frontends",
    "list_listeners",
    "launch_worker",
    "status",
    "query_cluster_by_id",
    "query_clusters_by_domain",
    "query_clusters_hashes",
    "query_metrics",
    "return_listen_sockets",
    "query_certificates_from_the_state",
    "query_certificates_from_workers",
    "count_requests",
    "query_max_connections_per_ip",
    "query_health_checks",
}


def demo_state() -> ConfigState:
    state = ConfigState()
    for request in load_config(demo_config_path()).requests():
        state.apply(request)
    return state


def test_the_tables_cover_every_variant() -> None:
    names = {field.name for field in ONEOF.fields}
    assert set(VERBS) | UNAUDITED == names
    assert not set(VERBS) & UNAUDITED


@pytest.mark.parametrize("field", list(ONEOF.fields), ids=lambda f: f.name)
def test_every_variant_is_described_without_raising(field: FieldDescriptor) -> None:
    request = minimal_request(field)
    for state in (None, demo_state()):
        subject = describe(request, state)
        if field.name in UNAUDITED:
            assert subject is None
        else:
            assert subject is not None
            assert subject.verb == VERBS[field.name]
            assert subject.target
            assert audit.sanitize(subject.verb) == subject.verb


def test_empty_request() -> None:
    assert describe(Request()) is None
    assert refusal_subject(Request()) == AuditSubject("request_refused", "request:empty")
    assert refusal_subject(Request(status=Status())) == AuditSubject(
        "request_refused", "request:status"
    )
    assert refusal_subject(Request(remove_cluster="a")).verb == "cluster_removed"


ADDR = to_proto("127.0.0.1:8080")


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            Request(add_cluster=Cluster(cluster_id="my_app")),
            AuditSubject("cluster_added", "cluster:my_app", cluster_id="my_app"),
        ),
        (
            Request(remove_cluster="my_app"),
            AuditSubject("cluster_removed", "cluster:my_app", cluster_id="my_app"),
        ),
        (
            Request(add_backend=AddBackend(cluster_id="my_app", backend_id="app-0", address=ADDR)),
            AuditSubject("backend_added", "backend:my_app/app-0", "my_app", "app-0"),
        ),
        (
            Request(
                remove_backend=RemoveBackend(cluster_id="my_app", backend_id="app-0", address=ADDR)
            ),
            AuditSubject("backend_removed", "backend:my_app/app-0", "my_app", "app-0"),
        ),
        (
            Request(add_http_listener=HttpListenerConfig(address=ADDR)),
            AuditSubject("http_listener_added", "listener:http:127.0.0.1:8080"),
        ),
        (
            Request(activate_listener=ActivateListener(address=ADDR, proxy=ListenerType.HTTP)),
            AuditSubject("listener_activated", "listener:Http:127.0.0.1:8080"),
        ),
        (
            Request(
                deactivate_listener=DeactivateListener(
                    address=to_proto("[::1]:443"), proxy=ListenerType.HTTPS
                )
            ),
            AuditSubject("listener_deactivated", "listener:Https:[::1]:443"),
        ),
        (
            Request(remove_listener=RemoveListener(address=ADDR, proxy=ListenerType.TCP)),
            AuditSubject("listener_removed", "listener:Tcp:127.0.0.1:8080"),
        ),
        (
            Request(
                add_https_frontend=RequestHttpFrontend(
                    cluster_id="app", address=to_proto("0.0.0.0:8443"), hostname="example.com"
                )
            ),
            AuditSubject("https_frontend_added", "frontend:https:example.com:0.0.0.0:8443", "app"),
        ),
        (
            Request(
                remove_http_frontend=RequestHttpFrontend(address=ADDR, hostname="deny.example")
            ),
            AuditSubject("http_frontend_removed", "frontend:http:deny.example:127.0.0.1:8080"),
        ),
        (
            Request(add_tcp_frontend=RequestTcpFrontend(cluster_id="db", address=ADDR)),
            AuditSubject("tcp_frontend_added", "frontend:tcp:db:127.0.0.1:8080", "db"),
        ),
        (
            Request(remove_udp_frontend=RequestUdpFrontend(cluster_id="dns", address=ADDR)),
            AuditSubject("udp_frontend_removed", "frontend:udp:dns:127.0.0.1:8080", "dns"),
        ),
        (
            Request(add_certificate=AddCertificate(address=to_proto("127.0.0.1:8443"))),
            AuditSubject("certificate_added", "certificate:127.0.0.1:8443"),
        ),
        (
            Request(
                remove_certificate=RemoveCertificate(
                    address=to_proto("127.0.0.1:8443"), fingerprint="ab12"
                )
            ),
            AuditSubject("certificate_removed", "certificate:127.0.0.1:8443:ab12"),
        ),
        (
            Request(save_state="/var/lib/sozu/state"),
            AuditSubject("state_saved", "file:/var/lib/sozu/state"),
        ),
        (Request(load_state="st.json"), AuditSubject("state_loaded", "file:st.json")),
        (Request(soft_stop=SoftStop()), AuditSubject("sozu_stop_requested", "stop:soft")),
        (Request(hard_stop=HardStop()), AuditSubject("sozu_stop_requested", "stop:hard")),
        (
            Request(Logging="info,sozu=debug"),
            AuditSubject("logging_level_changed", "logging:info,sozu=debug"),
        ),
        (Request(upgrade_worker=2), AuditSubject("worker_upgraded", "worker:2")),
        (
            Request(configure_metrics=MetricsConfiguration.CLEAR),
            AuditSubject("metrics_configured", "metrics:Clear"),
        ),
        (
            Request(
                set_metric_detail=SetMetricDetail(client_id="c", detail=MetricDetail.DETAIL_BACKEND)
            ),
            AuditSubject("metric_detail_changed", "metric_detail:DetailBackend"),
        ),
        (
            Request(set_metric_detail=SetMetricDetail(client_id="c", clear=True)),
            AuditSubject("metric_detail_changed", "metric_detail:clear"),
        ),
        (
            Request(set_health_check=SetHealthCheck(cluster_id="app")),
            AuditSubject("health_check_set", "health_check:app", "app"),
        ),
        (
            Request(remove_health_check="app"),
            AuditSubject("health_check_removed", "health_check:app", "app"),
        ),
        (
            Request(set_max_connections_per_ip=10),
            AuditSubject("max_connections_per_ip_set", "max_connections_per_ip:10"),
        ),
    ],
    ids=lambda v: v.WhichOneof("request_type") if isinstance(v, Request) else "",
)
def test_targets(request_: Request, expected: AuditSubject) -> None:
    assert describe(request_) == expected


def test_targets_that_need_context() -> None:
    assert describe(Request(subscribe_events=SubscribeEvents()), client_id=12) == AuditSubject(
        "events_subscribed", "subscribe:client_id:12"
    )
    assert describe(Request(reload_configuration=""), config_path="/etc/sozu/config.toml") == (
        AuditSubject("configuration_reloaded", "config:/etc/sozu/config.toml")
    )
    assert describe(Request(reload_configuration="/other.toml"), config_path="/x") == (
        AuditSubject("configuration_reloaded", "config:/other.toml")
    )
    subject = describe(
        Request(upgrade_main=UpgradeMain()), executable="/usr/bin/sozu", boot_generation=4
    )
    assert subject == AuditSubject("main_upgraded", "executable:/usr/bin/sozu boot_generation:4")
    saved = AuditSubject("state_saved", "file:/s")
    assert saved.with_target("file:/s messages:12").target == "file:/s messages:12"


def test_replace_certificate_target_has_both_fingerprints() -> None:
    ca = trustme.CA()
    pem = ca.issue_cert("example.com").cert_chain_pems[0].bytes().decode()
    new_fp = certificate.fingerprint_hex(pem)
    request = Request(
        replace_certificate=ReplaceCertificate(
            address=to_proto("127.0.0.1:8443"),
            new_certificate=CertificateAndKey(certificate=pem, key="k"),
            old_fingerprint="00ff" * 16,
        )
    )
    subject = describe(request)
    assert subject is not None
    assert subject.target == f"certificate:127.0.0.1:8443:old={'00ff' * 16}:new={new_fp[:16]}"
    broken = Request(
        replace_certificate=ReplaceCertificate(
            address=to_proto("127.0.0.1:8443"),
            new_certificate=CertificateAndKey(certificate="garbage", key="k"),
            old_fingerprint="aa",
        )
    )
    subject = describe(broken)
    assert subject is not None and subject.target.endswith(":old=aa:new=unknown")


def test_update_listener_diff_against_the_state() -> None:
    state = demo_state()
    patch = UpdateHttpListenerConfig(
        address=to_proto("127.0.0.1:8080"),
        front_timeout=10,
        expect_proxy=True,
        sticky_name="S",
        public_address=to_proto("10.0.0.1:80"),
    )
    subject = describe(Request(update_http_listener=patch), state)
    assert subject is not None
    assert subject.verb == "http_listener_updated"
    assert subject.target == (
        "listener:http:127.0.0.1:8080:public_address=?→10.0.0.1:80 expect_proxy=false→true "
        "sticky_name=SOZUBALANCEID→S front_timeout=60→10"
    )
    # without a state (or an unknown listener) the old values are `?`
    subject = describe(Request(update_http_listener=patch))
    assert subject is not None and "front_timeout=?→10" in subject.target
    # an empty patch
    empty = describe(
        Request(update_tcp_listener=UpdateTcpListenerConfig(address=to_proto("127.0.0.1:1")))
    )
    assert empty is not None and empty.target == "listener:tcp:127.0.0.1:1:(no-op)"
    alpn = UpdateHttpsListenerConfig(address=to_proto("127.0.0.1:8443"))
    alpn.alpn_protocols.values.append("h2")
    subject = describe(Request(update_https_listener=alpn), state)
    assert subject is not None
    assert subject.target == "listener:https:127.0.0.1:8443:alpn_protocols=h2,http/1.1→h2"


def test_invalid_address_does_not_raise() -> None:
    request = Request(add_http_listener=HttpListenerConfig())
    subject = describe(request)
    assert subject == AuditSubject("http_listener_added", "listener:http:?")


def test_state_file_and_refusal_helpers() -> None:
    assert audit.state_saved_target("/s") == "file:/s"
    assert audit.state_saved_target("/s", 12) == "file:/s messages:12"
    assert audit.state_loaded_target("/s") == "file:/s"
    assert audit.state_loaded_target("/s", 3, 1) == "file:/s ok:3 errors:1"
    assert audit.invalid_request_subject("frame:too_large") == AuditSubject(
        "invalid_request", "frame:too_large"
    )
    assert audit.unauthorized_message(1001) == (
        "unauthorized: actor UID 1001 not in command_allowed_uids"
    )
    assert audit.unauthorized_message(None).startswith("unauthorized: actor UID unknown ")
    unknown = PeerCredentials.unavailable()
    assert audit.unauthorized_error_code(unknown) == "peer_cred_unavailable"
    known = PeerCredentials(uid=5, gid=5, pid=1, user="u", comm=None)
    assert audit.unauthorized_error_code(known) == "other"
    assert set(audit.ERROR_CODES) == {
        "dispatch_error",
        "worker_failure",
        "worker_timeout",
        "peer_cred_unavailable",
        "invalid_input",
        "io_error",
        "other",
    }
