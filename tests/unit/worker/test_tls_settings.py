"""TLS listener settings through real handshakes: what is applied is effective, and what
Python's ssl module cannot apply exactly (TLS 1.3 suites, several groups) is reported.

The server side is a `ListenerTls` context (the one a worker's HTTPS listener serves with),
the client a stdlib context trusting a trustme CA; both ends of a loopback socketpair.
"""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
import trustme

from sozu.command.certificate import fingerprint_hex
from sozu.command.config_model import DEFAULT_CIPHER_LIST, DEFAULT_GROUPS_LIST
from sozu.command.proto import CertificateAndKey, HttpsListenerConfig, TlsVersion
from sozu.worker.tls import ListenerTls, SettingNote, TlsSettings, apply_settings

NAME = "app.test"
TLS12_ONLY = (TlsVersion.TLS_V1_2,)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def certificate(ca: trustme.CA) -> CertificateAndKey:
    leaf = ca.issue_cert(NAME, key_type=trustme.KeyType.RSA)
    pem = leaf.cert_chain_pems[0].bytes().decode()
    return CertificateAndKey(certificate=pem, key=leaf.private_key_pem.bytes().decode())


def listener(
    certificate: CertificateAndKey,
    *,
    versions: tuple[TlsVersion.ValueType, ...] = (TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3),
    cipher_list: tuple[str, ...] = DEFAULT_CIPHER_LIST,
    cipher_suites: tuple[str, ...] = DEFAULT_CIPHER_LIST,
    groups: tuple[str, ...] = DEFAULT_GROUPS_LIST,
) -> ssl.SSLContext:
    tls = ListenerTls("127.0.0.1:8443")
    config = HttpsListenerConfig(
        versions=versions, cipher_list=cipher_list, cipher_suites=cipher_suites, groups_list=groups
    )
    assert tls.update(config, {fingerprint_hex(certificate.certificate): certificate}) == []
    return tls.context


def client(
    ca: trustme.CA, *, group: str | None = None, cipher: str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if group is not None:
        context.set_ecdh_curve(group)
    if cipher is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
    return context


def handshake(server: ssl.SSLContext, client_context: ssl.SSLContext) -> str | None:
    """The cipher negotiated, or None when the handshake fails."""
    near, far = socket.socketpair()
    near.settimeout(5)
    far.settimeout(5)

    def serve() -> None:
        try:
            with server.wrap_socket(far, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            far.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(near, server_hostname=NAME) as tls:
            cipher = tls.cipher()
            return cipher[0] if cipher else None
    except (ssl.SSLError, OSError):
        return None
    finally:
        near.close()
        thread.join(5)


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_one_group_in_groups_list_is_the_only_group_accepted(
    ca: trustme.CA, certificate: CertificateAndKey, maximum: ssl.TLSVersion
) -> None:
    server = listener(certificate, groups=("P-384",))
    p256, p384 = client(ca, group="prime256v1"), client(ca, group="secp384r1")
    for context in (p256, p384):
        context.maximum_version = maximum
    assert handshake(server, p384) is not None
    assert handshake(server, p256) is None
    assert handshake(listener(certificate), p256) is not None  # Sōzu's default list takes it


def test_cipher_list_restricts_tls12(ca: trustme.CA, certificate: CertificateAndKey) -> None:
    server = listener(
        certificate, versions=TLS12_ONLY, cipher_list=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",)
    )
    assert handshake(server, client(ca)) == "ECDHE-RSA-AES128-GCM-SHA256"
    assert handshake(server, client(ca, cipher="ECDHE-RSA-AES256-GCM-SHA384")) is None


def notes(**fields: tuple[str, ...] | tuple[int, ...]) -> list[SettingNote]:
    defaults: dict[str, tuple[str, ...] | tuple[int, ...]] = {
        "versions": (TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3),
        "cipher_list": DEFAULT_CIPHER_LIST,
        "cipher_suites": DEFAULT_CIPHER_LIST,
        "groups_list": DEFAULT_GROUPS_LIST,
    }
    defaults.update(fields)
    settings = TlsSettings.of(HttpsListenerConfig(**defaults))  # type: ignore[arg-type]
    return apply_settings(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)


def test_sozu_defaults_and_what_applies_exactly_give_no_note() -> None:
    assert notes() == []
    assert notes(groups_list=("x25519",)) == []
    assert notes(cipher_list=("ECDHE-RSA-AES128-GCM-SHA256",)) == []  # no TLS 1.3 wish
    openssl_order = (
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
    )
    assert notes(cipher_suites=openssl_order) == []


def test_what_cannot_be_applied_is_named_with_what_is_used() -> None:
    (suites,) = notes(cipher_suites=("TLS13_AES_128_GCM_SHA256",))
    assert (suites.key, suites.configured) == ("cipher_suites", "TLS_AES_128_GCM_SHA256")
    assert "TLS_AES_256_GCM_SHA384" in suites.used and "TLS 1.3" in suites.reason
    (listed,) = notes(cipher_list=("TLS13_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"))
    assert listed.key == "cipher_list" and listed.configured == "TLS_CHACHA20_POLY1305_SHA256"
    (groups,) = notes(groups_list=("x25519", "P-256"))
    assert groups.key == "groups_list" and "OpenSSL's defaults" in groups.used
    (unknown,) = notes(groups_list=("no-such-group",))
    assert unknown.key == "groups_list" and "unknown" in unknown.reason
    (dropped,) = notes(cipher_list=("ECDHE-RSA-AES128-GCM-SHA256", "NO-SUCH-CIPHER"))
    assert dropped.key == "cipher_list" and dropped.configured == "NO-SUCH-CIPHER"


def test_tls13_suites_do_not_matter_without_tls13() -> None:
    assert notes(versions=TLS12_ONLY, cipher_suites=("TLS13_AES_128_GCM_SHA256",)) == []
