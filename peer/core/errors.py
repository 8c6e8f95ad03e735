"""The runtime's error tree, caught at the boundaries (HTTP handlers, RPC handlers, the CLI).

- ``PeerError``: base of everything the runtime raises on purpose.
- ``ConfigError``: a bad configuration value or file (the CLI exits 2).
- ``BadRequest``: bad client input; carries a stable ``code`` and an HTTP status (4xx).
- ``PlanError``: no plan can be made (no peers, nothing applies).
- ``ShareFailed``: a share could not be run on a remote peer (dead, timeout, remote error);
  the origin re-plans it elsewhere.
- ``Overloaded``: the bounded queue is full; the client should retry later (503).
"""

from __future__ import annotations


class PeerError(Exception):
    """Base class of the runtime's own errors."""

    code = "internal"
    status = 500


class ConfigError(PeerError):
    """A configuration value or file is invalid."""

    code = "bad_config"
    status = 500


class BadRequest(PeerError):
    """Client input that cannot be served; always a 4xx with a stable code."""

    status = 400

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


class NotFound(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__("not_found", message, status=404)


class Overloaded(PeerError):
    code = "overloaded"
    status = 503


class PlanError(PeerError):
    code = "plan_failed"
    status = 503


class ShareFailed(PeerError):
    """A share failed on a remote peer; the origin re-plans it."""

    code = "share_failed"
    status = 502

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"share on {peer} failed: {reason}")
        self.peer = peer
        self.reason = reason
