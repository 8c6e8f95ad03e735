"""Public value types: a peer's metadata and immutable snapshots of the cluster view."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NewType

from gossip.errors import ConfigError

Addr = tuple[str, int]
PeerName = NewType("PeerName", str)
PeerStatus = Literal["alive", "suspect", "dead", "left"]

STATUS_RANK: dict[str, int] = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}
STATUSES: tuple[PeerStatus, ...] = ("alive", "suspect", "dead", "left")

MAX_NAME = 64
MAX_TEXT = 64


def check_addr(addr: object, what: str) -> Addr:
    """Validate an address (host, port); raise ConfigError otherwise."""
    if (
        not isinstance(addr, tuple | list)
        or len(addr) != 2
        or not isinstance(addr[0], str)
        or not addr[0]
        or len(addr[0]) > 255
        or not isinstance(addr[1], int)
        or isinstance(addr[1], bool)
        or not 0 <= addr[1] <= 65535
    ):
        raise ConfigError(f"{what} must be (host: str, port: 0..65535), got {addr!r}")
    return (addr[0], addr[1])


@dataclass(frozen=True, slots=True)
class PeerMeta:
    """What a peer says about itself: addresses, software, and its current load."""

    name: str
    gossip_addr: Addr
    rpc_addr: Addr
    http_addr: Addr
    version: str = "1"
    model_id: str = ""
    capacity: float = 0.0  # work units per second
    queued_s: float = 0.0  # seconds of queued work
    active_shares: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= MAX_NAME:
            raise ConfigError(f"name must be a non-empty string of <= {MAX_NAME} chars")
        object.__setattr__(self, "gossip_addr", check_addr(self.gossip_addr, "gossip_addr"))
        object.__setattr__(self, "rpc_addr", check_addr(self.rpc_addr, "rpc_addr"))
        object.__setattr__(self, "http_addr", check_addr(self.http_addr, "http_addr"))
        for text in ("version", "model_id"):
            value = getattr(self, text)
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise ConfigError(f"{text} must be a string of <= {MAX_TEXT} chars")
        for num in ("capacity", "queued_s"):
            value = getattr(self, num)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{num} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{num} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, num, float(value))
        if (
            isinstance(self.active_shares, bool)
            or not isinstance(self.active_shares, int)
            or self.active_shares < 0
        ):
            raise ConfigError("active_shares must be an int >= 0")


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as seen at snapshot time.

    `meta_age_s` is how old the load fields (capacity, queued_s, active_shares) are: now minus
    when that peer's load was last known to have these values, from the freshest load sample
    (which rides on every datagram; its age travels with it) or, if a newer digest version
    arrived since, when that digest arrived (for the local peer: since its last local update).
    Median about 1 s at 20 peers and under 2 s at 100 (`amcoedge bench gossip`).
    `bandwidth` is that peer's own row of EWMA estimates (bytes/s) to the peers it sent to.
    """

    name: str
    status: PeerStatus
    incarnation: int
    meta: PeerMeta
    meta_age_s: float
    bandwidth: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class View:
    """An immutable snapshot of the cluster; `peers` includes the local peer itself."""

    local: str
    peers: Mapping[str, PeerView]
    taken_at: float
    _alive: tuple[PeerView, ...] = field(default=(), repr=False, compare=False)

    @staticmethod
    def build(local: str, peers: dict[str, PeerView], taken_at: float) -> View:
        alive = tuple(
            sorted(
                (p for p in peers.values() if p.status in ("alive", "suspect")),
                key=lambda p: p.name,
            )
        )
        return View(local, MappingProxyType(dict(peers)), taken_at, alive)

    def alive(self) -> list[PeerView]:
        """Alive and suspect peers (suspects may still answer), sorted by name."""
        return list(self._alive)

    def bandwidth(self, src: str, dst: str) -> float | None:
        row = self.peers.get(src)
        if row is None:
            return None
        return row.bandwidth.get(dst)
