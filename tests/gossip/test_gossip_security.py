"""The membership protocol cannot be turned against a member (issue 11).

Forged Left/Dead/Suspect with any incarnation, replays and stale frames are counted drops that
change nothing; incarnations never leave the wire's range; random and mutated datagrams never
raise out of the core and, with a cluster key, never change membership.
"""

from __future__ import annotations

import subprocess
import sys

import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.core import GossipCore
from gossip.effects import Send
from gossip.membership import MAX_INCARNATION_JUMP
from gossip.view import PeerMeta
from gossip.wire import (
    MAX_INCARNATION,
    Alive,
    Codec,
    Dead,
    Gossip,
    Left,
    Ping,
    Suspect,
    encode_broadcast,
    encode_primary,
)
from tests.gossip.gossip_simutil import cluster, run_to_convergence, start_all, status_everywhere

OUTSIDER = ("10.9.9.9", 4444)
WIRE_MAX = 2**63 - 1


def _forge(codec: Codec, *items: object, src: str = "evil", wall: float = 0.0) -> bytes:
    body = encode_primary(Gossip(src)) + b"".join(encode_broadcast(b) for b in items)  # type: ignore[arg-type]
    return codec.seal(body, wall)


def _counter(c, key: str) -> int:
    return sum(p.core.counters[key] for p in c.peers)


def _states(c) -> list[dict[str, tuple[int, str]]]:
    out = []
    for p in c.peers:
        out.append(
            {
                n: (p.core._members[n].incarnation, p.core._members[n].status)
                for n in p.core.member_names()
            }
        )
    return out


def test_the_21_byte_left_no_longer_evicts():
    """Issue 11's attack: `Left(p4, 2^63-1)` sent to one peer of a cluster without a key."""
    c, rec = cluster(6)
    start_all(c)
    t0 = run_to_convergence(c)
    victim = c.peers[4].core.name
    forged = Codec(None).seal(
        encode_primary(Gossip("x")) + encode_broadcast(Left(victim, WIRE_MAX))
    )
    c.net.send(OUTSIDER, c.peers[1].addr, forged)
    c.run_until(t0 + 0.1)
    assert c.peers[1].core.counters["dropped_out_of_range"] == 1
    # The same Left at the victim's real incarnation, or any incarnation, from anyone but the
    # victim: a counted forgery.
    for inc in (0, 1, 1000):
        left = Codec(None).seal(encode_primary(Gossip("x")) + encode_broadcast(Left(victim, inc)))
        c.net.send(OUTSIDER, c.peers[2].addr, left)
        c.net.send(c.peers[3].addr, c.peers[2].addr, left)  # from a member, still not the victim
    c.run_until(t0 + 10.0)
    assert c.peers[2].core.counters["dropped_forged"] == 6
    assert status_everywhere(c, victim) == {"alive"}
    assert rec.first(victim, "left") is None and rec.first(victim, "dead") is None
    assert c.peers[4].core.incarnation <= 1


def test_huge_suspect_and_dead_are_refused_before_they_apply():
    c, rec = cluster(6)
    start_all(c)
    t0 = run_to_convergence(c)
    victim = c.peers[4].core.name
    codec = Codec(None)
    jump = MAX_INCARNATION_JUMP + 1
    for msg in (
        Dead(victim, WIRE_MAX, "x"),  # beyond MAX_INCARNATION: refused by the decoder
        Suspect(victim, MAX_INCARNATION + 1, "x"),
        Dead(victim, jump, "x"),  # within range but an implausible jump: refused by the rules
        Suspect(victim, MAX_INCARNATION, "x"),
        Alive(c.peers[1].core.name, jump, c.peers[1].core._local.digest),
    ):
        c.net.send(
            OUTSIDER,
            c.peers[2].addr,
            codec.seal(encode_primary(Gossip("x")) + encode_broadcast(msg)),
        )
    # ...and the same accusations sent to the victim itself do not make it refute past them.
    c.net.send(OUTSIDER, c.peers[4].addr, _forge(codec, Suspect(victim, jump, "x")))
    c.run_until(t0 + 10.0)
    assert c.peers[2].core.counters["dropped_out_of_range"] == 5
    assert c.peers[4].core.counters["dropped_out_of_range"] == 1
    assert status_everywhere(c, victim) == {"alive"}
    assert max(p.core.incarnation for p in c.peers) <= 1
    assert rec.first(victim, "suspect") is None


def test_refutation_saturates_inside_the_wire_range():
    me = PeerMeta("me", ("10.0.0.1", 7000), ("10.0.0.1", 7000), ("10.0.0.1", 8000))
    core = GossipCore(me, GossipConfig.lan(), 0.0, seed=1)
    core._ms.incarnation = MAX_INCARNATION - 1
    core._members["me"].incarnation = MAX_INCARNATION - 1
    for t in (1.0, 2.0, 3.0):  # accusations at the top of the range, again and again
        core.handle(_forge(Codec(None), Suspect("me", MAX_INCARNATION, "x")), OUTSIDER, t)
    assert core.incarnation == MAX_INCARNATION
    # Every datagram it sends still decodes: its own alive carries a representable number.
    sends = [e for e in core.tick(10.0) if isinstance(e, Send)]
    sends += [e for e in core.leave(10.1) if isinstance(e, Send)]
    for e in core.handle(
        Codec(None).seal(encode_primary(Ping(1, "me", "x", OUTSIDER))), OUTSIDER, 11.0
    ):
        assert isinstance(e, Send)
        _, _, items = Codec(None).decode_datagram(e.data)
        assert all(getattr(b, "incarnation", 0) <= MAX_INCARNATION for b in items)


def test_with_a_key_an_outsider_cannot_evict_anyone():
    c, rec = cluster(6, secret=b"cluster-key")
    start_all(c)
    t0 = run_to_convergence(c)
    before = _states(c)
    victim = c.peers[4].core.name
    wall = c.net.now
    for codec in (Codec(None), Codec(b"guess", "evil"), Codec(b"guess", victim)):
        for inc in (0, 1, MAX_INCARNATION, WIRE_MAX):
            for msg in (Left(victim, inc), Dead(victim, inc, "evil"), Suspect(victim, inc, "evil")):
                for p in c.peers:
                    c.net.send(OUTSIDER, p.addr, _forge(codec, msg, src=victim, wall=wall))
    c.run_until(t0 + 10.0)
    assert _states(c) == before
    assert status_everywhere(c, victim) == {"alive"}
    assert rec.first(victim, "suspect", after=t0) is None
    assert _counter(c, "dropped_auth") == 3 * 4 * 3 * 6


def test_with_a_key_replays_stale_frames_and_lying_members_are_counted():
    c, _ = cluster(5, secret=b"k")
    start_all(c)
    t0 = run_to_convergence(c)
    rx = c.peers[1]
    member = Codec(b"k", c.peers[3].core.name, boot=77)  # a key holder...
    victim = c.peers[4].core.name
    # ...claiming to be someone else in its message: the frame says who really sent it.
    lie = member.seal(encode_primary(Gossip(victim)) + encode_broadcast(Left(victim, 0)), t0)
    c.net.send(c.peers[3].addr, rx.addr, lie)
    # ...or sending a Left about another peer under its own name.
    left = member.seal(
        encode_primary(Gossip(c.peers[3].core.name)) + encode_broadcast(Left(victim, 0)), t0
    )
    c.net.send(c.peers[3].addr, rx.addr, left)
    c.run_until(t0 + 0.05)
    assert rx.core.counters["dropped_forged"] == 2
    # A genuine datagram captured on the wire and sent again is a replay.
    genuine = member.seal(encode_primary(Gossip(c.peers[3].core.name)), t0 + 0.05)
    for _ in range(3):
        c.net.send(OUTSIDER, rx.addr, genuine)
    c.run_until(t0 + 0.1)
    assert rx.core.counters["dropped_replay"] == 2
    # A frame stamped outside the clock-skew window is stale, however fresh its counter.
    skew = c.config.auth_skew_s
    c.run_until(skew + 5.0)  # the simulated wall clock starts at 0
    old = member.seal(encode_primary(Gossip(c.peers[3].core.name)), c.net.now - skew - 1.0)
    future = member.seal(encode_primary(Gossip(c.peers[3].core.name)), c.net.now + skew + 1.0)
    c.net.send(OUTSIDER, rx.addr, old)
    c.net.send(OUTSIDER, rx.addr, future)
    c.run_until(c.net.now + 5.0)
    assert rx.core.counters["dropped_stale"] == 2
    assert status_everywhere(c, victim) == {"alive"}
    # Duplicated datagrams on the simulated network are replays too, and harmless.
    assert run_to_convergence(c)


def test_graceful_leave_is_still_seen_as_left_everywhere():
    for secret in (None, b"k"):
        c, _ = cluster(8, secret=secret)
        start_all(c)
        t0 = run_to_convergence(c)
        name = c.peers[5].core.name
        c.leave(5)
        c.run_until(t0 + 1.0)
        assert status_everywhere(c, name, [i for i in range(8) if i != 5]) == {"left"}


def test_push_pull_left_counts_only_as_a_suspicion():
    c, _ = cluster(5)
    start_all(c)
    t0 = run_to_convergence(c)
    a, b = c.peers[0].core, c.peers[1].core
    victim = c.peers[4].core.name
    # b's state claims the victim left: a suspects it at most, and the victim refutes.
    b._members[victim].status = "left"
    a.handle_push_pull(b._state_payload(join=False), t0)
    assert a.status_of(victim) == "suspect"
    b._members[victim].status = "alive"
    c.run_until(t0 + 10.0)
    assert status_everywhere(c, victim) == {"alive"}


# -- properties: nothing from the network raises; nothing unauthenticated changes membership ---


def _keyed_pair() -> tuple[GossipCore, GossipCore, list[bytes]]:
    """Two keyed cores that know each other, and genuine datagrams one of them sent."""
    cfg = GossipConfig.lan()
    ma = PeerMeta("a", ("10.0.0.1", 7000), ("10.0.0.1", 7000), ("10.0.0.1", 8000))
    mb = PeerMeta("b", ("10.0.0.2", 7000), ("10.0.0.2", 7000), ("10.0.0.2", 8000))
    a = GossipCore(ma, cfg, 0.0, secret=b"k", seed=1)
    b = GossipCore(mb, cfg, 0.0, secret=b"k", seed=2)
    a.join([mb.gossip_addr], 0.0)
    reply, _ = b.handle_push_pull(a._state_payload(join=True), 0.0)
    a.push_pull_reply(reply, 0.0)
    sent: list[bytes] = []
    t = 0.0
    while len(sent) < 6:
        t += 0.1
        sent += [e.data for e in a.tick(t) if isinstance(e, Send)]
    # A datagram that would change b's table if it were accepted.
    sent.append(a._seal(encode_primary(Gossip("a")) + encode_broadcast(Dead("c", 9, "a"))))
    return a, b, sent


def _table(core: GossipCore) -> dict[str, tuple[int, str, int]]:
    return {
        n: (core._members[n].incarnation, core._members[n].status, core.digest_version(n) or 0)
        for n in core.member_names()
    }


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 40), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def _mutate(data: bytes, muts: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, pos, val in muts:
        if kind == "flip" and out:
            out[pos % len(out)] ^= val
        elif kind == "cut":
            del out[pos % (len(out) + 1) :]
        elif kind == "append":
            out += bytes([val]) * pos
        else:
            out.insert(pos % (len(out) + 1), val)
    return bytes(out)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6), st.lists(mutation, min_size=1, max_size=4), st.binary(max_size=300))
def test_keyed_core_mutated_and_random_datagrams_change_nothing(which, muts, junk):
    _, b, sent = _keyed_pair()
    data = _mutate(sent[which], muts)
    assume(data != sent[which])
    before = _table(b)
    b.handle(data, ("10.0.0.1", 7000), 0.9)
    b.handle(junk, ("10.0.0.1", 7000), 0.9)
    b.handle(b"\xa9" + junk, ("10.0.0.1", 7000), 0.9)
    assert _table(b) == before
    dropped = sum(v for k, v in b.counters.items() if k.startswith("dropped_"))
    assert dropped == 3
    b.tick(5.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 6), st.lists(mutation, min_size=1, max_size=4))
def test_unkeyed_core_survives_mutated_datagrams(which, muts):
    # Without a key a mutated datagram may well be valid (and then it applies): it never raises.
    cfg = GossipConfig.lan()
    mb = PeerMeta("b", ("10.0.0.2", 7000), ("10.0.0.2", 7000), ("10.0.0.2", 8000))
    b = GossipCore(mb, cfg, 0.0, seed=2)
    body = encode_primary(Gossip("a")) + b"".join(
        encode_broadcast(x)
        for x in (
            Suspect("a", 3, "b"),
            Dead("b", 1, "a"),
            Left("a", 2),
            Alive("b", 4, b._local.digest),
        )
    )
    data = _mutate(Codec(None).seal(body), muts)
    b.handle(data, ("10.0.0.1", 7000), 1.0)
    b.handle(msgpack.packb([1, 2, 3]), ("10.0.0.1", 7000), 1.0)
    b.tick(3.0)
    assert b.incarnation <= MAX_INCARNATION


def test_replaying_every_genuine_datagram_changes_nothing():
    _, b, sent = _keyed_pair()
    for data in sent[:-1]:
        b.handle(data, ("10.0.0.1", 7000), 0.9)  # first delivery: accepted
    before = _table(b)
    for data in sent[:-1]:
        b.handle(data, ("10.0.0.1", 7000), 1.0)
    assert _table(b) == before
    assert b.counters["dropped_replay"] == len(sent) - 1


# -- importing the package does not start the driver ------------------------------------------


def test_import_gossip_loads_no_driver():
    code = (
        "import sys, gossip\n"
        "bad = [m for m in ('gossip.node', 'gossip.udp', 'gossip.transport') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert gossip.GossipCore and gossip.PeerMeta\n"
        "node = gossip.GossipNode\n"
        "assert 'gossip.node' in sys.modules and node.__name__ == 'GossipNode'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
