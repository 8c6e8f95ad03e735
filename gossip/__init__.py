"""SWIM-style membership with Lifeguard, plus load and bandwidth dissemination.

`GossipCore` is the pure protocol state machine (time passed in, effects returned);
`GossipNode` drives it over UDP/TCP with asyncio; `gossip.sim` drives hundreds of cores on a
seeded virtual-time network.
"""

from gossip.config import GossipConfig
from gossip.core import GossipCore
from gossip.errors import (
    AuthError,
    ConfigError,
    DecodeError,
    GossipError,
    PushPullError,
    RemoteError,
    StateError,
    TransportError,
)
from gossip.node import GossipNode
from gossip.view import Addr, PeerMeta, PeerStatus, PeerView, View

__all__ = [
    "Addr",
    "AuthError",
    "ConfigError",
    "DecodeError",
    "GossipConfig",
    "GossipCore",
    "GossipError",
    "GossipNode",
    "PeerMeta",
    "PeerStatus",
    "PeerView",
    "PushPullError",
    "RemoteError",
    "StateError",
    "TransportError",
    "View",
]
