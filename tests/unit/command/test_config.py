"""Loading Sōzu's config.toml: defaults, errors, path resolution and the generated Requests."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sozu.command import addresses
from sozu.command.config import (
    ClusterProtocol,
    Config,
    ConfigError,
    HttpFrontendConfig,
    ListenerProtocol,
    demo_config_path,
    load_config,
    parse_config,
)
from sozu.command.proto import (
    LoadBalancingAlgorithms,
    MetricDetail,
    PathRuleKind,
    ProtobufAccessLogFormat,
    ProxyProtocolConfig,
    RulePosition,
    TlsVersion,
)

# Every top-level default, as listed in SOZU-FACTS.md and command/src/config.rs (Sōzu 2.1.0).
SOZU_DEFAULTS: dict[str, Any] = {
    "command_buffer_size": 1_000_000,
    "max_command_buffer_size": 2_000_000,
    "max_connections": 10_000,
    "min_buffers": 1,
    "max_buffers": 1_000,
    "buffer_size": 16_393,
    "max_connections_per_ip": 0,
    "retry_after": 60,
    "command_allowed_uids": None,
    "saved_state": None,
    "automatic_state_save": False,
    "log_level": "info",
    "log_target": "stdout",
    "log_colored": False,
    "audit_logs_target": None,
    "audit_logs_json_target": None,
    "access_logs_target": None,
    "access_logs_format": "ascii",
    "access_logs_colored": None,
    "worker_count": 2,
    "worker_automatic_restart": True,
    "worker_timeout": 10,
    "metrics": None,
    "disable_cluster_metrics": False,
    "handle_process_affinity": False,
    "ctl_command_timeout": 1_000,
    "pid_file_path": None,
    "activate_listeners": True,
    "front_timeout": 60,
    "back_timeout": 30,
    "connect_timeout": 3,
    "request_timeout": 10,
    "zombie_check_interval": 1_800,
    "accept_queue_timeout": 60,
    "evict_on_queue_full": False,
    "slab_entries_per_connection": None,
    "basic_auth_max_credential_bytes": None,
    "splice_pipe_capacity_bytes": None,
}


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).removeprefix(f"{path}: ")


def kinds(config: Config) -> list[tuple[str, str | None]]:
    return [(r.id, r.content.WhichOneof("request_type")) for r in config.to_requests()]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("example.com", "www.example.com")
    files = {
        "cert": folder / "cert.pem",
        "key": folder / "key.pem",
        "chain": folder / "chain.pem",
    }
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    files["chain"].write_bytes(leaf.cert_chain_pems[0].bytes() + ca.cert_pem.bytes())
    return files


# ------------------------------------------------------------------------------------------
# Defaults and plain values


def test_empty_file_gives_every_sozu_default(tmp_path: Path) -> None:
    config = load_text(tmp_path, "")
    for key, expected in SOZU_DEFAULTS.items():
        assert getattr(config, key) == expected, key
    assert config.command_socket == tmp_path / "sozu.sock"
    assert config.config_path == tmp_path / "config.toml"
    assert config.listeners == ()
    assert config.clusters == ()
    assert config.warnings == []
    assert config.to_requests() == []


def test_server_config_carries_the_defaults(tmp_path: Path) -> None:
    server = load_text(tmp_path, "").server_config()
    assert server.max_connections == 10_000
    assert (server.front_timeout, server.back_timeout, server.connect_timeout) == (60, 30, 3)
    assert server.zombie_check_interval == 1_800
    assert server.accept_queue_timeout == 60
    assert (server.min_buffers, server.max_buffers, server.buffer_size) == (1, 1_000, 16_393)
    assert (server.log_level, server.log_target) == ("info", "stdout")
    assert (server.command_buffer_size, server.max_command_buffer_size) == (1_000_000, 2_000_000)
    assert server.access_log_format == ProtobufAccessLogFormat.Value("Ascii")
    assert not server.HasField("metrics")
    assert not server.HasField("access_logs_target")
    assert server.max_connections_per_ip == 0
    assert server.retry_after == 60
    assert server.evict_on_queue_full is False
    assert server.IsInitialized()


def test_top_level_values_are_read(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        worker_count = 4
        worker_automatic_restart = false
        worker_timeout = 3
        max_connections = 500
        min_buffers = 10
        max_buffers = 500
        buffer_size = 32768
        command_buffer_size = 16384
        max_command_buffer_size = 163840
        log_level = "debug"
        log_target = "udp://127.0.0.1:9000"
        log_colored = true
        access_logs_target = "stdout"
        access_logs_format = "protobuf"
        audit_logs_target = "/var/log/sozu-audit.log"
        audit_logs_json_target = "/var/log/sozu-audit.json"
        ctl_command_timeout = 5000
        pid_file_path = "/run/sozu.pid"
        activate_listeners = false
        handle_process_affinity = true
        disable_cluster_metrics = true
        front_timeout = 61
        back_timeout = 31
        connect_timeout = 4
        request_timeout = 11
        zombie_check_interval = 900
        accept_queue_timeout = 30
        max_connections_per_ip = 7
        retry_after = 0
        command_allowed_uids = [0, 1000]
        slab_entries_per_connection = 8

        [metrics]
        address = "127.0.0.1:8125"
        tagged_metrics = true
        prefix = "sozu"
        detail = "backend"
        """,
    )
    assert config.worker_count == 4
    assert config.worker_automatic_restart is False
    assert config.min_buffers == 10
    assert config.access_logs_format == "protobuf"
    assert config.command_allowed_uids == (0, 1000)
    assert config.metrics is not None and config.metrics.detail == "backend"
    assert config.warnings == []
    server = config.server_config()
    assert server.access_log_format == ProtobufAccessLogFormat.Value("Protobuf")
    assert server.metrics.address == "127.0.0.1:8125"
    assert server.metrics.tagged_metrics is True
    assert server.metrics.prefix == "sozu"
    assert server.metrics.detail == MetricDetail.DETAIL_BACKEND
    assert server.slab_entries_per_connection == 8
    assert server.retry_after == 0
    assert server.front_timeout == 61


def test_min_buffers_is_capped_by_max_buffers(tmp_path: Path) -> None:
    assert load_text(tmp_path, "min_buffers = 50\nmax_buffers = 20\n").min_buffers == 20


def test_metrics_detail_defaults_to_cluster(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[metrics]\naddress = "127.0.0.1:8125"\n')
    assert config.metrics is not None
    assert (config.metrics.tagged_metrics, config.metrics.prefix) == (False, None)
    assert config.server_config().metrics.detail == MetricDetail.DETAIL_CLUSTER


# ------------------------------------------------------------------------------------------
# Errors


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'worker_count = 1\nlog_level = "info"\nbuffer_size = = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: line 3, column 15: invalid TOML: invalid value"


def test_syntax_error_at_end_of_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'a = 1\nb = "unterminated')
    assert message == "line 2 (end of file): invalid TOML: unterminated string"


def test_bad_enum_value_names_key_value_and_choices(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[[listeners]]\nprotocol = "htp"\naddress = "127.0.0.1:80"\n')
    assert message == (
        'listeners[0].protocol: invalid value "htp", expected one of http, https, tcp, udp'
    )


def test_enum_value_in_the_wrong_case_gets_a_hint(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[[listeners]]\nprotocol = "HTTP"\naddress = "127.0.0.1:80"\n')
    assert message.endswith("expected one of http, https, tcp, udp (mind the case)")


APP = '[clusters.app]\nprotocol = "http"\n'
TCP_APP = '[clusters.app]\nprotocol = "tcp"\n'
HTTP_LISTENER = '[[listeners]]\nprotocol = "http"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HTTP_LISTENER + 'adress = "127.0.0.1:80"\n',
            "listeners[0].adress: unknown key (did you mean 'address'?)",
        ),
        ('[metrics]\naddress = "127.0.0.1:8125"\nflavour = 1\n', "metrics.flavour: unknown key"),
        (
            APP + "frontends = []\nbackends = []\nstiky_session = true\n",
            "clusters.app.stiky_session: unknown key (did you mean 'sticky_session'?)",
        ),
        (
            APP + "backends = []\n"
            'frontends = [{ address = "127.0.0.1:80", hostname = "a", colour = "red" }]\n',
            "clusters.app.frontends[0].colour: unknown key",
        ),
        (
            '[clusters."my app"]\nprotocol = "tcp"\nfrontends = []\nbackends = ['
            '{ address = "127.0.0.1:81" }, { address = "127.0.0.1:82", wieght = 1 }]\n',
            "clusters.\"my app\".backends[1].wieght: unknown key (did you mean 'weight'?)",
        ),
    ],
)
def test_unknown_key_inside_a_table_is_an_error(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


def test_unknown_top_level_key_is_a_warning(tmp_path: Path) -> None:
    config = load_text(tmp_path, "worker_count = 1\nworkers_count = 3\nfancy = true\n")
    path = tmp_path / "config.toml"
    assert config.worker_count == 1
    assert config.warnings == [
        f"{path}: workers_count: unknown option, ignored (did you mean 'worker_count'?)",
        f"{path}: fancy: unknown option, ignored",
    ]


U16 = "an integer from 0 to 65535"
U32 = "an integer from 0 to 4294967295"
U64 = "an integer from 0 to 18446744073709551615"


@pytest.mark.parametrize(
    ("key", "value", "shown", "expected"),
    [
        ("worker_count", '"two"', '"two"', U16),
        ("worker_count", "-1", "-1", U16),
        ("worker_count", "65536", "65536", U16),
        ("front_timeout", "1.5", "1.5", U32),
        ("buffer_size", "true", "true", U64),
        ("log_colored", "1", "1", "true or false"),
        ("log_level", "3", "3", "a string"),
        ("listeners", "3", "3", "an array of tables"),
        ("metrics", "[]", "(an array)", "a table"),
        ("access_logs_format", '"xml"', '"xml"', "one of ascii, protobuf, json"),
        ("pid_file_path", "1979-05-27", "(a date/time 1979-05-27)", "a string"),
    ],
)
def test_wrong_type_names_key_value_and_expectation(
    tmp_path: Path, key: str, value: str, shown: str, expected: str
) -> None:
    message = error_of(tmp_path, f"{key} = {value}\n")
    assert message == f"{key}: invalid value {shown}, expected {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('command_allowed_uids = [0, "root"]', 'command_allowed_uids[1]: invalid value "root"'),
        ("clusters = { app = 3 }", "clusters.app: invalid value 3, expected a table"),
        (
            HTTP_LISTENER + 'address = "localhost:80"',
            'listeners[0].address: invalid value "localhost:80", expected an IP:PORT socket '
            'address such as "127.0.0.1:8080" or "[::1]:8080"',
        ),
    ],
)
def test_wrong_values_in_nested_places(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text + "\n").startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HTTP_LISTENER, "listeners[0].address"),
        ('[[listeners]]\naddress = "127.0.0.1:80"\n', "listeners[0].protocol"),
        ('[metrics]\nprefix = "x"\n', "metrics.address"),
        ("[clusters.app]\nfrontends = []\nbackends = []\n", "clusters.app.protocol"),
        (APP + "backends = []\n", "clusters.app.frontends"),
        (
            APP + 'backends = []\nfrontends = [{ address = "127.0.0.1:80" }]\n',
            "clusters.app.frontends[0].hostname",
        ),
        (
            TCP_APP + "frontends = []\nbackends = [{ weight = 3 }]\n",
            "clusters.app.backends[0].address",
        ),
    ],
)
def test_missing_required_key(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == f"{expected}: missing required key"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="cannot read the configuration file") as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: cannot read the configuration file: No such file or directory"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{tmp_path}: cannot read the configuration file"):
        load_config(tmp_path)


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'log_level = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (bad byte at offset 16)"


def test_duplicate_listener_address(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '[[listeners]]\nprotocol = "http"\naddress = "0.0.0.0:80"\n'
        '[[listeners]]\nprotocol = "tcp"\naddress = "0.0.0.0:80"\n',
    )
    assert (
        message == "listeners[1].address: 0.0.0.0:80 is already used by the listener listeners[0]"
    )


def test_automatic_state_save_needs_saved_state(tmp_path: Path) -> None:
    assert error_of(tmp_path, "automatic_state_save = true\n") == (
        "automatic_state_save: is true but saved_state is not set"
    )


def test_certificate_file_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nbackends = []\nfrontends = [{ address = '
        '"127.0.0.1:8443", hostname = "a", certificate = "/no/cert.pem", key = "/no/key.pem" }]\n',
    )
    assert message == (
        'clusters.app.frontends[0].certificate: cannot read "/no/cert.pem": '
        "No such file or directory"
    )


def test_h2_needs_the_minimum_buffer_size(tmp_path: Path) -> None:
    text = 'buffer_size = 8192\n[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:443"\n'
    assert error_of(tmp_path, text).startswith("buffer_size: 8192 is below 16393")
    config = load_text(tmp_path, text + 'alpn_protocols = ["http/1.1"]\n')
    assert config.buffer_size == 8192


def test_disable_http11_conflicts_with_default_alpn(tmp_path: Path) -> None:
    text = '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:443"\ndisable_http11 = true\n'
    assert error_of(tmp_path, text).startswith("listeners[0].disable_http11: is true but")
    config = load_text(tmp_path, text + 'alpn_protocols = ["h2", "h2"]\n')
    assert config.listeners[0].alpn_protocols == ("h2",)


def test_hsts_only_over_tls(tmp_path: Path) -> None:
    text = '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:80"\nhsts = { enabled = true }\n'
    assert error_of(tmp_path, text).startswith("listeners[0].hsts: only valid on an https listener")


# ------------------------------------------------------------------------------------------
# Paths


def test_command_socket_and_saved_state_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    write(folder, 'command_socket = "run/sozu.sock"\nsaved_state = "../state/sozu.state"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/config.toml")
    assert config.command_socket == folder / "run" / "sozu.sock"
    assert config.saved_state == tmp_path / "state" / "sozu.state"
    assert config.config_path == folder / "config.toml"


def test_default_command_socket_is_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "")
    monkeypatch.chdir("/")
    assert load_config(tmp_path / "config.toml").command_socket == tmp_path / "sozu.sock"


def test_absolute_command_socket_is_kept(tmp_path: Path) -> None:
    config = load_text(tmp_path, 'command_socket = "/run/sozu/sozu.sock"\n')
    assert config.command_socket == Path("/run/sozu/sozu.sock")


@pytest.mark.parametrize("value", ["", ".", "..", "dir/.."])
def test_command_socket_must_name_a_file(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, f"command_socket = {json.dumps(value)}\n")
    assert message == f"command_socket: invalid value {json.dumps(value)}, expected a file path"


def test_certificate_paths_are_relative_to_the_working_directory(
    tmp_path: Path, tls_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "c.pem").write_bytes(tls_files["cert"].read_bytes())
    (certs / "k.pem").write_bytes(tls_files["key"].read_bytes())
    folder = tmp_path / "etc"
    folder.mkdir()
    write(
        folder,
        '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        'certificate = "certs/c.pem"\nkey = "certs/k.pem"\n',
    )
    monkeypatch.chdir(tmp_path)
    listener = load_config(folder / "config.toml").listeners[0]
    assert listener.certificate == tls_files["cert"].read_text()


# ------------------------------------------------------------------------------------------
# Requests


FULL_CONFIG = """
front_timeout = 50

[[listeners]]
protocol = "tcp"
address = "127.0.0.1:5432"

[[listeners]]
protocol = "https"
address = "127.0.0.1:8443"
tls_versions = ["TLS_V12"]

[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"
front_timeout = 5
answer_404 = "{answer}"
answers = {{ "503" = "HTTP/1.1 503 Busy\\r\\n\\r\\n", "404" = "" }}

[clusters.web]
protocol = "http"
load_balancing = "LEAST_LOADED"
sticky_session = true
backends = [
    {{ address = "127.0.0.1:1026" }},
    {{ address = "[::1]:1027", backend_id = "six", weight = 50, sticky_id = "s", backup = true }},
]

[[clusters.web.frontends]]
address = "127.0.0.1:8080"
hostname = "example.com"
path = "/api"
tags = {{ team = "a" }}

[[clusters.web.frontends]]
address = "127.0.0.1:8443"
hostname = "example.com"
certificate = "{cert}"
key = "{key}"
certificate_chain = "{chain}"
tls_versions = ["TLS_V13"]

[[clusters.web.frontends]]
address = "127.0.0.1:9090"
hostname = "other.example.com"
path = "^/v[0-9]+/"
path_type = "REGEX"
position = "TREE"

[clusters.db]
protocol = "tcp"
send_proxy = true
frontends = [
    {{ address = "127.0.0.1:5432", tags = {{ kind = "pg" }} }},
    {{ address = "127.0.0.1:6543" }},
]
backends = [{{ address = "10.0.0.1:5432" }}]
"""


@pytest.fixture
def full_config(tmp_path: Path, tls_files: dict[str, Path]) -> Config:
    answer = tmp_path / "404.http"
    answer.write_text("HTTP/1.1 404 Not Found\r\n\r\n")
    text = FULL_CONFIG.format(
        answer=answer, cert=tls_files["cert"], key=tls_files["key"], chain=tls_files["chain"]
    )
    return load_text(tmp_path, text)


def test_requests_order_and_ids(full_config: Config) -> None:
    assert full_config.warnings == []
    assert kinds(full_config) == [
        ("CONFIG-0", "add_http_listener"),  # 127.0.0.1:8080
        ("CONFIG-1", "add_http_listener"),  # 127.0.0.1:9090, made for a frontend
        ("CONFIG-2", "add_https_listener"),
        ("CONFIG-3", "add_tcp_listener"),  # 127.0.0.1:5432
        ("CONFIG-4", "add_tcp_listener"),  # 127.0.0.1:6543, made for a frontend
        ("CONFIG-5", "add_cluster"),
        ("CONFIG-6", "add_http_frontend"),
        ("CONFIG-7", "add_certificate"),
        ("CONFIG-8", "add_https_frontend"),
        ("CONFIG-9", "add_http_frontend"),
        ("CONFIG-10", "add_backend"),
        ("CONFIG-11", "add_backend"),
        ("CONFIG-12", "add_cluster"),
        ("CONFIG-13", "add_tcp_frontend"),
        ("CONFIG-14", "add_tcp_frontend"),
        ("CONFIG-15", "add_backend"),
        ("CONFIG-16", "activate_listener"),
        ("CONFIG-17", "activate_listener"),
        ("CONFIG-18", "activate_listener"),
        ("CONFIG-19", "activate_listener"),
        ("CONFIG-20", "activate_listener"),
    ]
    for request in full_config.to_requests():
        assert request.IsInitialized(), request


def test_listener_requests(full_config: Config) -> None:
    requests = [r.content for r in full_config.to_requests()]
    http = requests[0].add_http_listener
    assert addresses.to_text(http.address) == "127.0.0.1:8080"
    assert (http.front_timeout, http.back_timeout, http.connect_timeout) == (5, 30, 3)
    assert http.request_timeout == 10
    assert http.sticky_name == "SOZUBALANCEID"
    assert http.expect_proxy is False and http.active is False
    assert http.http_answers.answer_404 == "HTTP/1.1 404 Not Found\r\n\r\n"
    assert dict(http.answers) == {
        "404": "HTTP/1.1 404 Not Found\r\n\r\n",
        "503": "HTTP/1.1 503 Busy\r\n\r\n",
    }
    made = requests[1].add_http_listener
    assert addresses.to_text(made.address) == "127.0.0.1:9090"
    assert made.front_timeout == 50  # the global value, as Sōzu's default listeners inherit it
    https = requests[2].add_https_listener
    assert list(https.versions) == [TlsVersion.TLS_V1_2]
    assert list(https.alpn_protocols) == ["h2", "http/1.1"]
    assert https.send_tls13_tickets == 4
    assert len(https.cipher_list) == 9 and len(https.signature_algorithms) == 9
    assert not https.HasField("certificate")
    tcp = requests[3].add_tcp_listener
    assert tcp.front_timeout == 50 and tcp.back_timeout == 30 and tcp.connect_timeout == 3
    activations = [r.activate_listener for r in requests[16:]]
    assert [addresses.to_text(a.address) for a in activations] == [
        "127.0.0.1:8080",
        "127.0.0.1:9090",
        "127.0.0.1:8443",
        "127.0.0.1:5432",
        "127.0.0.1:6543",
    ]
    assert [a.proxy for a in activations] == [0, 0, 1, 2, 2]
    assert not any(a.from_scm for a in activations)


def test_cluster_frontend_and_backend_requests(
    full_config: Config, tls_files: dict[str, Path]
) -> None:
    requests = [r.content for r in full_config.to_requests()]
    cluster = requests[5].add_cluster
    assert cluster.cluster_id == "web"
    assert cluster.load_balancing == LoadBalancingAlgorithms.LEAST_LOADED
    assert cluster.sticky_session is True and cluster.https_redirect is False
    assert not cluster.HasField("proxy_protocol")

    http_frontend = requests[6].add_http_frontend
    assert http_frontend.cluster_id == "web"
    assert http_frontend.hostname == "example.com"
    assert (http_frontend.path.kind, http_frontend.path.value) == (PathRuleKind.PREFIX, "/api")
    assert http_frontend.position == RulePosition.PRE  # config frontends default to PRE
    assert dict(http_frontend.tags) == {"team": "a"}
    assert not http_frontend.HasField("redirect")

    certificate = requests[7].add_certificate
    assert addresses.to_text(certificate.address) == "127.0.0.1:8443"
    assert certificate.certificate.certificate == tls_files["cert"].read_text()
    assert certificate.certificate.key == tls_files["key"].read_text()
    chain = certificate.certificate.certificate_chain
    assert len(chain) == 2
    assert all(c.startswith("-----BEGIN CERTIFICATE-----") for c in chain)
    assert all(c.endswith("-----END CERTIFICATE-----") for c in chain)
    assert list(certificate.certificate.versions) == [TlsVersion.TLS_V1_3]
    assert list(certificate.certificate.names) == []
    assert requests[8].add_https_frontend.hostname == "example.com"

    regex = requests[9].add_http_frontend
    assert (regex.path.kind, regex.path.value) == (PathRuleKind.REGEX, "^/v[0-9]+/")
    assert regex.position == RulePosition.TREE

    first, second = requests[10].add_backend, requests[11].add_backend
    assert first.backend_id == "web-0-127.0.0.1:1026"
    assert first.load_balancing_parameters.weight == 100
    assert not first.HasField("sticky_id") and not first.HasField("backup")
    assert (second.backend_id, second.load_balancing_parameters.weight) == ("six", 50)
    assert (second.sticky_id, second.backup) == ("s", True)
    assert addresses.to_text(second.address) == "[::1]:1027"

    db = requests[12].add_cluster
    assert db.proxy_protocol == ProxyProtocolConfig.SEND_HEADER
    assert dict(requests[13].add_tcp_frontend.tags) == {"kind": "pg"}
    assert requests[15].add_backend.backend_id == "db-0-10.0.0.1:5432"


def test_typed_model(full_config: Config) -> None:
    assert [c.cluster_id for c in full_config.clusters] == ["web", "db"]
    assert full_config.clusters[0].protocol is ClusterProtocol.HTTP
    https = full_config.listeners_of(ListenerProtocol.HTTPS)
    assert [listener.address for listener in https] == ["127.0.0.1:8443"]


def test_backend_id_default_uses_the_canonical_address(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "tcp"\nfrontends = []\n'
        'backends = [{ address = "[::0001]:80" }, { address = "127.0.0.1:81" }]\n',
    )
    ids = [backend.backend_id for backend in config.clusters[0].backends]
    assert ids == ["app-0-[::1]:80", "app-1-127.0.0.1:81"]


@pytest.mark.parametrize("name", ["ROUND_ROBIN", "RANDOM", "LEAST_LOADED", "POWER_OF_TWO"])
def test_load_balancing_spellings(tmp_path: Path, name: str) -> None:
    config = load_text(
        tmp_path,
        f'[clusters.app]\nprotocol = "tcp"\nload_balancing = "{name}"\n'
        "frontends = []\nbackends = []\n",
    )
    cluster = config.to_requests()[0].content.add_cluster
    assert cluster.load_balancing == LoadBalancingAlgorithms.Value(name)


@pytest.mark.parametrize("name", ["HRW", "MAGLEV"])
def test_flow_hashing_load_balancing_is_refused_outside_udp(tmp_path: Path, name: str) -> None:
    text = f'[clusters.app]\nprotocol = "tcp"\nload_balancing = "{name}"\nfrontends = []\n'
    message = error_of(tmp_path, text + "backends = []\n")
    assert message.startswith(f"clusters.app.load_balancing: {name} load balancing is only for UDP")


def test_load_balancing_defaults_to_round_robin_and_is_upper_case(tmp_path: Path) -> None:
    text = '[clusters.app]\nprotocol = "tcp"\nfrontends = []\nbackends = []\n'
    assert load_text(tmp_path, text).clusters[0].load_balancing == "ROUND_ROBIN"
    message = error_of(tmp_path, text + 'load_balancing = "round_robin"\n')
    assert message == (
        'clusters.app.load_balancing: invalid value "round_robin", expected one of ROUND_ROBIN, '
        "RANDOM, LEAST_LOADED, POWER_OF_TWO, HRW, MAGLEV (mind the case)"
    )


def test_https_frontend_takes_the_listener_certificate(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    config = load_text(
        tmp_path,
        f'[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        f'certificate = "{tls_files["cert"]}"\nkey = "{tls_files["key"]}"\n'
        '[clusters.app]\nprotocol = "http"\nbackends = []\n'
        'frontends = [{ address = "127.0.0.1:8443", hostname = "example.com" }]\n',
    )
    assert [kind for _, kind in kinds(config)] == [
        "add_https_listener",
        "add_cluster",
        "add_certificate",
        "add_https_frontend",
        "activate_listener",
    ]
    listener = config.to_requests()[0].content.add_https_listener
    assert listener.certificate == tls_files["cert"].read_text()


def test_https_frontend_without_any_certificate_is_refused(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        '[clusters.app]\nprotocol = "http"\nbackends = []\n'
        'frontends = [{ address = "127.0.0.1:8443", hostname = "example.com" }]\n',
    )
    assert message.startswith(
        "clusters.app.frontends[0].address: 127.0.0.1:8443 is an https listener (listeners[0]) "
        "without a certificate"
    )


def test_frontend_with_certificate_and_no_listener_gets_an_https_listener(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    config = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nbackends = []\n'
        f'frontends = [{{ address = "127.0.0.1:8443", hostname = "a", '
        f'certificate = "{tls_files["cert"]}", key = "{tls_files["key"]}" }}]\n',
    )
    assert kinds(config)[0] == ("CONFIG-0", "add_https_listener")


def test_frontend_protocol_mismatches(tmp_path: Path) -> None:
    tcp_listener = '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:80"\n'
    message = error_of(
        tmp_path,
        tcp_listener + '[clusters.app]\nprotocol = "http"\nbackends = []\n'
        'frontends = [{ address = "127.0.0.1:80", hostname = "a" }]\n',
    )
    assert message.startswith("clusters.app.frontends[0].address: 127.0.0.1:80 is a tcp listener")
    message = error_of(
        tmp_path,
        '[clusters.app]\nprotocol = "tcp"\nbackends = []\n'
        'frontends = [{ address = "127.0.0.1:80", hostname = "a" }]\n',
    )
    assert message == "clusters.app.frontends[0].hostname: not allowed in a tcp cluster's frontend"


def test_tcp_cluster_proxy_protocol_follows_listeners(tmp_path: Path) -> None:
    listeners = (
        '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:81"\nexpect_proxy = true\n'
        '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:82"\n'
    )
    cluster = '[clusters.t]\nprotocol = "tcp"\nbackends = []\n'
    expect = load_text(
        tmp_path, listeners + cluster + 'frontends = [{ address = "127.0.0.1:81" }]\n'
    )
    assert expect.clusters[0].proxy_protocol == "EXPECT_HEADER"
    relay = load_text(
        tmp_path,
        listeners + cluster + 'send_proxy = true\nfrontends = [{ address = "127.0.0.1:81" }]\n',
    )
    assert relay.clusters[0].proxy_protocol == "RELAY_HEADER"
    message = error_of(
        tmp_path,
        listeners
        + cluster
        + 'frontends = [{ address = "127.0.0.1:81" }, { address = "127.0.0.1:82" }]\n',
    )
    assert message.startswith("clusters.t.frontends[1].address: the frontends of a tcp cluster")


def test_udp_listener_and_frontend(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        'front_timeout = 90\n[[listeners]]\nprotocol = "udp"\naddress = "0.0.0.0:53"\n'
        '[clusters.dns]\nprotocol = "tcp"\nload_balancing = "HRW"\n'
        'frontends = [{ address = "0.0.0.0:53" }]\nbackends = [{ address = "10.0.0.10:53" }]\n'
        '[clusters.dns.udp]\naffinity_key = "SOURCE_IP"\nresponses = 1\n'
        '[clusters.dns.udp.health]\nmode = "TCP_PROBE"\ntcp_port = 53\n',
    )
    requests = [r.content for r in config.to_requests()]
    assert [r.WhichOneof("request_type") for r in requests] == [
        "add_udp_listener",
        "add_cluster",
        "add_udp_frontend",
        "add_backend",
        "activate_listener",
    ]
    udp = requests[0].add_udp_listener
    assert (udp.front_timeout, udp.back_timeout) == (30, 30)  # UDP's own defaults, not globals
    assert (udp.max_rx_datagram_size, udp.max_flows) == (1500, 0)
    assert requests[1].add_cluster.udp.responses == 1
    assert requests[1].add_cluster.udp.health.tcp_port == 53
    assert requests[4].activate_listener.proxy == 3


def test_activate_listeners_false_and_disabled_cluster_metrics(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "activate_listeners = false\ndisable_cluster_metrics = true\n"
        '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:80"\n',
    )
    assert kinds(config) == [("CONFIG-0", "add_http_listener"), ("CONFIG-1", "configure_metrics")]
    assert config.to_requests()[1].content.configure_metrics == 1  # DISABLED


def test_ignored_options_are_warnings(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:80"\nsticky_name = "X"\n'
        '[clusters.t]\nprotocol = "tcp"\nsticky_session = true\nbackends = []\n'
        'frontends = [{ address = "127.0.0.1:80", position = "TREE" }]\n',
    )
    path = tmp_path / "config.toml"
    assert config.warnings == [
        f"{path}: listeners[0].sticky_name: ignored on a tcp listener",
        f"{path}: clusters.t.sticky_session: ignored in a tcp cluster",
        f"{path}: clusters.t.frontends[0].position: ignored in a tcp cluster's frontend",
    ]


def test_headers_redirects_and_health_check(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nbackends = []\n'
        '[clusters.app.health_check]\nuri = "/health"\n'
        '[[clusters.app.frontends]]\naddress = "127.0.0.1:80"\nhostname = "a"\n'
        'redirect = "Permanent"\nredirect_scheme = "use-https"\nrewrite_port = 8443\n'
        '[[clusters.app.frontends.headers]]\nposition = "response"\nkey = "X-A"\nvalue = "1\\t2"\n',
    )
    requests = [r.content for r in config.to_requests()]
    health = requests[1].add_cluster.health_check
    assert (health.uri, health.interval, health.timeout) == ("/health", 10, 5)
    assert (health.healthy_threshold, health.unhealthy_threshold, health.expected_status) == (
        3,
        3,
        0,
    )
    frontend = requests[2].add_http_frontend
    assert frontend.redirect == 1  # PERMANENT
    assert frontend.redirect_scheme == 2  # USE_HTTPS
    assert frontend.rewrite_port == 8443
    assert [(h.position, h.key, h.val) for h in frontend.headers] == [(2, "X-A", "1\t2")]


def test_header_injection_is_refused(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nbackends = []\n'
        '[[clusters.app.frontends]]\naddress = "127.0.0.1:80"\nhostname = "a"\n'
        'headers = [{ position = "both", key = "X-A", value = "a\\r\\nb" }]\n',
    )
    assert message == (
        "clusters.app.frontends[0].headers[0].value: control characters are not allowed in a header"
    )


def test_demo_config_loads_cleanly() -> None:
    path = demo_config_path()
    assert path.name == "demo.toml" and path.is_file()
    config = load_config(path)
    assert config.warnings == []
    assert config.worker_count == 1
    assert config.command_socket == path.parent / "sozu.sock"
    assert [(listener.protocol, listener.address) for listener in config.listeners] == [
        (ListenerProtocol.HTTP, "127.0.0.1:8080"),
        (ListenerProtocol.HTTPS, "127.0.0.1:8443"),
    ]
    assert config.listeners[1].certificate is None
    [cluster] = config.clusters
    assert (cluster.cluster_id, cluster.load_balancing) == ("demo", "ROUND_ROBIN")
    [frontend] = cluster.frontends
    assert isinstance(frontend, HttpFrontendConfig)
    assert (frontend.address, frontend.hostname) == ("127.0.0.1:8080", "localhost")
    assert [backend.address for backend in cluster.backends] == ["127.0.0.1:8081"]
    assert [kind for _, kind in kinds(config)] == [
        "add_http_listener",
        "add_https_listener",
        "add_cluster",
        "add_http_frontend",
        "add_backend",
        "activate_listener",
        "activate_listener",
    ]


# ------------------------------------------------------------------------------------------
# Fuzzing: whatever the input, a Config or a ConfigError


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


KNOWN_KEYS = sorted(
    set(SOZU_DEFAULTS)
    | {"command_socket", "address", "protocol", "hostname", "path", "path_type", "frontends"}
    | {"backends", "certificate", "key", "load_balancing", "position", "tags", "weight"}
    | {"tls_versions", "alpn_protocols", "hsts", "enabled", "answers", "headers", "udp", "health"}
    | {"health_check", "uri", "public_address", "expect_proxy", "send_proxy", "backend_id"}
)
PLAUSIBLE = st.sampled_from(
    ["http", "https", "tcp", "udp", "127.0.0.1:8080", "[::1]:80", "0.0.0.0:0", "ROUND_ROBIN",
     "MAGLEV", "PRE", "TREE", "REGEX", "/", "", "h2", "http/1.1", "TLS_V12", "request", "a", "*(",
     "file://", "file:///nonexistent", "/nonexistent/cert.pem"]
)  # fmt: skip
SCALARS = (
    PLAUSIBLE
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
TABLE = st.dictionaries(st.sampled_from(KNOWN_KEYS), VALUES, max_size=6)
ADDRESSES = st.sampled_from(["127.0.0.1:80", "127.0.0.1:443", "[::1]:80", "10.0.0.1:5432"])
# Mostly well-formed tables, so that the fuzzing also reaches frontends, backends and requests.
LISTENERS = st.fixed_dictionaries(
    {"protocol": st.sampled_from(["http", "https", "tcp", "udp"]), "address": ADDRESSES},
    optional={
        "expect_proxy": st.booleans(),
        "front_timeout": st.integers(0, 2**32),
        "alpn_protocols": st.lists(st.sampled_from(["h2", "http/1.1"]), max_size=3),
        "disable_http11": st.booleans(),
        "answers": st.dictionaries(st.sampled_from(["404", "503"]), PLAUSIBLE, max_size=2),
        "max_flows": st.integers(0, 2**32),
        "public_address": ADDRESSES,
        "hsts": st.fixed_dictionaries(
            {}, optional={"enabled": st.booleans(), "preload": st.booleans()}
        ),
    },
)
FRONTENDS = st.fixed_dictionaries(
    {"address": ADDRESSES},
    optional={
        "hostname": st.sampled_from(["example.com", "*.example.com", ""]),
        "path": PLAUSIBLE,
        "path_type": st.sampled_from(["PREFIX", "REGEX", "EQUALS", "prefix"]),
        "position": st.sampled_from(["PRE", "POST", "TREE"]),
        "tags": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
        "redirect": st.sampled_from(["forward", "PERMANENT", "found"]),
        "headers": st.lists(
            st.fixed_dictionaries(
                {
                    "position": st.sampled_from(["request", "both"]),
                    "key": PLAUSIBLE,
                    "value": st.text(max_size=4),
                }
            ),
            max_size=2,
        ),
    },
)
BACKENDS = st.fixed_dictionaries(
    {"address": ADDRESSES},
    optional={
        "weight": st.integers(-1, 300),
        "backend_id": st.text(max_size=4),
        "backup": st.booleans(),
    },
)
CLUSTERS = st.fixed_dictionaries(
    {
        "protocol": st.sampled_from(["http", "tcp"]),
        "frontends": st.lists(FRONTENDS, max_size=3),
        "backends": st.lists(BACKENDS, max_size=3),
    },
    optional={
        "load_balancing": st.sampled_from(["ROUND_ROBIN", "HRW", "random"]),
        "send_proxy": st.booleans(),
        "health_check": st.fixed_dictionaries({"uri": PLAUSIBLE}, optional={"interval": SCALARS}),
        "answers": st.dictionaries(st.sampled_from(["503"]), PLAUSIBLE, max_size=1),
    },
)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "listeners": st.lists(LISTENERS | TABLE, max_size=3),
        "clusters": st.dictionaries(
            st.sampled_from(["a", "b", "c d"]), CLUSTERS | TABLE, max_size=2
        ),
        "metrics": st.one_of(st.just({"address": "127.0.0.1:8125"}), TABLE),
        "worker_count": st.one_of(st.just(1), st.just(1), VALUES),
        "command_socket": st.one_of(st.just("s.sock"), st.just("/s.sock"), VALUES),
        "buffer_size": st.one_of(st.just(1024), st.just(16393), VALUES),
    },
)  # fmt: skip


def exercise(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            config = parse_config(text, os.path.join(folder, "config.toml"))
        except ConfigError:
            return
        for request in config.to_requests():
            request.SerializeToString()
        config.server_config().SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS, st.dictionaries(st.text(max_size=6), VALUES, max_size=3))
def test_fuzz_structured_documents(document: dict[str, Any], extra: dict[str, Any]) -> None:
    lines = [f"{toml_value(k)} = {toml_value(v)}" for k, v in {**extra, **document}.items()]
    exercise("\n".join(lines))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}=\"., \n\t#abcl0123:-_\\'")), max_size=60))
def test_fuzz_raw_text(text: str) -> None:
    exercise(text)
