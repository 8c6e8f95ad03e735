"""Sealed frames after auth, timeouts, connection caps, the idle flood and TLS."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import TEST_LIMITS, RawClient, ServerFactory

from peer.rpc import ConnectionLost, RpcClient, RpcError, RpcPool, RpcServer, auth
from peer.rpc.flood import idle_flood
from peer.rpc.tls import TlsFiles

SECRET = b"cluster-secret"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, x: Any) -> Any:
        self.calls.append(x)
        return x


async def authed_raw(raw: RawClient, secret: bytes = SECRET) -> tuple[auth.FrameMac, auth.FrameMac]:
    """Authenticate a raw connection; the (send, receive) MACs for what follows."""
    nonce = (await raw.call(1, "auth.challenge"))[3]
    mine = auth.new_nonce()
    reply = await raw.call(2, "auth.prove", mine, auth.client_proof(secret, nonce, mine))
    assert reply[2] is None
    c2s, s2c = auth.session_keys(secret, nonce, mine)
    return auth.FrameMac(c2s), auth.FrameMac(s2c)


def sealed(mac: auth.FrameMac, obj: Any) -> bytes:
    frame = msgpack.packb(obj)
    return frame + mac.tag(frame)


async def test_client_seals_and_large_frames_pass(make_server: ServerFactory) -> None:
    server = await make_server(secret=SECRET)
    async with await RpcClient.connect(
        "127.0.0.1", server.port, secret=SECRET, limits=TEST_LIMITS
    ) as client:
        assert client.sealed
        blob = bytes(range(256)) * 1200  # 300 KiB: frame and tag in separate writes
        assert await client.call("echo", blob) == blob
        results = await asyncio.gather(*(client.call("add", i, i) for i in range(50)))
        assert results == [2 * i for i in range(50)]
    assert server.stats["mac_failures"] == 0
    assert server.stats["auth_ok"] == 1


@pytest.mark.parametrize("attack", ["replay", "reorder", "splice", "flip"])
async def test_tampered_sealed_frames_close_and_run_nothing(
    make_server: ServerFactory, raw_clients, attack: str
) -> None:  # type: ignore[no-untyped-def]
    record = Recorder()
    server = await make_server({"record": record}, secret=SECRET)
    raw: RawClient = await raw_clients(server.port)
    send, _ = await authed_raw(raw)
    first = sealed(send, [0, 10, "record", ["a"]])
    second = sealed(send, [0, 11, "record", ["b"]])
    if attack == "replay":
        stream = first + first
        expect = ["a"]
    elif attack == "reorder":
        stream = second + first
        expect = []
    elif attack == "splice":  # a frame sealed for another connection of the same cluster
        other: RawClient = await raw_clients(server.port)
        other_send, _ = await authed_raw(other)
        stream = first + sealed(other_send, [0, 12, "record", ["c"]])
        expect = ["a"]
    else:  # one bit of the second frame's params flipped
        flipped = bytearray(second)
        flipped[len(second) - auth.TAG_BYTES - 3] ^= 0x01
        stream = first + bytes(flipped)
        expect = ["a"]
    await raw.send(stream)
    assert await raw.closed_by_peer()
    assert record.calls == expect
    assert server.stats["mac_failures"] == 1


async def test_preauth_frames_are_bounded(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    limits = TEST_LIMITS.with_(max_preauth_frame_bytes=1024)
    server = await make_server(secret=SECRET, limits=limits)
    raw: RawClient = await raw_clients(server.port)
    await raw.send(msgpack.packb([0, 1, "ping", [b"x" * 2000]])[:100])  # only the header part
    note = await raw.recv()
    assert note[2][0]["code"] == "too_large"
    assert await raw.closed_by_peer()
    # an array header that declares more elements than the frame bound can hold
    raw2: RawClient = await raw_clients(server.port)
    await raw2.send(b"\x94\x00\x01\xa4ping\xdd" + (5000).to_bytes(4, "big"))
    note = await raw2.recv()
    assert note[2][0]["code"] == "too_large" and "array" in note[2][0]["message"]
    assert server.stats["oversized_frames"] == 2
    # after auth the full bound applies
    async with await RpcClient.connect(
        "127.0.0.1", server.port, secret=SECRET, limits=limits
    ) as client:
        assert await client.call("echo", b"y" * 100_000) == b"y" * 100_000


async def test_idle_connection_is_closed_busy_one_is_not(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    async def slow(x: int) -> int:
        await asyncio.sleep(0.6)
        return x

    server = await make_server({"slow": slow}, limits=TEST_LIMITS.with_(idle_timeout=0.3))
    idle: RawClient = await raw_clients(server.port)
    busy: RawClient = await raw_clients(server.port)
    assert (await idle.call(1, "ping"))[3] == "pong"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert (await busy.call(1, "slow", 7))[3] == 7  # 0.6 s in flight: not idle meanwhile
    note = await idle.recv()
    assert note[2][0]["code"] == "idle_timeout"
    assert await idle.closed_by_peer()
    assert loop.time() - t0 >= 0.6
    assert (await busy.call(2, "ping"))[3] == "pong"  # its idle clock restarted at the answer
    assert await busy.closed_by_peer(timeout=5)
    assert server.stats["idle_timeouts"] == 2


async def test_silent_connection_times_out_without_a_secret(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(limits=TEST_LIMITS.with_(auth_timeout=0.3))
    silent: RawClient = await raw_clients(server.port)
    talker: RawClient = await raw_clients(server.port)
    assert (await talker.call(1, "ping"))[3] == "pong"
    note = await silent.recv()
    assert note[2][0]["code"] == "auth_timeout"
    assert await silent.closed_by_peer()
    await asyncio.sleep(0.2)
    assert (await talker.call(2, "ping"))[3] == "pong"  # its first request was its handshake
    assert server.stats["auth_timeouts"] == 1


async def test_per_source_cap_leaves_room_for_others(make_server: ServerFactory) -> None:
    server = await make_server(limits=TEST_LIMITS.with_(max_connections_per_source=3))
    held = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.1", 0)
        )
        held.append(RawClient(reader, writer))
    for i, raw in enumerate(held):
        assert (await raw.call(i, "ping"))[3] == "pong"
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, local_addr=("127.0.0.1", 0)
    )
    extra = RawClient(reader, writer)
    note = await extra.recv()
    assert note[2][0]["code"] == "busy" and "127.0.0.1" in note[2][0]["message"]
    assert await extra.closed_by_peer()
    async with await RpcClient.connect(
        "127.0.0.1", server.port, limits=TEST_LIMITS, local_addr=("127.0.0.2", 0)
    ) as other:
        assert await other.call("ping") == "pong"
    assert server.stats["source_cap_rejections"] == 1
    for raw in [*held, extra]:
        await raw.close()


async def test_idle_flood_from_one_address(make_server: ServerFactory) -> None:
    limits = TEST_LIMITS.with_(
        max_connections=1024, max_connections_per_source=64, idle_timeout=0.5, auth_timeout=5.0
    )
    server = await make_server(limits=limits)
    report = await idle_flood("127.0.0.1", server.port, 1000, wait_s=3.0, limits=limits)
    assert report.connected + report.connect_errors == 1000
    # the per-source cap: never more than 64 held at once (more over time, as idle ones close)
    assert report.answered >= 64 and report.peak_held <= 64
    assert report.answered + report.refused == report.connected
    assert report.refusal_codes == {"busy": report.refused}
    assert report.probe_ok, report.probe_error
    assert report.closed_by_server == report.answered and report.still_open == 0
    assert report.close_codes == {"idle_timeout": report.answered}
    assert report.last_close_s is not None and report.last_close_s < 0.5 + 1.0
    assert server.stats["source_cap_rejections"] == report.refused
    assert server.stats["idle_timeouts"] == report.answered
    assert server.connections == 0


class FakeIdleServer:
    """Answers hello, then closes the first connection as idle when its first call arrives
    (as a server does when its idle timer fires before it reads a request); serves later
    connections normally."""

    def __init__(self) -> None:
        self.connections = 0
        self.calls_run = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        unpacker = msgpack.Unpacker(raw=False)
        while data := await reader.read(65536):
            unpacker.feed(data)
            for msg in unpacker:
                if msg[2] == "hello":
                    info = {"protocol": 1, "auth_required": False, "implementation": "fake"}
                    writer.write(msgpack.packb([1, msg[1], None, info]))
                elif first:
                    note = [2, "rpc.error", [{"code": "idle_timeout", "message": "idle"}]]
                    writer.write(msgpack.packb(note))
                    writer.close()
                    return
                else:
                    self.calls_run += 1
                    writer.write(msgpack.packb([1, msg[1], None, msg[3][0]]))
        writer.close()


async def test_pool_resends_a_call_the_server_closed_as_idle() -> None:
    fake = FakeIdleServer()
    srv = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    pool = RpcPool(limits=TEST_LIMITS, idle_timeout_s=None)
    try:
        assert await pool.call(("127.0.0.1", port), "echo", 5) == 5
        assert fake.connections == 2 and fake.calls_run == 1
    finally:
        await pool.close()
        srv.close()
        await srv.wait_closed()


async def test_pool_retires_its_idle_connections(make_server: ServerFactory) -> None:
    server = await make_server()
    pool = RpcPool(limits=TEST_LIMITS, idle_timeout_s=0.2)
    addr = ("127.0.0.1", server.port)
    try:
        assert await pool.call(addr, "add", 1, 1) == 2
        assert await pool.call(addr, "add", 1, 2) == 3  # reused
        assert server.stats["connections_opened"] == 1
        await asyncio.sleep(0.3)
        assert await pool.call(addr, "add", 2, 2) == 4  # retired and reconnected
        assert server.stats["connections_opened"] == 2
    finally:
        await pool.close()
    with pytest.raises(ValueError):
        RpcPool(idle_timeout_s=0)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "peer.crt", d / "peer.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=amcoedge-test", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def test_tls_with_a_self_signed_certificate(self_signed: tuple[str, str]) -> None:
    await tls_scenario(*self_signed)


def test_tls_under_uvloop(self_signed: tuple[str, str]) -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(tls_scenario(*self_signed))


async def tls_scenario(cert: str, key: str) -> None:
    server = RpcServer(
        {"echo": Recorder()},
        limits=TEST_LIMITS,
        secret=SECRET,
        tls=TlsFiles(certfile=cert, keyfile=key),
    )
    await server.start("127.0.0.1", 0)
    pool = RpcPool(secret=SECRET, limits=TEST_LIMITS, tls=TlsFiles(cafile=cert))
    try:
        addr = ("127.0.0.1", server.port)
        blob = b"t" * 200_000
        assert await pool.call(addr, "echo", blob) == blob
        assert (await pool.client(addr)).sealed
        info = await pool.call(addr, "info")
        assert info["tls"] is True and info["auth_required"] is True
        # a plain-TCP client gets nothing it can use; one that does not trust the cert fails
        with pytest.raises(RpcError):
            await RpcClient.connect(
                "127.0.0.1", server.port, secret=SECRET, limits=TEST_LIMITS, timeout=1.0
            )
        with pytest.raises(ConnectionLost, match="certificate"):
            await RpcClient.connect(
                "127.0.0.1", server.port, secret=SECRET, limits=TEST_LIMITS, tls=TlsFiles()
            )
    finally:
        await pool.close()
        await server.close()
    with pytest.raises(ValueError, match="no such file"):
        TlsFiles(cafile=str(Path(cert).with_suffix(".missing")))
    with pytest.raises(ValueError, match="certfile"):
        RpcServer(tls=TlsFiles(cafile=cert))
