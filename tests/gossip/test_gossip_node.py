"""The asyncio driver over the in-memory network and over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import time

import msgpack
import pytest

from gossip import (
    ConfigError,
    GossipConfig,
    GossipNode,
    PeerMeta,
    RemoteError,
    View,
)
from gossip.transport import MemoryNetwork
from gossip.wire import Codec, Ping, encode_primary

LOCAL = GossipConfig.local()


def meta(name: str, host: str = "127.0.0.1", port: int = 0) -> PeerMeta:
    return PeerMeta(
        name=name,
        gossip_addr=(host, port),
        rpc_addr=(host, port),
        http_addr=(host, 8000),
        version="1",
        model_id="digits16",
        capacity=120.0,
    )


async def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


async def start_nodes(n: int, **kw) -> list[GossipNode]:
    nodes: list[GossipNode] = []
    for i in range(n):
        host = "mem" if "network" in kw else "127.0.0.1"
        node = GossipNode(meta(f"n{i}", host), bind=(host, 0), config=LOCAL, seed=i, **kw)
        await node.start(seeds=[nodes[0].address] if nodes else [])
        nodes.append(node)
    return nodes


def all_see_all(nodes: list[GossipNode]) -> bool:
    return all(len(n.view().alive()) == len(nodes) for n in nodes)


async def test_memory_cluster_view_meta_bandwidth_subscribe():
    net = MemoryNetwork()
    nodes = await start_nodes(5, network=net)
    try:
        assert await wait_for(lambda: all_see_all(nodes))
        seen: list[View] = []
        unsub = nodes[3].subscribe(seen.append)
        nodes[1].update_meta(queued_s=1.2, active_shares=2, capacity=118.0)
        nodes[1].record_transfer("n2", nbytes=65536, seconds=0.002)

        def arrived() -> bool:
            v = nodes[3].view().peers["n1"]
            return v.meta.queued_s == 1.2 and nodes[3].bandwidth("n1", "n2") is not None

        assert await wait_for(arrived)
        v = nodes[3].view()
        assert v.local == "n3" and set(v.peers) == {f"n{i}" for i in range(5)}
        pv = v.peers["n1"]
        assert pv.status == "alive" and pv.meta.capacity == 118.0 and pv.meta.active_shares == 2
        assert pv.bandwidth["n2"] == pytest.approx(65536 / 0.002, rel=1e-6)
        assert nodes[1].bandwidth(src="n1", dst="n2") == 65536 / 0.002
        assert nodes[3].bandwidth(src="n1", dst="nobody") is None
        assert [p.name for p in v.alive()] == sorted(v.peers)
        assert seen and isinstance(seen[-1], View)
        unsub()
        count = len(seen)
        nodes[2].update_meta(queued_s=9.0)
        assert await wait_for(lambda: nodes[3].view().peers["n2"].meta.queued_s == 9.0)
        assert len(seen) == count
        # leave: others see "left", not "dead"
        await nodes[4].leave()
        await nodes[4].stop()
        assert await wait_for(lambda: nodes[0].view().peers["n4"].status == "left")
    finally:
        for n in nodes:
            await n.stop()


async def test_bad_local_input_raises_and_node_keeps_serving():
    net = MemoryNetwork()
    nodes = await start_nodes(2, network=net)
    try:
        assert await wait_for(lambda: all_see_all(nodes))
        with pytest.raises(ConfigError):
            nodes[0].update_meta(capacity=-1.0)
        with pytest.raises(ConfigError):
            nodes[0].update_meta(queued_s=float("nan"))
        with pytest.raises(ConfigError):
            nodes[0].record_transfer("n1", nbytes=0, seconds=1.0)
        with pytest.raises(ConfigError):
            nodes[0].record_transfer("n1", nbytes=10, seconds=-1.0)
        with pytest.raises(RemoteError):
            await nodes[0].handle_push_pull(b"\xa7garbage")
        with pytest.raises(RemoteError):
            await nodes[0].handle_push_pull(b"\xa7" + msgpack.packb({"f": "x"}))
        assert nodes[0].stats["dropped_malformed"] == 2
        nodes[0].update_meta(queued_s=2.0)
        assert await wait_for(lambda: nodes[1].view().peers["n0"].meta.queued_s == 2.0)
    finally:
        for n in nodes:
            await n.stop()


async def test_bounded_inbox_drops_and_counts():
    net = MemoryNetwork()
    cfg = LOCAL.with_(inbound_queue=8)
    node = GossipNode(meta("solo", "mem"), bind=("mem", 0), config=cfg, network=net)
    await node.start()
    try:
        for _ in range(20):
            node._on_datagram(b"\xa7junk", ("mem", 1))
        assert node.stats["dropped_queue_full"] == 12
        assert await wait_for(lambda: node.stats["dropped_malformed"] == 8)
    finally:
        await node.stop()


async def test_udp_cluster_with_secret_drops_forged_and_malformed():
    nodes = await start_nodes(3, secret=b"cluster-secret")
    try:
        assert await wait_for(lambda: all_see_all(nodes))
        target = nodes[0]
        assert target.address[1] != 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ping = encode_primary(Ping(1, "n0", "evil", ("127.0.0.1", 9)))
        sock.sendto(Codec(b"wrong").seal(ping), target.address)
        sock.sendto(Codec(None).seal(ping), target.address)
        sock.sendto(b"\x00\x01\x02", target.address)
        sock.sendto(b"", target.address)
        sock.close()
        assert await wait_for(
            lambda: target.stats["dropped_auth"] == 2 and target.stats["dropped_malformed"] >= 1
        )
        nodes[2].update_meta(queued_s=3.5)
        assert await wait_for(lambda: target.view().peers["n2"].meta.queued_s == 3.5)
        assert all_see_all(nodes)
    finally:
        for n in nodes:
            await n.stop()


async def test_udp_crash_detected():
    nodes = await start_nodes(4)
    try:
        assert await wait_for(lambda: all_see_all(nodes))
        await nodes[3].stop()  # silent: no leave
        t0 = time.monotonic()
        assert await wait_for(
            lambda: all(n.view().peers["n3"].status == "dead" for n in nodes[:3]), 10.0
        )
        assert time.monotonic() - t0 < 10.0
    finally:
        for n in nodes:
            await n.stop()


async def test_dialer_given_means_no_tcp_bound_and_push_pull_routed():
    registry: dict[tuple[str, int], GossipNode] = {}
    calls: list[tuple[str, int]] = []

    async def dialer(addr: tuple[str, int], payload: bytes) -> bytes:
        calls.append(addr)
        return await registry[addr].handle_push_pull(payload)

    nodes: list[GossipNode] = []
    try:
        for i in range(3):
            node = GossipNode(
                meta(f"d{i}"), bind=("127.0.0.1", 0), config=LOCAL, push_pull_dialer=dialer
            )
            await node.start(seeds=[nodes[0].address] if nodes else [])
            registry[node.address] = node
            nodes.append(node)
            # The TCP port with the same number is free: the node did not bind it.
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(node.address)
            s.close()
        assert await wait_for(lambda: all_see_all(nodes))
        assert calls and all(a == nodes[0].address for a in calls[:2])
    finally:
        for n in nodes:
            await n.stop()


async def test_tcp_push_pull_server_survives_garbage():
    nodes = await start_nodes(2)
    try:
        assert await wait_for(lambda: all_see_all(nodes))
        host, port = nodes[0].address
        for payload in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            await reader.read()
            writer.close()
            await writer.wait_closed()
        assert await wait_for(lambda: nodes[0].stats["tcp_errors"] >= 3)
        nodes[1].update_meta(queued_s=4.0)
        assert await wait_for(lambda: nodes[0].view().peers["n1"].meta.queued_s == 4.0)
    finally:
        for n in nodes:
            await n.stop()


async def test_join_retried_until_seed_starts():
    net = MemoryNetwork()
    late = GossipNode(meta("b", "mem"), bind=("mem", 0), config=LOCAL, network=net)
    await late.start(seeds=[("mem", 45000)])
    seed = GossipNode(meta("a", "mem"), bind=("mem", 45000), config=LOCAL, network=net)
    try:
        assert await wait_for(lambda: late.stats["push_pull_failed"] >= 1)
        assert not late.core.joined
        await seed.start()
        assert await wait_for(lambda: all_see_all([seed, late]))
    finally:
        await late.stop()
        await seed.stop()


async def test_failing_host_dialer_is_a_remote_fault():
    registry: dict[tuple[str, int], GossipNode] = {}
    failures = [3]

    async def flaky(addr: tuple[str, int], payload: bytes) -> bytes:
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("rpc connection reset")
        return await registry[addr].handle_push_pull(payload)

    a = GossipNode(meta("fa"), bind=("127.0.0.1", 0), config=LOCAL, push_pull_dialer=flaky)
    b = GossipNode(meta("fb"), bind=("127.0.0.1", 0), config=LOCAL, push_pull_dialer=flaky)
    try:
        await a.start()
        registry[a.address] = a
        await b.start(seeds=[a.address])
        registry[b.address] = b
        assert await wait_for(lambda: all_see_all([a, b]))
        assert b.stats["push_pull_errors"] >= 1 and b.stats["push_pull_failed"] >= 1
    finally:
        await a.stop()
        await b.stop()


async def test_advertised_address_keeps_declared_host_and_bound_port():
    m = PeerMeta("w", ("127.0.0.1", 0), ("127.0.0.1", 0), ("127.0.0.1", 8000))
    node = GossipNode(m, bind=("0.0.0.0", 0), config=LOCAL)
    await node.start()
    try:
        port = node.address[1]
        assert port != 0
        me = node.view().peers["w"].meta
        assert me.gossip_addr == ("127.0.0.1", port) and me.rpc_addr == ("127.0.0.1", port)
    finally:
        await node.stop()


def test_udp_sends_only_to_ip_literals() -> None:
    from gossip.udp import sendable

    assert sendable(("127.0.0.1", 7001)) and sendable(("::1", 0))
    for bad in [
        ("1r7.0.0.1", 9),
        ("h\x00st", 1),
        ("localhost", 1),
        ("127.0.0.1", 70000),
        ("127.0.0.1", True),
        (b"127.0.0.1", 1),
        ("127.0.0.1",),
    ]:
        assert not sendable(bad), bad
