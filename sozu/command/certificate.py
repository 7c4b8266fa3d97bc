"""TLS certificates as the command layer sees them: PEM text, fingerprints and names.

The state keys certificates by the SHA-256 of the leaf's DER encoding (hex, lower-case, as
Sōzu prints it) and routes them by the DNS names the certificate is authoritative for: its
subjectAltName dNSName entries when it has any, its Common Name otherwise (RFC 6125 §6.4.4).
This module is the one door to the `cryptography` package for that; it knows nothing of
listeners or state.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from sozu.command.errors import SozuError

_PEM_END = "-----END CERTIFICATE-----"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class CertificateError(SozuError, ValueError):
    """A certificate or fingerprint that cannot be parsed."""


def load_leaf(pem: str) -> x509.Certificate:
    """Parse the first certificate of a PEM text, or raise CertificateError."""
    try:
        return x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, TypeError) as error:
        raise CertificateError(f"cannot parse PEM certificate: {error}") from None


def fingerprint(pem: str) -> bytes:
    """SHA-256 of the DER encoding of the leaf (first) certificate of a PEM text."""
    return load_leaf(pem).fingerprint(hashes.SHA256())


def fingerprint_hex(pem: str) -> str:
    """The leaf fingerprint as lower-case hex, the form the CLI and the state use."""
    return fingerprint(pem).hex()


def decode_fingerprint(text: str) -> bytes:
    """Hex fingerprint (either case) -> bytes, or raise CertificateError."""
    if len(text) % 2 or any(c not in _HEX_DIGITS for c in text):
        raise CertificateError(
            f"invalid fingerprint {text!r}: expected an even number of hex digits"
        )
    return bytes.fromhex(text)


def names(pem: str) -> list[str]:
    """DNS names the leaf certificate is authoritative for (SAN dNSName, else Common Name)."""
    certificate = load_leaf(pem)
    found: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    except ValueError as error:
        raise CertificateError(f"cannot read subjectAltName: {error}") from None
    else:
        found = [str(name) for name in san.value.get_values_for_type(x509.DNSName)]
    if not found:
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = attribute.value
            found.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
    deduplicated: list[str] = []
    for name in found:
        if not deduplicated or deduplicated[-1] != name:
            deduplicated.append(name)
    return deduplicated


def split_chain(text: str) -> list[str]:
    """Split a PEM bundle into its certificates, each trimmed, in file order."""
    blocks: list[str] = []
    rest = text
    while (end := rest.find(_PEM_END)) >= 0:
        cut = end + len(_PEM_END)
        blocks.append(rest[:cut].strip())
        rest = rest[cut:]
    return blocks


def self_signed(hostname: str, days: int = 30) -> tuple[str, str]:
    """A fresh self-signed certificate and its private key (PEM) for `hostname`: demos only."""
    import datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
