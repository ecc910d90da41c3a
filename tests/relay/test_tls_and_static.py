"""`tether relay` over TLS, and the headers on the web client it serves."""

from __future__ import annotations

import datetime
import ssl
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.procs import TETHER, Proc, remove, short_home, tether

pytestmark = pytest.mark.slow


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_relay_serves_https_with_the_web_client_and_strict_headers(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    relay = Proc([*TETHER, "--home", str(tmp_path / "home"), "relay", "--listen", "127.0.0.1:0", "--tls-cert",
                  str(cert), "--tls-key", str(key)], name="relay-tls")
    try:
        port = int(relay.wait_for(r"relay listening on 127\.0\.0\.1:(\d+) \(health: https://").group(1))
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=context, timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"https://localhost:{port}/", context=context, timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP on a TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        relay.stop()


def test_bad_tls_files_are_clear_errors(tmp_path: Path) -> None:
    home = short_home("tr")
    try:
        missing = tether(home, "relay", "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key",
                         str(tmp_path / "nope.key"), check=False)
        assert missing.returncode == 1 and "does not exist" in missing.stderr
        (tmp_path / "junk.pem").write_text("not a certificate")
        junk = tether(home, "relay", "--tls-cert", str(tmp_path / "junk.pem"), "--tls-key",
                      str(tmp_path / "junk.pem"), check=False)
        assert junk.returncode == 1 and "cannot use" in junk.stderr and "Traceback" not in junk.stderr
        half = tether(home, "relay", "--tls-cert", str(tmp_path / "junk.pem"), check=False)
        assert half.returncode == 2 and "go together" in half.stderr
    finally:
        remove(home)
