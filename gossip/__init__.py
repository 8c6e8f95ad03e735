"""SWIM-style membership with Lifeguard, plus load and bandwidth dissemination.

`GossipCore` is the pure protocol state machine (time passed in, effects returned);
`GossipNode` drives it over UDP/TCP with asyncio; `gossip.sim` drives hundreds of cores on a
seeded virtual-time network.

`import gossip` loads only the pure parts: `GossipNode` (and with it asyncio, `gossip.node` and
`gossip.udp`) is imported on first access of `gossip.GossipNode`.
"""

from typing import TYPE_CHECKING, Any

from gossip.config import GossipConfig
from gossip.core import GossipCore
from gossip.errors import (
    AuthError,
    ConfigError,
    DecodeError,
    ForgedError,
    GossipError,
    OutOfRangeError,
    PushPullError,
    RemoteError,
    ReplayError,
    StaleError,
    StateError,
    TransportError,
)
from gossip.view import Addr, PeerMeta, PeerStatus, PeerView, View

__all__ = [
    "Addr",
    "AuthError",
    "ConfigError",
    "DecodeError",
    "ForgedError",
    "GossipConfig",
    "GossipCore",
    "GossipError",
    "GossipNode",
    "OutOfRangeError",
    "PeerMeta",
    "PeerStatus",
    "PeerView",
    "PushPullError",
    "RemoteError",
    "ReplayError",
    "StaleError",
    "StateError",
    "TransportError",
    "View",
]

if TYPE_CHECKING:
    from gossip.node import GossipNode


def __getattr__(name: str) -> Any:
    if name == "GossipNode":
        from gossip.node import GossipNode

        return GossipNode
    raise AttributeError(f"module 'gossip' has no attribute {name!r}")
