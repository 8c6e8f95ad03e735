"""The gossip error tree.

Remote faults (a peer sent garbage, a forged datagram, a push-pull that failed) are distinct from
local misuse (bad configuration, calling the node in the wrong state).
"""

from __future__ import annotations


class GossipError(Exception):
    """Base class of every error raised by the gossip package."""


class ConfigError(GossipError, ValueError):
    """A configuration or argument is invalid (a local fault)."""


class RemoteError(GossipError):
    """Something a remote peer sent or did was unusable (a remote fault)."""


class DecodeError(RemoteError):
    """A datagram or push-pull payload is malformed."""


class AuthError(RemoteError):
    """A datagram or payload failed HMAC verification."""


class ReplayError(AuthError):
    """An authenticated datagram or payload was seen before (a replay) or is too old."""


class StaleError(AuthError):
    """An authenticated datagram's timestamp lies outside the accepted clock-skew window."""


class ForgedError(RemoteError):
    """A message claims a sender it does not come from (e.g. a `Left` about someone else)."""


class OutOfRangeError(DecodeError):
    """A value (an incarnation) lies outside the range the protocol can ever reach."""


class PushPullError(RemoteError):
    """A push-pull exchange with a peer failed (refused, timed out, oversized)."""


class TransportError(GossipError):
    """A transport could not carry out a request (closed, datagram too large)."""


class StateError(GossipError, RuntimeError):
    """The node was used in the wrong state (not started, already stopped)."""
