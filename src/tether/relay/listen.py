"""Where a relay listens: the ``--listen`` address and the TLS context from ``--tls-cert`` and
``--tls-key``, each with an error that says what to pass instead."""

from __future__ import annotations

import ssl
from pathlib import Path

from tether.errors import ConfigError, UsageError


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → (host, port); UsageError otherwise. No host (``:8765``)
    means loopback: listening on every interface is said out loud (``0.0.0.0:8765``)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"bad listen address {listen!r}",
                         hint="use HOST:PORT, e.g. 127.0.0.1:8765 (0.0.0.0:8765 for every interface)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port_text)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from PEM files, or a ConfigError saying which file is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise ConfigError(f"TLS {what} file {path} does not exist", hint="pass --tls-cert and --tls-key PEM files")
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"cannot use {cert} and {key} for TLS ({exc.__class__.__name__}: {getattr(exc, 'reason', None) or exc})",
            hint="both must be PEM files, and the key must match the certificate",
        ) from None
    return context
