"""TLS termination for HTTPS listeners: one server `ssl.SSLContext` per listener, SNI selection.

`ListenerTls` owns the context handed to `loop.create_server(..., ssl=...)` for one HTTPS
listener. That context never changes identity: its `sni_callback` switches each new handshake
to the context of the certificate that serves the requested name, looked up in tables rebuilt
whenever the listener's certificates change:

1. a certificate whose names contain the SNI name exactly (case-insensitive);
2. else one with the wildcard name `*.rest` where the SNI name is `label.rest` (one label);
3. else the listener's default certificate: the one in the listener's own configuration when
   set, else the oldest certificate still present on the listener (a replacement takes the
   place of the certificate it replaces). A handshake without SNI gets the default too.
   (Sōzu refuses a handshake without SNI and serves a built-in self-signed certificate for
   unknown names; here the operator's default is served in both cases.) With no certificate
   at all the handshake fails.

When several certificates carry the same name, the one expiring last wins (as in Sōzu).
A handshake in progress or a connection already established keeps the context it started
with: OpenSSL holds a reference to it, so replacing or removing a certificate only affects
new handshakes and never closes a connection.

Per-listener settings: `versions` (TlsVersion values -> minimum/maximum protocol version),
`cipher_list` (TLS 1.2 ciphers; IANA names as in Sōzu's configuration are mapped to OpenSSL's),
`groups_list` (applied when it names one group: `set_ecdh_curve`, which OpenSSL 3 turns into a
one-group list for TLS 1.2 and 1.3 alike), ALPN `http/1.1` only (h2 comes later). Python's ssl
module cannot choose TLS 1.3 suites (`cipher_suites`, or the TLS13_ names of `cipher_list` that
Sōzu reads them from) nor set several groups: OpenSSL's defaults are used then, and
`apply_settings` reports each such gap as a `SettingNote`, logged once per listener
(`tls_setting_not_applied`). Sōzu's default lists never give a note: doc/tls.md compares them.

Private keys are loaded from an anonymous in-memory file (`memfd_create`) or, where that is
missing, from a 0600 temporary file deleted right after loading.

This module knows the state's certificate records and `ssl`; it knows nothing of sessions.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sozu.command import certificate as certs
from sozu.command.addresses import to_proto
from sozu.command.config_model import DEFAULT_CIPHER_LIST, DEFAULT_GROUPS_LIST
from sozu.command.errors import AddressError
from sozu.command.logging import get_logger
from sozu.command.proto import (
    CertificateAndKey,
    HstsConfig,
    HttpsListenerConfig,
    ListenerType,
    TlsVersion,
)
from sozu.command.state import ConfigState, StateError

log = get_logger(__name__)

ALPN_PROTOCOLS = ["http/1.1"]
DEFAULT_HSTS_MAX_AGE = 31_536_000

_VERSIONS: dict[int, ssl.TLSVersion] = {
    TlsVersion.TLS_V1_0: ssl.TLSVersion.TLSv1,
    TlsVersion.TLS_V1_1: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLS_V1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS_V1_3: ssl.TLSVersion.TLSv1_3,
}

# IANA (and rustls) cipher names, as Sōzu's configuration spells them -> OpenSSL names.
_OPENSSL_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}

# Group names as Sōzu's configuration spells them (rustls) -> OpenSSL's short names.
_OPENSSL_GROUPS = {
    "x25519": "X25519",
    "x448": "X448",
    "P-256": "prime256v1",
    "secp256r1": "prime256v1",
    "P-384": "secp384r1",
    "P-521": "secp521r1",
}
_TLS13_SUITES = frozenset(
    {
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)
OPENSSL_DEFAULTS = "OpenSSL's defaults"


class TlsError(ValueError):
    """A certificate, key or TLS setting that OpenSSL refuses."""


def hsts_value(config: HstsConfig | None) -> bytes | None:
    """The Strict-Transport-Security header value for an HSTS policy, None when it is off."""
    if config is None or not (config.HasField("enabled") and config.enabled):
        return None
    max_age = config.max_age if config.HasField("max_age") else DEFAULT_HSTS_MAX_AGE
    value = f"max-age={max_age}"
    if config.HasField("include_subdomains") and config.include_subdomains:
        value += "; includeSubDomains"
    if config.HasField("preload") and config.preload:
        value += "; preload"
    return value.encode("ascii")


def _is_tls13(name: str) -> bool:
    return name.startswith("TLS13_") or name in _TLS13_SUITES


def openssl_cipher_string(names: Iterable[str]) -> str | None:
    """TLS 1.2 cipher names (IANA or OpenSSL spelling) -> an OpenSSL cipher string."""
    kept = [_OPENSSL_CIPHERS.get(name, name) for name in names if not _is_tls13(name)]
    return ":".join(kept) if kept else None


def tls13_suites(names: Iterable[str]) -> tuple[str, ...]:
    """The TLS 1.3 suites among `names`, in OpenSSL's spelling (TLS13_X -> TLS_X)."""
    return tuple(
        "TLS_" + name.removeprefix("TLS13_") if name.startswith("TLS13_") else name
        for name in names
        if _is_tls13(name)
    )


def openssl_group(name: str) -> str:
    """A key exchange group name from the configuration, in OpenSSL's spelling."""
    return _OPENSSL_GROUPS.get(name, name)


@dataclass(frozen=True)
class TlsSettings:
    """What a listener's configuration says about TLS (not about certificates)."""

    versions: tuple[int, ...] = (TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3)
    ciphers: str | None = None
    cipher_list: tuple[str, ...] = ()
    cipher_suites: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, listener: HttpsListenerConfig | None) -> TlsSettings:
        if listener is None:
            return cls()
        versions = tuple(v for v in listener.versions if v in _VERSIONS) or cls.versions
        return cls(
            versions,
            openssl_cipher_string(listener.cipher_list),
            tuple(listener.cipher_list),
            tuple(listener.cipher_suites),
            tuple(listener.groups_list),
        )


@dataclass(frozen=True)
class SettingNote:
    """A configured TLS setting the context does not carry exactly, and what it uses instead."""

    key: str
    configured: str
    used: str
    reason: str


def apply_settings(context: ssl.SSLContext, settings: TlsSettings) -> list[SettingNote]:
    """Apply what Python's ssl module can; a note for each setting it cannot apply exactly.

    Raises TlsError (context untouched) when OpenSSL refuses the TLS 1.2 cipher list.
    """
    if settings.ciphers:  # first: a refused list leaves the context untouched
        try:
            context.set_ciphers(settings.ciphers)
        except ssl.SSLError as error:
            raise TlsError(f"cipher list {settings.ciphers!r} refused: {error}") from None
    known = sorted(_VERSIONS[v] for v in settings.versions)
    context.minimum_version = known[0]
    context.maximum_version = known[-1]
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    notes = [_apply_groups(context, settings.groups), _check_tls12(context, settings)]
    if known[-1] >= ssl.TLSVersion.TLSv1_3:
        notes.append(_check_tls13(context, "cipher_list", settings.cipher_list))
        notes.append(_check_tls13(context, "cipher_suites", settings.cipher_suites))
    return [note for note in notes if note is not None]


def _apply_groups(context: ssl.SSLContext, groups: tuple[str, ...]) -> SettingNote | None:
    if not groups or groups == DEFAULT_GROUPS_LIST:
        return None  # Sōzu's default too uses its TLS library's groups (doc/tls.md)
    used = f"{OPENSSL_DEFAULTS} ({ssl.OPENSSL_VERSION})"
    if len(groups) > 1:
        reason = "Python's ssl module sets one group only (set_ecdh_curve)"
        return SettingNote("groups_list", ",".join(groups), used, reason)
    try:
        context.set_ecdh_curve(openssl_group(groups[0]))
    except ValueError:
        reason = f"group {groups[0]!r} is unknown to this OpenSSL"
        return SettingNote("groups_list", groups[0], used, reason)
    return None


def _check_tls12(context: ssl.SSLContext, settings: TlsSettings) -> SettingNote | None:
    """Names OpenSSL silently dropped from the cipher list (unknown, or not TLS 1.2 ones)."""
    if not settings.ciphers:
        return None
    available = {c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    missing = [
        name
        for name in settings.ciphers.split(":")
        if "-" in name and not any(mark in name for mark in "+!@") and name not in available
    ]
    if not missing:
        return None
    reason = "unknown to this OpenSSL or not TLS 1.2 ciphers: left out"
    return SettingNote("cipher_list", ":".join(missing), ":".join(sorted(available)), reason)


def _check_tls13(context: ssl.SSLContext, key: str, names: tuple[str, ...]) -> SettingNote | None:
    wanted = tls13_suites(names)
    if not wanted or names == DEFAULT_CIPHER_LIST:
        return None
    used = tuple(c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3")
    if wanted == used:
        return None
    reason = "Python's ssl module cannot choose TLS 1.3 suites"
    return SettingNote(key, ":".join(wanted), ":".join(used), reason)


def _server_context(settings: TlsSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    apply_settings(context, settings)
    return context


@contextlib.contextmanager
def _pem_file(text: str) -> Iterator[str]:
    """A path whose content is `text`, readable by this process only, gone afterwards."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("sozu-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, text.encode("utf-8"))
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="sozu-tls-")  # mode 0600
    try:
        os.write(fd, text.encode("utf-8"))
        os.close(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def certificate_context(cert: CertificateAndKey, settings: TlsSettings) -> ssl.SSLContext:
    """A server context serving one certificate (with its chain) and its key."""
    context = _server_context(settings)
    chain = "\n".join([cert.certificate.strip(), *(c.strip() for c in cert.certificate_chain)])
    try:
        with _pem_file(chain + "\n") as cert_path, _pem_file(cert.key) as key_path:
            context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as error:
        raise TlsError(f"certificate or key refused: {error}") from None
    return context


@dataclass
class _Served:
    fingerprint: str
    names: tuple[str, ...]
    not_after: float
    context: ssl.SSLContext


def _not_after(pem: str) -> float:
    try:
        return certs.load_leaf(pem).not_valid_after_utc.timestamp()
    except (certs.CertificateError, ValueError):
        return datetime.now(UTC).timestamp()


class ListenerTls:
    """The TLS side of one HTTPS listener (module docstring)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.settings = TlsSettings()
        self.context = _server_context(self.settings)
        self.context.sni_callback = self._select
        self._served: dict[str, _Served] = {}  # fingerprint -> served
        self._order: list[str] = []  # fingerprints, oldest first (the default is the first)
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self._own: _Served | None = None  # the certificate of the listener's configuration
        self._names: dict[int, tuple[str, ...]] = {}  # id(context) -> its certificate's names

    # --- selection (runs inside each handshake) ----------------------------------------

    def _select(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        chosen = self.lookup(server_name)
        if chosen is not None:
            sock.context = chosen
            if server_name:  # the names this connection may serve (strict_sni_binding, 421)
                sock.sozu_names = self._names.get(id(chosen), ())  # type: ignore[attr-defined]
        return None

    def lookup(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a handshake asking for `server_name` (None: no SNI)."""
        if server_name:
            name = server_name.lower()
            found = self._exact.get(name)
            if found is not None:
                return found
            dot = name.find(".")
            if dot > 0:
                found = self._wildcard.get(name[dot + 1 :])
                if found is not None:
                    return found
        return self._default

    # --- updates -----------------------------------------------------------------------

    def replaced(self, old_fingerprint: str, new_fingerprint: str) -> None:
        """A replacement takes the place of the certificate it replaces (default included);
        call before `update`."""
        self._order = [new_fingerprint if fp == old_fingerprint else fp for fp in self._order]

    def update(
        self, listener: HttpsListenerConfig | None, certificates: dict[str, CertificateAndKey]
    ) -> list[str]:
        """Take the listener's settings and certificates; problems found (certificate skipped)."""
        problems: list[str] = []
        settings = TlsSettings.of(listener)
        rebuild_all = settings != self.settings
        if rebuild_all:
            try:
                notes = apply_settings(self.context, settings)
            except TlsError as error:
                return [f"HTTPS listener {self.address}: {error}"]
            self.settings = settings
            for note in notes:  # once: settings change only with a new listener
                log.warning(
                    "tls_setting_not_applied",
                    listener=self.address,
                    key=note.key,
                    configured=note.configured,
                    used=note.used,
                    reason=note.reason,
                )
        served: dict[str, _Served] = {}
        order = [fp for fp in self._order if fp in certificates]
        order += [fp for fp in certificates if fp not in order]
        for fingerprint in order:
            previous = self._served.get(fingerprint)
            if previous is not None and not rebuild_all:
                served[fingerprint] = previous
                continue
            cert = certificates[fingerprint]
            try:
                context = certificate_context(cert, settings)
            except TlsError as error:
                problems.append(f"certificate {fingerprint[:16]} on {self.address}: {error}")
                continue
            names = tuple(n.lower() for n in cert.names) or tuple(
                n.lower() for n in certs.names(cert.certificate)
            )
            served[fingerprint] = _Served(fingerprint, names, _not_after(cert.certificate), context)
        own = self._own
        if listener is not None and listener.HasField("certificate") and listener.key:
            own_fp = certs.fingerprint_hex(listener.certificate)
            if own is None or own.fingerprint != own_fp or rebuild_all:
                pair = CertificateAndKey(
                    certificate=listener.certificate,
                    certificate_chain=listener.certificate_chain,
                    key=listener.key,
                )
                try:
                    context = certificate_context(pair, settings)
                    own_names = tuple(n.lower() for n in certs.names(pair.certificate))
                    own = _Served(own_fp, own_names, _not_after(pair.certificate), context)
                except (TlsError, certs.CertificateError, ValueError) as error:
                    problems.append(f"HTTPS listener {self.address} certificate: {error}")
                    own = None
        else:
            own = None
        self._install(served, own)
        return problems

    def _install(self, served: dict[str, _Served], own: _Served | None) -> None:
        exact: dict[str, _Served] = {}
        wildcard: dict[str, _Served] = {}
        for entry in served.values():
            for name in entry.names:
                table, key = (wildcard, name[2:]) if name.startswith("*.") else (exact, name)
                current = table.get(key)
                if current is None or entry.not_after > current.not_after:
                    table[key] = entry
        default = own if own is not None else next(iter(served.values()), None)
        # Swap whole tables: a handshake running now sees either the old or the new ones.
        self._served = served
        self._order = list(served)
        self._own = own
        self._exact = {k: v.context for k, v in exact.items()}
        self._wildcard = {k: v.context for k, v in wildcard.items()}
        self._default = default.context if default is not None else None
        self._names = {id(v.context): v.names for v in (*served.values(), *([own] if own else []))}
        log.debug(
            "tls_certificates_installed",
            address=self.address,
            certificates=len(served),
            names=len(exact) + len(wildcard),
        )


class TlsContexts:
    """Every HTTPS listener's `ListenerTls` of one worker, kept in step with its ConfigState."""

    def __init__(self) -> None:
        self._listeners: dict[str, ListenerTls] = {}

    def get(self, address: str) -> ListenerTls | None:
        return self._listeners.get(address)

    def context(self, state: ConfigState, address: str) -> ssl.SSLContext:
        """The server context of a listener (created and filled from `state` the first time)."""
        entry = self._listeners.get(address)
        if entry is None:
            entry = self._listeners[address] = ListenerTls(address)
            problems = self.refresh(state, address)
            for problem in problems:
                log.warning("tls_certificate_unusable", problem=problem)
        return entry.context

    def refresh(self, state: ConfigState, address: str | None = None) -> list[str]:
        """Re-read settings and certificates of one listener (all when None); problems."""
        problems: list[str] = []
        targets = [address] if address is not None else list(self._listeners)
        for target in targets:
            entry = self._listeners.get(target)
            if entry is None:
                continue
            try:
                proto_address = to_proto(target)
                listener = state.listener(ListenerType.HTTPS, proto_address)
                found = state.certificates_at(proto_address)
            except (AddressError, StateError):
                listener, found = None, {}
            config = listener if isinstance(listener, HttpsListenerConfig) else None
            problems += entry.update(config, found)
        return problems

    def replaced(self, address: str, old_fingerprint: str, new_fingerprint: str) -> None:
        entry = self._listeners.get(address)
        if entry is not None:
            entry.replaced(old_fingerprint.lower(), new_fingerprint)

    def forget(self, address: str) -> None:
        self._listeners.pop(address, None)
