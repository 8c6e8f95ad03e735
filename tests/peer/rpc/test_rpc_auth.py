"""HMAC challenge-response through ``auth.challenge``/``auth.prove``."""

from __future__ import annotations

import msgpack
import pytest
from conftest import TEST_LIMITS, RawClient, ServerFactory

from peer.rpc import AuthError, RpcClient, auth


async def test_shared_secret_authenticates(make_server: ServerFactory) -> None:
    server = await make_server(secret="cluster-secret")
    client = await RpcClient.connect(
        "127.0.0.1", server.port, secret=b"cluster-secret", limits=TEST_LIMITS
    )
    assert await client.call("add", 1, 2) == 3
    assert await client.call("ping") == "pong"
    await client.close()
    assert server.stats["auth_ok"] == 1


async def test_wrong_secret_is_refused_and_closed(make_server: ServerFactory) -> None:
    server = await make_server(secret="right")
    with pytest.raises(AuthError) as err:
        await RpcClient.connect("127.0.0.1", server.port, secret="wrong", limits=TEST_LIMITS)
    assert "proof" in str(err.value)
    assert server.stats["auth_failures"] == 1
    # still serving others
    good = await RpcClient.connect("127.0.0.1", server.port, secret="right", limits=TEST_LIMITS)
    assert await good.call("ping") == "pong"
    await good.close()


async def test_missing_secret_on_either_side(make_server: ServerFactory) -> None:
    secured = await make_server(secret="s")
    with pytest.raises(AuthError, match="requires"):
        await RpcClient.connect("127.0.0.1", secured.port, limits=TEST_LIMITS)
    open_server = await make_server()
    with pytest.raises(AuthError, match="server has none"):
        await RpcClient.connect("127.0.0.1", open_server.port, secret="s", limits=TEST_LIMITS)


async def test_only_ping_and_handshake_before_auth(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def record(i: int) -> int:
        calls.append(i)
        return i

    server = await make_server({"record": record}, secret="s")
    raw: RawClient = await raw_clients(server.port)
    assert await raw.call(0, "ping") == [1, 0, None, "pong"]
    for i, method in enumerate(("info", "add", "record", "nosuch"), start=1):
        reply = await raw.call(i, method, 1, 2)
        assert reply[:2] == [1, i]
        assert reply[2]["code"] == "unauthorized"  # unknown methods too: nothing to enumerate
    await raw.send_obj([2, "record", [5]])  # a notification is refused as well
    note = await raw.recv()
    assert note[:2] == [2, "rpc.error"] and note[2][0]["code"] == "unauthorized"
    hello = await raw.call(10, "hello", 1)
    assert hello[3]["auth_required"] is True
    # a hand-rolled prove, as a third party would do it
    nonce = (await raw.call(11, "auth.challenge"))[3]
    mine = b"n" * 32
    proof = auth.client_proof(b"s", nonce, mine)
    reply = await raw.call(12, "auth.prove", mine, proof)
    assert reply[2] is None
    assert reply[3] == auth.server_proof(b"s", nonce, mine)
    # from here on every frame carries its tag, both ways
    c2s, s2c = auth.session_keys(b"s", nonce, mine)
    send, receive = auth.FrameMac(c2s), auth.FrameMac(s2c)
    frame = msgpack.packb([0, 13, "record", [7]])
    await raw.send(frame + send.tag(frame))
    answer = msgpack.packb([1, 13, None, 7])
    assert await raw.recv() == [1, 13, None, 7]
    assert await raw.recv() == receive.tag(answer)[2:]
    assert calls == [7]
    info = msgpack.packb([0, 14, "info", []])
    await raw.send(info + send.tag(info))
    reply = await raw.recv()
    assert reply[3]["auth_required"] is True
    assert server.stats["unauthorized_calls"] == 5


async def test_unsealed_frame_after_auth_closes(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def record(i: int) -> int:
        calls.append(i)
        return i

    server = await make_server({"record": record}, secret="s")
    raw: RawClient = await raw_clients(server.port)
    nonce = (await raw.call(1, "auth.challenge"))[3]
    mine = b"m" * 32
    # the prove and a plain call in one write: the call is read after sealing starts
    await raw.send(
        msgpack.packb([0, 2, "auth.prove", [mine, auth.client_proof(b"s", nonce, mine)]])
        + msgpack.packb([0, 3, "record", [1]])
        + msgpack.packb(b"x" * 16)
    )
    assert (await raw.recv())[:3] == [1, 2, None]
    assert await raw.closed_by_peer()
    assert calls == []
    assert server.stats["mac_failures"] == 1


async def test_nonce_is_single_use(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(secret="s")
    raw: RawClient = await raw_clients(server.port)
    reply = await raw.call(1, "auth.prove", b"n" * 32, b"x" * 32)
    assert reply[2]["code"] == "auth_failed"  # no challenge yet: refused, connection kept
    nonce = (await raw.call(2, "auth.challenge"))[3]
    reply = await raw.call(3, "auth.prove", b"n" * 32, b"bad" * 10)
    assert reply[2]["code"] == "auth_failed"
    assert await raw.closed_by_peer()  # a failed proof closes the connection
    raw2: RawClient = await raw_clients(server.port)
    proof = auth.client_proof(b"s", nonce, b"n" * 32)  # replay against an old nonce
    reply = await raw2.call(1, "auth.prove", b"n" * 32, proof)
    assert reply[2]["code"] == "auth_failed"


async def test_auth_timeout_closes_idle_unauthenticated(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(secret="s", limits=TEST_LIMITS.with_(auth_timeout=0.3))
    raw: RawClient = await raw_clients(server.port)
    note = await raw.recv(timeout=5)
    assert note[0] == 2 and note[1] == "rpc.error"
    assert note[2][0]["code"] == "auth_timeout"
    assert await raw.closed_by_peer()
    assert server.stats["auth_timeouts"] == 1


def test_proofs_differ_by_direction_and_secret() -> None:
    sn, cn = auth.new_nonce(), auth.new_nonce()
    assert len(sn) == auth.NONCE_BYTES and sn != cn
    cp = auth.client_proof(b"k", sn, cn)
    assert cp != auth.server_proof(b"k", sn, cn)
    assert cp != auth.client_proof(b"k2", sn, cn)
    assert auth.verify(cp, cp) and not auth.verify(cp, "text") and not auth.verify(cp, cp[:-1])
    with pytest.raises(ValueError):
        auth.normalize_secret("")
