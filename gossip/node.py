"""The asyncio driver: carries a GossipCore's effects out over UDP and TCP (or any transport).

The driver owns the clock (`time.monotonic` unless one is injected), a bounded inbound queue of
datagrams, one task that feeds the core datagrams and timer ticks, and short-lived tasks for push-pull streams. All
protocol decisions stay in the core. Malformed or forged datagrams are counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from gossip.config import GossipConfig
from gossip.core import GossipCore
from gossip.effects import Effect, LoadAnswer, Notify, PushPullCall, Send
from gossip.errors import ConfigError, StateError, TransportError
from gossip.transport import DatagramTransport, Dialer, MemoryNetwork
from gossip.udp import TcpPushPullServer, UdpTransport, tcp_dial
from gossip.view import Addr, PeerMeta, View, check_addr

Subscriber = Callable[[View], None]
log = logging.getLogger("amcoedge.gossip")

_BIND_TRIES = 20
_MAX_PUSH_PULLS = 4


_WILDCARDS = ("", "0.0.0.0", "::")


def _advertised(declared: Addr, bound: Addr) -> Addr:
    """The gossip address others should use: the declared host (unless it is a wildcard) and
    the port actually bound (port 0 picks one)."""
    host = declared[0] if declared[0] not in _WILDCARDS else bound[0]
    return (host, bound[1])


class GossipNode:
    """One peer's membership and metadata service.

    By default it binds UDP and a TCP push-pull server on the same port. With `push_pull_dialer`
    given, it binds no TCP: the host serves push-pull itself and routes requests to
    `handle_push_pull`. `network` (tests) replaces sockets with an in-memory network.
    """

    def __init__(
        self,
        meta: PeerMeta,
        bind: Addr,
        config: GossipConfig | None = None,
        secret: bytes | None = None,
        push_pull_dialer: Dialer | None = None,
        *,
        network: MemoryNetwork | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(meta, PeerMeta):
            raise ConfigError("meta must be a PeerMeta")
        self._bind = check_addr(bind, "bind")
        self.config = config or GossipConfig.lan()
        self._meta = meta
        self._secret = secret
        self._dialer = push_pull_dialer
        self._network = network
        self._seed = seed
        self._clock = clock  # monotonic seconds; injectable so tests can drive time
        self._core: GossipCore | None = None
        self._transport: DatagramTransport | None = None
        self._tcp: TcpPushPullServer | None = None
        self._inbox: asyncio.Queue[tuple[bytes, Addr]] | None = None
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._pp_tasks: set[asyncio.Task[None]] = set()
        self._subscribers: list[Subscriber] = []
        self._load_waiters: dict[int, asyncio.Future[None]] = {}
        self._stopped = False
        self._stats: dict[str, int] = {
            "datagrams_in": 0,
            "datagrams_out": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "dropped_queue_full": 0,
            "loop_errors": 0,  # bugs of ours caught by the loop (logged); should stay 0
            "push_pull_bytes_out": 0,
            "push_pull_bytes_in": 0,
            "push_pull_skipped": 0,
            "push_pull_errors": 0,
            "subscriber_errors": 0,
            "load_refresh_asked": 0,
            "load_refresh_answered": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> Addr:
        if self._transport is None:
            raise StateError("node not started")
        return self._transport.address

    @property
    def name(self) -> str:
        return self._meta.name

    @property
    def core(self) -> GossipCore:
        if self._core is None:
            raise StateError("node not started")
        return self._core

    async def start(self, seeds: Sequence[Addr] = ()) -> None:
        if self._core is not None or self._stopped:
            raise StateError("node already started or stopped")
        seed_addrs = [check_addr(s, "seed") for s in seeds]
        self._inbox = asyncio.Queue(self.config.inbound_queue)
        await self._bind_sockets()
        meta = self._meta
        advertised = _advertised(meta.gossip_addr, self.address)
        if meta.gossip_addr != advertised:
            meta = replace(meta, gossip_addr=advertised)
            if meta.rpc_addr[1] == 0:
                meta = replace(meta, rpc_addr=advertised)
            self._meta = meta
        self._core = GossipCore(
            meta,
            self.config,
            self._clock(),
            secret=self._secret,
            seed=self._seed,
            wall=time.time(),
        )
        self._runner = asyncio.create_task(self._run(), name=f"gossip-{meta.name}")
        self._apply(self._core.join(seed_addrs, self._clock()))

    async def _bind_sockets(self) -> None:
        host, port = self._bind
        last: Exception | None = None
        for _ in range(_BIND_TRIES if port == 0 else 1):
            if self._network is not None:
                transport: DatagramTransport = self._network.bind((host, port), self._on_datagram)
            else:
                transport = await UdpTransport.bind((host, port), self._on_datagram)
            bound = transport.address
            if self._dialer is not None:
                self._transport = transport
                return
            if self._network is not None:
                self._network.serve_streams(bound, self.handle_push_pull)
                self._transport = transport
                return
            tcp = TcpPushPullServer(
                self.handle_push_pull,
                self.config.push_pull_max_bytes,
                self.config.push_pull_timeout_s,
            )
            try:
                await tcp.start(bound)
            except TransportError as exc:
                transport.close()
                last = exc
                continue  # the TCP port with that number is taken: pick another UDP port
            self._transport = transport
            self._tcp = tcp
            return
        raise TransportError(f"cannot bind UDP and TCP on one port: {last}")

    async def leave(self, timeout_s: float | None = None) -> None:
        """Announce a graceful leave and wait (bounded) until it has been gossiped."""
        core = self.core
        self._apply(core.leave(self._clock()))
        wait = timeout_s if timeout_s is not None else 4 * self.config.gossip_interval_s + 0.1
        deadline = self._clock() + wait
        while self._clock() < deadline:
            sent = core.self_broadcast_transmits()
            if sent is None or sent >= self.config.gossip_nodes or core.num_live() <= 1:
                break
            await asyncio.sleep(self.config.gossip_interval_s / 2)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._pp_tasks):
            task.cancel()
        if self._pp_tasks:
            await asyncio.gather(*self._pp_tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.close()
        if self._transport is not None:
            self._transport.close()

    # -- public reads and writes -------------------------------------------------------------

    def view(self) -> View:
        return self.core.view(self._clock())

    def update_meta(
        self,
        *,
        capacity: float | None = None,
        queued_s: float | None = None,
        active_shares: int | None = None,
    ) -> None:
        self._apply(
            self.core.update_meta(
                self._clock(),
                capacity=capacity,
                queued_s=queued_s,
                active_shares=active_shares,
            )
        )

    def record_transfer(self, dst: str, nbytes: int, seconds: float) -> None:
        self._apply(self.core.record_transfer(dst, nbytes, seconds, self._clock()))

    def bandwidth(self, src: str, dst: str) -> float | None:
        return self.core.bandwidth(src, dst)

    def load_age(self, name: str) -> float | None:
        """How old the load held of `name` is, in seconds (None: unknown peer)."""
        return self.core.load_age(name, self._clock())

    async def refresh_load(self, names: Sequence[str], timeout_s: float) -> dict[str, float]:
        """Refresh the load of a few peers with one bounded round trip, just before deciding.

        Pings each named live peer directly; its ack carries its current load. Waits at most
        `timeout_s` and returns {name: age of the load now held} for the peers that answered
        in time (their view entries are updated; `view()` shows them). Peers that did not
        answer, and unknown or dead ones, are left out and keep their older load.
        """
        if not isinstance(timeout_s, int | float) or not timeout_s >= 0:
            raise ConfigError("timeout_s must be a number >= 0")
        if isinstance(names, str):
            raise ConfigError("names must be a sequence of peer names, not one string")
        core = self.core
        loop = asyncio.get_running_loop()
        asked, effects = core.request_load(names, self._clock())
        futures: dict[str, asyncio.Future[None]] = {}
        for name, seq in asked.items():
            fut: asyncio.Future[None] = loop.create_future()
            self._load_waiters[seq] = fut
            futures[name] = fut
        self._stats["load_refresh_asked"] += len(asked)
        self._apply(effects)
        try:
            if futures and timeout_s > 0:
                await asyncio.wait(list(futures.values()), timeout=timeout_s)
        finally:
            for seq in asked.values():
                self._load_waiters.pop(seq, None)
        now = self._clock()
        out: dict[str, float] = {}
        for name, fut in futures.items():
            if fut.done():
                age = core.load_age(name, now)
                if age is not None:
                    out[name] = age
        self._stats["load_refresh_answered"] += len(out)
        return out

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    @property
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        if self._core is not None:
            out.update(self._core.counters)
            out["members"] = len(self._core.member_names())
            out["live"] = self._core.num_live()
            out["health"] = self._core.health
            out["incarnation"] = self._core.incarnation
            out["queued_broadcasts"] = self._core.queued_broadcasts()
        if self._tcp is not None:
            out["tcp_errors"] = self._tcp.errors
        return out

    async def handle_push_pull(self, payload: bytes) -> bytes:
        """Serve one push-pull request; raises RemoteError for a bad payload."""
        if self._core is None or self._stopped:
            raise StateError("node not running")
        self._stats["push_pull_bytes_in"] += len(payload)
        reply, effects = self._core.handle_push_pull(payload, self._clock())
        self._apply(effects)
        self._stats["push_pull_bytes_out"] += len(reply)
        return reply

    # -- the loop ----------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, src: Addr) -> None:
        if self._inbox is None or self._stopped:
            return
        try:
            self._inbox.put_nowait((data, src))
        except asyncio.QueueFull:
            self._stats["dropped_queue_full"] += 1
            return
        self._wakeup.set()

    async def _run(self) -> None:
        inbox = self._inbox
        if inbox is None:
            raise StateError("node not started")
        core = self.core
        while True:
            while not inbox.empty():
                data, src = inbox.get_nowait()
                self._stats["datagrams_in"] += 1
                self._stats["bytes_in"] += len(data)
                self._guarded(core.handle, data, src, self._clock())
            now = self._clock()
            if now >= core.next_deadline():
                self._guarded(core.tick, now)
            delay = core.next_deadline() - self._clock()
            if delay > 0 and inbox.empty():
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
            else:
                await asyncio.sleep(0)

    def _guarded(self, step: Callable[..., list[Effect]], *args: Any) -> None:
        """One step of the loop. An exception escaping it is a bug of ours (remote input is
        already counted and dropped by the core): it is logged with its traceback and counted,
        and the loop goes on, since a dead loop would silently take this peer out of the
        cluster while everything else still answers."""
        try:
            self._apply(step(*args))
        except Exception:
            self._stats["loop_errors"] += 1
            log.exception("gossip loop step failed (counted as loop_errors; the loop goes on)")

    def _apply(self, effects: list[Effect]) -> None:
        notify = False
        for e in effects:
            if type(e) is Send:
                self._send(e.addr, e.data)
            elif type(e) is PushPullCall:
                self._start_push_pull(e)
            elif type(e) is Notify:
                notify = True
            elif type(e) is LoadAnswer:
                fut = self._load_waiters.pop(e.seq, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        self._wakeup.set()
        if notify and self._subscribers:
            view = self.view()
            for cb in list(self._subscribers):
                try:
                    cb(view)
                except Exception:
                    self._stats["subscriber_errors"] += 1

    def _send(self, addr: Addr, data: bytes) -> None:
        if self._transport is None or self._stopped:
            return
        try:
            self._transport.send(addr, data)
        except TransportError:
            return
        self._stats["datagrams_out"] += 1
        self._stats["bytes_out"] += len(data)

    def _start_push_pull(self, call: PushPullCall) -> None:
        if self._stopped or len(self._pp_tasks) >= _MAX_PUSH_PULLS:
            self._stats["push_pull_skipped"] += 1
            return
        task = asyncio.create_task(self._push_pull(call))
        self._pp_tasks.add(task)
        task.add_done_callback(self._pp_tasks.discard)

    async def _push_pull(self, call: PushPullCall) -> None:
        core = self.core
        cfg = self.config
        self._stats["push_pull_bytes_out"] += len(call.payload)
        try:
            if self._dialer is not None:
                async with asyncio.timeout(cfg.push_pull_timeout_s):
                    reply = await self._dialer(call.addr, call.payload)
            elif self._network is not None:
                reply = await self._network.dialer(call.addr, call.payload)
            else:
                reply = await tcp_dial(
                    call.addr, call.payload, cfg.push_pull_max_bytes, cfg.push_pull_timeout_s
                )
        except asyncio.CancelledError:
            raise
        except Exception:  # any failure of the remote side or the host's dialer is a remote fault
            self._stats["push_pull_errors"] += 1
            self._apply(core.push_pull_failed(call.addr, call.join, self._clock()))
            return
        if not isinstance(reply, bytes | bytearray):
            self._apply(core.push_pull_failed(call.addr, call.join, self._clock()))
            return
        self._stats["push_pull_bytes_in"] += len(reply)
        self._apply(core.push_pull_reply(bytes(reply), self._clock()))
