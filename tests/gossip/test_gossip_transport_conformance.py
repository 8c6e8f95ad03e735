"""One conformance suite for every datagram transport: real UDP, in-memory, simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gossip import GossipConfig, GossipCore, PeerMeta, TransportError
from gossip.effects import Send
from gossip.sim import NetConfig, SimNetwork
from gossip.transport import MAX_DATAGRAM, DatagramTransport, MemoryNetwork
from gossip.udp import UdpTransport
from gossip.view import Addr

Inbox = list[tuple[bytes, Addr]]


class Harness:
    kind = ""

    async def bind(self, on: Callable[[bytes, Addr], None]) -> DatagramTransport:
        raise NotImplementedError

    async def settle(self, cond: Callable[[], bool]) -> bool:
        raise NotImplementedError


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self) -> None:
        self.net = MemoryNetwork()

    async def bind(self, on: Callable[[bytes, Addr], None]) -> DatagramTransport:
        return self.net.bind(("mem", 0), on)

    async def settle(self, cond: Callable[[], bool]) -> bool:
        for _ in range(50):
            if cond():
                return True
            await asyncio.sleep(0)
        return cond()


class UdpHarness(Harness):
    kind = "udp"

    async def bind(self, on: Callable[[bytes, Addr], None]) -> DatagramTransport:
        return await UdpTransport.bind(("127.0.0.1", 0), on)

    async def settle(self, cond: Callable[[], bool]) -> bool:
        for _ in range(200):
            if cond():
                return True
            await asyncio.sleep(0.01)
        return cond()


class SimHarness(Harness):
    kind = "sim"

    def __init__(self) -> None:
        self.net = SimNetwork(NetConfig(), seed=1)
        self.count = 0

    async def bind(self, on: Callable[[bytes, Addr], None]) -> DatagramTransport:
        self.count += 1
        return self.net.bind((f"10.0.0.{self.count}", 7946), on)

    async def settle(self, cond: Callable[[], bool]) -> bool:
        return self.net.run_until(self.net.now + 1.0, cond) or cond()


@pytest.fixture(params=["memory", "udp", "sim"])
def harness(request: Any) -> Harness:
    return {"memory": MemoryHarness, "udp": UdpHarness, "sim": SimHarness}[request.param]()


def collector() -> tuple[Inbox, Callable[[bytes, Addr], None]]:
    inbox: Inbox = []
    return inbox, lambda d, a: inbox.append((d, a))


async def test_delivers_intact_with_source(harness: Harness):
    a_in, a_cb = collector()
    b_in, b_cb = collector()
    a = await harness.bind(a_cb)
    b = await harness.bind(b_cb)
    assert a.address != b.address
    payload = bytes(range(256)) * 5 + b"x" * 120  # a full 1400-byte payload
    a.send(b.address, payload)
    assert await harness.settle(lambda: len(b_in) == 1)
    assert b_in[0] == (payload, a.address)
    assert a_in == []
    a.close()
    b.close()


async def test_each_endpoint_gets_only_its_own(harness: Harness):
    inboxes = []
    ts = []
    for _ in range(4):
        inbox, cb = collector()
        inboxes.append(inbox)
        ts.append(await harness.bind(cb))
    for i, t in enumerate(ts):
        for j, u in enumerate(ts):
            if i != j:
                t.send(u.address, f"{i}->{j}".encode())
    assert await harness.settle(lambda: all(len(x) == 3 for x in inboxes))
    for j, inbox in enumerate(inboxes):
        assert sorted(d for d, _ in inbox) == sorted(
            f"{i}->{j}".encode() for i in range(4) if i != j
        )
    for t in ts:
        t.close()


async def test_unreachable_is_silent_and_oversize_raises(harness: Harness):
    _, cb = collector()
    a = await harness.bind(cb)
    a.send(("127.0.0.1", 9), b"nobody")  # never raises for an unreachable peer
    with pytest.raises(TransportError):
        a.send(a.address, b"x" * (MAX_DATAGRAM + 1))
    a.close()


async def test_closed_transport(harness: Harness):
    b_in, b_cb = collector()
    _, a_cb = collector()
    a = await harness.bind(a_cb)
    b = await harness.bind(b_cb)
    b.close()
    a.send(b.address, b"late")
    await harness.settle(lambda: False)
    assert b_in == []
    a.close()
    with pytest.raises(TransportError):
        a.send(b.address, b"after close")


async def test_two_cores_ping_and_ack_over_the_transport(harness: Harness):
    cfg = GossipConfig.lan()
    cores: dict[Addr, GossipCore] = {}
    transports: dict[Addr, DatagramTransport] = {}
    now = [0.0]

    def make_cb(slot: list[Addr]) -> Callable[[bytes, Addr], None]:
        def cb(data: bytes, src: Addr) -> None:
            me = slot[0]
            for e in cores[me].handle(data, src, now[0]):
                if isinstance(e, Send):
                    transports[me].send(e.addr, e.data)

        return cb

    slots: list[list[Addr]] = []
    for name in ("a", "b"):
        slot: list[Addr] = []
        t = await harness.bind(make_cb(slot))
        slot.append(t.address)
        slots.append(slot)
        meta = PeerMeta(name, t.address, t.address, t.address)
        cores[t.address] = GossipCore(meta, cfg, 0.0, seed=1)
        transports[t.address] = t
    a_addr, b_addr = slots[0][0], slots[1][0]
    a, b = cores[a_addr], cores[b_addr]
    # Teach a about b by a push-pull (no stream needed: feed b's state to a directly).
    reply, _ = b.handle_push_pull(a._state_payload(join=True), 0.0)
    a.push_pull_reply(reply, 0.0)
    assert a.status_of("b") == "alive"
    probes = a.counters["probes"]
    t = 0.0
    while a.counters["probes"] == probes:
        t += 0.05
        now[0] = t
        for e in a.tick(t):
            if isinstance(e, Send):
                transports[a_addr].send(e.addr, e.data)
    assert await harness.settle(lambda: a._probe is None)
    assert a.counters["probe_failures"] == 0
    assert b.status_of("a") == "alive"  # b learned of a from the ping's piggyback
    for tr in transports.values():
        tr.close()
