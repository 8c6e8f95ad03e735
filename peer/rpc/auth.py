"""HMAC-SHA256 challenge-response, carried by two ordinary RPC methods.

1. client calls ``auth.challenge()``; the server answers with a fresh random nonce ``sn``;
2. client calls ``auth.prove(cn, HMAC(secret, sn || cn))`` with its own nonce ``cn``;
3. the server checks the proof (constant time), marks the connection authenticated and answers
   ``HMAC(secret, "server" || cn || sn)`` so the client knows the server holds the secret too.

A server nonce is used for one proof only. These are pure functions; the server and client
shells call them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

NONCE_BYTES = 32
_SERVER_LABEL = b"server"


def normalize_secret(secret: bytes | str | None) -> bytes | None:
    if secret is None:
        return None
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the cluster secret must not be empty")
    return key


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def client_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, server_nonce + client_nonce, hashlib.sha256).digest()


def server_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, _SERVER_LABEL + client_nonce + server_nonce, hashlib.sha256).digest()


def verify(expected: bytes, given: object) -> bool:
    return isinstance(given, bytes) and hmac.compare_digest(expected, given)
