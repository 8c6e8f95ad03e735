"""A seeded, hostile network on a virtual clock that runs hundreds of unmodified cores.

`SimNetwork` is a heap-based discrete-event loop: datagrams are delayed, lost, duplicated and
reordered (jitter) by a seeded RNG; partitions and crashed addresses drop everything; a slow
peer receives everything late (its process is starved). `SimTransport` is the same datagram
seam the real drivers use. `SimCluster` runs one `GossipCore` per peer and carries its effects
out, exactly as the asyncio driver does, so the same seed gives the same trace.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from gossip.config import GossipConfig
from gossip.core import GossipCore
from gossip.effects import LoadAnswer, Notify, PushPullCall, Send
from gossip.errors import ConfigError, RemoteError
from gossip.transport import OnDatagram, check_datagram
from gossip.view import Addr, PeerMeta


@dataclass(frozen=True, slots=True)
class NetConfig:
    loss: float = 0.0  # probability a datagram is dropped
    delay_s: float = 0.0005  # one-way base latency (LAN)
    jitter_s: float = 0.001  # extra uniform latency, which also reorders
    duplicate: float = 0.0  # probability a datagram is delivered twice
    stream_delay_s: float = 0.002  # one-way latency of a push-pull stream (connect + send)
    stream_fail_s: float = 1.0  # how long a push-pull to an unreachable peer takes to fail

    def __post_init__(self) -> None:
        for p in ("loss", "duplicate"):
            if not 0.0 <= getattr(self, p) < 1.0:
                raise ConfigError(f"{p} must be within [0, 1)")
        for d in ("delay_s", "jitter_s", "stream_delay_s", "stream_fail_s"):
            if not getattr(self, d) >= 0:
                raise ConfigError(f"{d} must be >= 0")


class SimNetwork:
    """The event loop and the network model. Time starts at 0."""

    def __init__(self, config: NetConfig, seed: int) -> None:
        self.config = config
        self.now = 0.0
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._endpoints: dict[Addr, SimTransport] = {}
        self._group: dict[Addr, int] = {}
        self.down: set[Addr] = set()
        self.slow: dict[Addr, float] = {}
        self.bytes_out: dict[Addr, int] = {}
        self.stream_bytes_out: dict[Addr, int] = {}
        self.datagrams = 0
        self.events = 0

    # -- the event loop --------------------------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn, args))

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run events up to `until`; True if `stop()` became true (checked after each event)."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            when, _, fn, args = pop(heap)
            self.now = when
            self.events += 1
            fn(*args)
            if stop is not None and stop():
                return True
        self.now = max(self.now, until)
        return False

    # -- topology --------------------------------------------------------------------------

    def bind(self, addr: Addr, on_datagram: OnDatagram) -> SimTransport:
        if addr in self._endpoints and not self._endpoints[addr].closed:
            raise ConfigError(f"address {addr} already bound")
        t = SimTransport(self, addr, on_datagram)
        self._endpoints[addr] = t
        return t

    def partition(self, groups: Sequence[Sequence[Addr]]) -> None:
        """Only peers within one group can talk; addresses not listed form group 0."""
        self._group = {a: i + 1 for i, g in enumerate(groups) for a in g}

    def heal(self) -> None:
        self._group = {}

    def reachable(self, src: Addr, dst: Addr) -> bool:
        if src in self.down or dst in self.down:
            return False
        return self._group.get(src, 0) == self._group.get(dst, 0)

    def _latency(self, dst: Addr) -> float:
        c = self.config
        lat = c.delay_s + self._rng.random() * c.jitter_s
        slow = self.slow.get(dst)
        if slow:
            lat += slow * (0.5 + 0.5 * self._rng.random())
        return lat

    # -- datagrams and streams -------------------------------------------------------------

    def send(self, src: Addr, dst: Addr, data: bytes) -> None:
        self.datagrams += 1
        self.bytes_out[src] = self.bytes_out.get(src, 0) + len(data)
        if not self.reachable(src, dst):
            return
        rng = self._rng
        if rng.random() < self.config.loss:
            return
        copies = 2 if rng.random() < self.config.duplicate else 1
        for _ in range(copies):
            self.at(self.now + self._latency(dst), self._deliver, src, dst, data)

    def _deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        t = self._endpoints.get(dst)
        if t is None or t.closed or dst in self.down:
            return
        t.on_datagram(data, src)

    def stream(
        self,
        src: Addr,
        dst: Addr,
        payload: bytes,
        serve: Callable[[Addr, bytes], bytes | None],
        on_reply: Callable[[bytes], None],
        on_fail: Callable[[], None],
    ) -> None:
        """A request/reply stream; `serve(dst, payload)` returns the reply or None (refused)."""
        self.stream_bytes_out[src] = self.stream_bytes_out.get(src, 0) + len(payload)
        if not self.reachable(src, dst):
            self.at(self.now + self.config.stream_fail_s, on_fail)
            return

        def arrive() -> None:
            if not self.reachable(src, dst):
                self.at(self.now + self.config.stream_fail_s, on_fail)
                return
            reply = serve(dst, payload)
            if reply is None:
                self.at(self.now + self.config.stream_delay_s, on_fail)
                return
            self.stream_bytes_out[dst] = self.stream_bytes_out.get(dst, 0) + len(reply)
            self.at(
                self.now + self._latency(src),
                lambda: self._stream_back(src, dst, reply, on_reply, on_fail),
            )

        self.at(self.now + self.config.stream_delay_s + self._latency(dst), arrive)

    def _stream_back(
        self,
        src: Addr,
        dst: Addr,
        reply: bytes,
        on_reply: Callable[[bytes], None],
        on_fail: Callable[[], None],
    ) -> None:
        if src in self.down:
            return
        if not self.reachable(src, dst):
            on_fail()
            return
        on_reply(reply)


class SimTransport:
    """The datagram seam on the simulated network."""

    def __init__(self, net: SimNetwork, addr: Addr, on_datagram: OnDatagram) -> None:
        self._net = net
        self._addr = addr
        self.on_datagram = on_datagram
        self.closed = False

    @property
    def address(self) -> Addr:
        return self._addr

    def send(self, addr: Addr, data: bytes) -> None:
        check_datagram(data, self.closed)
        self._net.send(self._addr, addr, bytes(data))

    def close(self) -> None:
        self.closed = True


NotifyHook = Callable[[int, Notify, float], None]


class SimPeer:
    __slots__ = ("addr", "core", "crashed", "index", "started", "transport", "wake")

    def __init__(self, index: int, addr: Addr, core: GossipCore, transport: SimTransport) -> None:
        self.index = index
        self.addr = addr
        self.core = core
        self.transport = transport
        self.crashed = False
        self.started = False
        self.wake = float("inf")


def sim_meta(i: int) -> PeerMeta:
    addr = (f"10.0.{i // 250}.{i % 250 + 1}", 7946)
    return PeerMeta(
        name=f"p{i:04d}",
        gossip_addr=addr,
        rpc_addr=addr,
        http_addr=(addr[0], 8080),
        version="1",
        model_id="digits16",
        capacity=100.0 + i % 7,
        queued_s=0.0,
        active_shares=0,
    )


class SimCluster:
    """N peers, each an unmodified GossipCore, on one SimNetwork."""

    def __init__(
        self,
        n: int,
        config: GossipConfig,
        net: NetConfig,
        seed: int,
        secret: bytes | None = None,
        on_notify: NotifyHook | None = None,
    ) -> None:
        self.config = config
        self.net = SimNetwork(net, seed)
        self._seed = seed
        self._secret = secret
        self.on_notify = on_notify
        self.peers: list[SimPeer] = []
        self.load_answers: dict[tuple[int, int], float] = {}  # (peer, seq) -> answered at
        self._by_addr: dict[Addr, SimPeer] = {}
        for _ in range(n):
            self.add_peer()

    def add_peer(self, config: GossipConfig | None = None) -> SimPeer:
        i = len(self.peers)
        meta = sim_meta(i)
        core = GossipCore(
            meta,
            config or self.config,
            self.net.now,
            secret=self._secret,
            seed=self._seed * 1_000_003 + i,
        )
        transport = self.net.bind(meta.gossip_addr, partial(self._datagram_at, meta.gossip_addr))
        peer = SimPeer(i, meta.gossip_addr, core, transport)
        self.peers.append(peer)
        self._by_addr[peer.addr] = peer
        return peer

    # -- driving ---------------------------------------------------------------------------

    def start(self, i: int, seeds: Sequence[int], at: float | None = None) -> None:
        when = self.net.now if at is None else at
        self.net.at(when, self._start, self.peers[i], [self.peers[s].addr for s in seeds])

    def _start(self, peer: SimPeer, seeds: list[Addr]) -> None:
        if peer.crashed:
            return
        peer.started = True
        self._apply(peer, peer.core.join(seeds, self.net.now))

    def _datagram_at(self, addr: Addr, data: bytes, src: Addr) -> None:
        peer = self._by_addr[addr]
        if peer.crashed or not peer.started:
            return
        self._apply(peer, peer.core.handle(data, src, self.net.now))

    def _wake(self, peer: SimPeer, when: float) -> None:
        if peer.crashed or peer.wake != when:
            return
        peer.wake = float("inf")
        self._apply(peer, peer.core.tick(self.net.now))

    def _serve_stream(self, dst: Addr, payload: bytes) -> bytes | None:
        peer = self._by_addr.get(dst)
        if peer is None or peer.crashed or not peer.started:
            return None
        try:
            reply, effects = peer.core.handle_push_pull(payload, self.net.now)
        except RemoteError:
            return None
        self._apply(peer, effects)
        return reply

    def _apply(self, peer: SimPeer, effects: list[Any]) -> None:
        net = self.net
        for e in effects:
            if type(e) is Send:
                peer.transport.send(e.addr, e.data)
            elif type(e) is PushPullCall:
                net.stream(
                    peer.addr,
                    e.addr,
                    e.payload,
                    self._serve_stream,
                    partial(self._pp_reply, peer),
                    partial(self._pp_fail, peer, e.addr, e.join),
                )
            elif type(e) is LoadAnswer:
                self.load_answers[(peer.index, e.seq)] = net.now
            elif self.on_notify is not None:
                self.on_notify(peer.index, e, net.now)
        if not peer.crashed:
            when = peer.core.next_deadline()
            if when < peer.wake:
                peer.wake = when
                net.at(when, self._wake, peer, when)

    def _pp_reply(self, peer: SimPeer, reply: bytes) -> None:
        if not peer.crashed:
            self._apply(peer, peer.core.push_pull_reply(reply, self.net.now))

    def _pp_fail(self, peer: SimPeer, addr: Addr, join: bool) -> None:
        if not peer.crashed:
            self._apply(peer, peer.core.push_pull_failed(addr, join, self.net.now))

    # -- faults ----------------------------------------------------------------------------

    def crash(self, i: int) -> None:
        peer = self.peers[i]
        peer.crashed = True
        self.net.down.add(peer.addr)

    def leave(self, i: int) -> None:
        peer = self.peers[i]
        self._apply(peer, peer.core.leave(self.net.now))

    def update_meta(self, i: int, **fields: Any) -> None:
        peer = self.peers[i]
        self._apply(peer, peer.core.update_meta(self.net.now, **fields))

    def request_load(self, i: int, names: Sequence[str]) -> dict[str, int]:
        """Peer i asks the named peers for their load directly (answers in `load_answers`)."""
        peer = self.peers[i]
        asked, effects = peer.core.request_load(names, self.net.now)
        self._apply(peer, effects)
        return asked

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        return self.net.run_until(until, stop)
