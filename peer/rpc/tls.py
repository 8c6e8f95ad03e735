"""TLS for RPC connections, for networks where others can read or alter the traffic.

The cluster secret already authenticates every frame (``peer.rpc.auth``); TLS adds
confidentiality and authenticates the server's certificate. Both ends take either a ready
``ssl.SSLContext`` or a ``TlsFiles`` naming PEM files:

    server = RpcServer(handlers, secret=key, tls=TlsFiles(certfile="peer.crt", keyfile="peer.key"))
    pool = RpcPool(secret=key, tls=TlsFiles(cafile="cluster-ca.crt"))

A cluster can share one self-signed certificate: each peer serves it and trusts it as its CA.
Peers are usually addressed by IP, so the certificate then needs the peers' IPs as
subjectAltNames, or the clients ``check_hostname=False`` (the certificate is still verified
against ``cafile``; only the name is not compared).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """PEM files. A server needs ``certfile`` and ``keyfile``; a client needs ``cafile`` to trust
    a private certificate (without it the system's CAs are used) and may present a certificate
    of its own (``certfile``/``keyfile``) to a server that asks for one (``cafile`` there)."""

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "cafile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TlsFiles.{name}: no such file: {path}")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("TlsFiles.keyfile given without certfile")


TlsOption = ssl.SSLContext | TlsFiles | None


def server_context(tls: TlsOption) -> ssl.SSLContext | None:
    """The server-side context for ``tls`` (None: plain TCP)."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if not isinstance(tls, TlsFiles):
        raise TypeError(f"tls must be an ssl.SSLContext or TlsFiles, got {type(tls).__name__}")
    if tls.certfile is None:
        raise ValueError("a TLS server needs TlsFiles(certfile=..., keyfile=...)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
        if tls.cafile is not None:  # ask clients for a certificate signed by this CA
            ctx.load_verify_locations(cafile=tls.cafile)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load TLS files {tls}: {exc}") from exc
    return ctx


def client_context(tls: TlsOption) -> ssl.SSLContext | None:
    """The client-side context for ``tls`` (None: plain TCP)."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if not isinstance(tls, TlsFiles):
        raise TypeError(f"tls must be an ssl.SSLContext or TlsFiles, got {type(tls).__name__}")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = tls.check_hostname
    try:
        if tls.certfile is not None:
            ctx.load_cert_chain(tls.certfile, tls.keyfile)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load TLS files {tls}: {exc}") from exc
    return ctx
