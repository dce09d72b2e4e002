"""TLS for the network stand-in: a throwaway CA and server certificate, or the operator's own pair.

Guarantees: the generated server certificate names ``localhost``, ``127.0.0.1``, ``::1`` and the optional extra
DNS name, chains to a CA that exists only in this process and in the PEM written for clients (its key never touches
the disk; the server key does, for the instant `ssl` needs a file, in a private folder removed at once); both pass
Python's default verification including ``VERIFY_X509_STRICT``. Non-guarantees: no revocation, no OCSP stapling,
no client certificates; the certificates live 30 days, the process is expected to be restarted well before.
Runs before the event loop starts (key generation and file writes are blocking).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=30)


@dataclass(frozen=True)
class GeneratedPair:
    """PEM bytes: the CA certificate (for clients) and the server chain and key (for the listener)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cams-proxy netem"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate(extra_name: str | None = None) -> GeneratedPair:
    """A new CA and a server certificate it signed, for loopback and ``extra_name``."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + LIFETIME
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cams-proxy netem throwaway CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    if extra_name:
        names.insert(0, x509.DNSName(extra_name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(extra_name or "localhost")).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return GeneratedPair(
        ca_pem=ca.public_bytes(pem),
        cert_pem=cert.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context serving ``cert`` (a PEM chain) with ``key``, TLS 1.2 or later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def generated_context(pair: GeneratedPair) -> ssl.SSLContext:
    """`server_context` over a generated pair (written to a private temporary folder, removed after loading)."""
    folder = Path(tempfile.mkdtemp(prefix="cams-netem-tls-"))
    try:
        (folder / "cert.pem").write_bytes(pair.cert_pem)
        key_file = folder / "key.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(pair.key_pem)
        return server_context(folder / "cert.pem", key_file)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_ca(pair: GeneratedPair, path: Path | None) -> Path:
    """Write the CA certificate to ``path`` (default: a new temporary folder); the path written."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="cams-netem-ca-")) / "ca.pem"
    path.write_bytes(pair.ca_pem)
    return path
