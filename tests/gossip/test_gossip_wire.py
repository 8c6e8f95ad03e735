"""Wire format round trips; malformed and forged datagrams are dropped and counted."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import AuthError, DecodeError, GossipConfig, GossipCore, PeerMeta
from gossip.effects import Send
from gossip.wire import (
    Ack,
    Alive,
    Announce,
    Codec,
    Dead,
    Digest,
    Gossip,
    Left,
    Load,
    MemberState,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    encode_broadcast,
    encode_primary,
    encode_push_pull,
)


def meta(name: str = "a", port: int = 7000) -> PeerMeta:
    return PeerMeta(
        name=name,
        gossip_addr=("10.0.0.1", port),
        rpc_addr=("10.0.0.1", port),
        http_addr=("10.0.0.9", 8000),
        version="1",
        model_id="digits16",
        capacity=120.0,
        queued_s=1.5,
        active_shares=2,
    )


def digest(name: str = "a") -> Digest:
    return Digest(name, 3, meta(name), (("b", 1024.0), ("c", 2048.0)))


PRIMARIES = [
    Ping(1, "b", "a", ("10.0.0.1", 7000)),
    Ack(2, "b"),
    Nack(3, "b"),
    PingReq(4, "c", ("10.0.0.3", 7000), "a", ("10.0.0.1", 7000)),
    Gossip("a"),
    Announce("a"),
]
BROADCASTS = [
    Alive("a", 2, digest()),
    Suspect("a", 2, "b"),
    Dead("a", 2, "b"),
    Left("a", 5),
    Load("z", 3, 120.0, 1.25, 2, (("b", 1024.0),)),
]


@pytest.mark.parametrize("secret", [None, b"cluster-secret"])
def test_datagram_round_trip(secret):
    receiver = Codec(secret, "rx")
    for i, p in enumerate(PRIMARIES):
        sender = Codec(secret, p.src, boot=i)  # one process per message: no replays
        data = sender.seal(encode_primary(p) + b"".join(encode_broadcast(b) for b in BROADCASTS))
        who, primary, bs = receiver.decode_datagram(data)
        assert who == (None if secret is None else p.src)
        assert primary == p
        assert bs == BROADCASTS


def test_push_pull_round_trip_and_limit():
    pp = PushPull("a", True, (MemberState("a", 1, "alive", digest()),))
    data = Codec(b"s", "a").seal(encode_push_pull(pp))
    assert Codec(b"s", "b").decode_push_pull(data, 10_000) == pp
    with pytest.raises(DecodeError):
        Codec(b"s", "b").decode_push_pull(data, 10)


def test_broadcasts_stay_small():
    # An alive with a full digest must leave room for many per 1400-byte datagram, and a load
    # update (the frequent one) is a fraction of that.
    assert len(encode_broadcast(Alive("p0001", 1, digest("p0001")))) < 130
    d = Digest("p0001", 7, meta("p0001"), ())
    assert len(encode_broadcast(Load.of(d))) < 40


def test_forged_and_unsigned_datagrams_rejected():
    good = Codec(b"right")
    body = encode_primary(Ack(1, "b"))
    with pytest.raises(AuthError):
        good.decode_datagram(Codec(b"wrong").seal(body))
    with pytest.raises(AuthError):
        good.decode_datagram(Codec(None).seal(body))
    with pytest.raises(AuthError):
        Codec(None).decode_datagram(good.seal(body))
    tampered = bytearray(good.seal(body))
    tampered[-1] ^= 1
    with pytest.raises(AuthError):
        good.decode_datagram(bytes(tampered))


@pytest.mark.parametrize(
    "obj",
    [
        [99, 1],
        [1, -1, "b", "a", ["h", 1]],
        [1, 1, "b", "a", ["h", 70000]],
        [1, 1, "", "a", ["h", 1]],
        [2, "x", "b"],
        [5],
        {"a": 1},
        [1, 1, "b", "a", ["h", 1], "extra"],
    ],
)
def test_malformed_primary(obj):
    codec = Codec(None)
    with pytest.raises(DecodeError):
        codec.decode_datagram(codec.seal(msgpack.packb(obj)))


@pytest.mark.parametrize(
    "obj",
    [
        [10, "a", 1, [0] * 14],
        [15, "a", 1, -5.0, 0.0, 0, []],
        [15, "a", 1, float("nan"), 0.0, 0, []],
        [15, "a", 1, 1.0, 0.0, 0, ["b"]],
        [15, "a", 1, 1.0, 0.0, -1, []],
        [14, "a", 1, "h", 1, None, 1, None, 1, "1", "m", 1.0, 0.0, 0, []],
        [10, "x", 1, ["a", 1, "h", 1, None, 1, None, 1, "1", "m", 1.0, 0.0, 0, []]],
        [11, "a", 1],
    ],
)
def test_malformed_broadcast(obj):
    codec = Codec(None)
    with pytest.raises(DecodeError):
        codec.decode_datagram(codec.seal(encode_primary(Gossip("q")) + msgpack.packb(obj)))


def _core(secret: bytes | None = None) -> GossipCore:
    return GossipCore(meta("me"), GossipConfig.lan(), 0.0, secret=secret, seed=1)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_core_survives_random_bytes(data):
    core = _core()
    if not data.startswith(b"\xa7"):
        assert core.handle(data, ("10.0.0.2", 1), 1.0) == []
        assert core.counters["dropped_malformed"] + core.counters["dropped_auth"] == 1
    core.handle(b"\xa7" + data, ("10.0.0.2", 1), 1.0)
    core.tick(2.0)


@settings(max_examples=100)
@given(
    st.recursive(
        st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.none(), st.lists, max_leaves=20
    )
)
def test_core_survives_arbitrary_msgpack(obj):
    core = _core()
    core.handle(b"\xa7" + msgpack.packb(obj), ("10.0.0.2", 1), 1.0)
    core.tick(2.0)


def test_core_counts_forged_and_keeps_serving():
    core = _core(secret=b"k")
    ping = encode_primary(Ping(7, "me", "x", ("10.0.0.2", 9)))
    assert core.handle(Codec(b"evil", "x").seal(ping, 1.0), ("10.0.0.2", 9), 1.0) == []
    assert core.handle(Codec(None).seal(ping), ("10.0.0.2", 9), 1.0) == []
    assert core.handle(b"", ("10.0.0.2", 9), 1.0) == []
    assert core.counters["dropped_auth"] == 2
    assert core.counters["dropped_malformed"] == 1
    out = core.handle(Codec(b"k", "x").seal(ping, 1.0), ("10.0.0.2", 9), 1.0)
    sends = [e for e in out if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].addr == ("10.0.0.2", 9)
    _, primary, _ = Codec(b"k", "x").decode_datagram(sends[0].data, 1.0)
    assert primary == Ack(7, "me")


def test_datagrams_fit_payload_limit():
    core = _core()
    cfg = core.config
    # Flood the queue with alive broadcasts of many peers, then check every datagram's size.
    for i in range(300):
        d = Digest(f"peer{i:03d}", 1, meta(f"peer{i:03d}", 7000 + i), (("x", 1.0),) * 16)
        core.handle(
            Codec(None).seal(encode_primary(Gossip("x")) + encode_broadcast(Alive(d.name, 0, d))),
            ("10.0.0.2", 1),
            0.1,
        )
    t = 0.2
    sizes = []
    for _ in range(50):
        t += 0.05
        for e in core.tick(t):
            if isinstance(e, Send):
                sizes.append(len(e.data))
    assert sizes and max(sizes) <= cfg.udp_payload_max
    assert max(sizes) > cfg.udp_payload_max - 200  # and they are well filled


def test_push_pull_with_wrong_secret_is_refused_and_counted():
    core = _core(secret=b"k")
    other = GossipCore(meta("x", 7001), GossipConfig.lan(), 0.0, secret=b"other", seed=2)
    with pytest.raises(AuthError):
        core.handle_push_pull(other._state_payload(join=True), 1.0)
    with pytest.raises(DecodeError):
        core.handle_push_pull(b"\xa9" + b"\x00" * 10, 1.0)
    assert core.counters["dropped_auth"] == 1 and core.counters["dropped_malformed"] == 1
    assert core.status_of("x") is None
    good = GossipCore(meta("y", 7002), GossipConfig.lan(), 0.0, secret=b"k", seed=3)
    reply, _ = core.handle_push_pull(good._state_payload(join=True), 1.0)
    assert core.status_of("y") == "alive"
    good.push_pull_reply(reply, 1.0)
    assert good.status_of("me") == "alive" and good.joined
