"""Property tests of the merge rules and the dissemination queue."""

from __future__ import annotations

from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import GossipConfig, GossipCore
from gossip.dissemination import BroadcastQueue
from gossip.membership import digest_newer, merge_digest, merge_state, state_key, supersedes
from gossip.suspicion import LocalHealth, suspicion_timeout
from gossip.view import STATUSES, PeerMeta
from gossip.wire import (
    Alive,
    Codec,
    Dead,
    Digest,
    Gossip,
    Left,
    Load,
    Suspect,
    encode_broadcast,
    encode_primary,
)

states = st.tuples(st.integers(0, 20), st.sampled_from(STATUSES))


def _meta(q: float, shares: int) -> PeerMeta:
    a = ("10.0.0.1", 7000)
    return PeerMeta("a", a, a, ("10.0.0.1", 8000), "1", "m", 10.0, q, shares)


digests = st.builds(
    lambda v, q, s, bw: Digest("a", v, _meta(q, s), bw),
    st.integers(0, 5),
    st.sampled_from([0.0, 1.5, 3.0]),
    st.integers(0, 2),
    st.sampled_from([(), (("b", 10.0),), (("b", 20.0), ("c", 5.0))]),
)


@given(states, states)
def test_state_merge_commutative(a, b):
    assert merge_state(a, b) == merge_state(b, a)


@given(states, states, states)
def test_state_merge_associative(a, b, c):
    assert merge_state(merge_state(a, b), c) == merge_state(a, merge_state(b, c))


@given(states)
def test_state_merge_idempotent(a):
    assert merge_state(a, a) == a


@given(states, states)
def test_state_merge_monotone_in_incarnation(a, b):
    m = merge_state(a, b)
    assert m[0] == max(a[0], b[0])
    assert state_key(m) >= state_key(a) and state_key(m) >= state_key(b)
    if a[0] > b[0]:
        assert m == a  # a higher incarnation always wins, whatever the status


@given(st.integers(0, 20), st.sampled_from(STATUSES))
def test_refutation_beats_any_older_state(inc, status):
    assert supersedes((inc + 1, "alive"), (inc, status))
    assert not supersedes((inc, "alive"), (inc, "suspect"))


@given(st.lists(states, min_size=1, max_size=8), st.randoms())
def test_state_merge_order_independent(items, rnd):
    shuffled = items[:]
    rnd.shuffle(shuffled)
    assert reduce(merge_state, items) == reduce(merge_state, shuffled)


@given(digests, digests)
def test_digest_merge_commutative(a, b):
    assert merge_digest(a, b) == merge_digest(b, a)


@given(digests)
def test_digest_merge_idempotent(a):
    assert merge_digest(a, a) == a
    assert not digest_newer(a, a)


@given(digests, digests, digests)
def test_digest_merge_associative(a, b, c):
    assert merge_digest(merge_digest(a, b), c) == merge_digest(a, merge_digest(b, c))


@given(digests, digests)
def test_digest_newer_version_wins(a, b):
    if a.version > b.version:
        assert merge_digest(a, b) == a


@given(st.integers(0, 10), st.integers(1, 5), st.floats(0.5, 5), st.floats(1, 4))
def test_suspicion_timeout_shrinks_with_confirmations(c, k, lo, mult):
    hi = lo * mult
    t = suspicion_timeout(c, k, lo, hi)
    assert lo - 1e-9 <= t <= hi + 1e-9
    assert suspicion_timeout(c + 1, k, lo, hi) <= t + 1e-12
    assert suspicion_timeout(0, k, lo, hi) == hi
    if c >= k:
        assert abs(t - lo) < 1e-9


@given(st.lists(st.integers(-3, 3), max_size=40))
def test_local_health_is_bounded(deltas):
    h = LocalHealth(8)
    for d in deltas:
        h.apply(d)
        assert 0 <= h.score <= 7
        assert h.scale(0.5) == 0.5 * (h.score + 1)


@settings(max_examples=60)
@given(
    st.lists(st.tuples(st.integers(0, 15), st.binary(min_size=1, max_size=300)), max_size=60),
    st.integers(50, 1400),
    st.integers(1, 6),
)
def test_queue_respects_budget_and_limit(puts, budget, limit):
    q = BroadcastQueue()
    latest: dict[int, bytes] = {}
    for i, (key, raw) in enumerate(puts):
        data = bytes([key, i]) + raw  # distinct bytes per put
        q.put(key, data)
        latest[key] = data
    sent: dict[bytes, int] = {}
    for _ in range(limit * len(latest) + 5):
        out = q.take(budget, limit)
        assert sum(len(x) for x in out) <= budget
        for x in out:
            sent[x] = sent.get(x, 0) + 1
    # Only the newest broadcast per key is ever sent, and none more than `limit` times.
    assert all(v <= limit for v in sent.values())
    assert set(sent) <= set(latest.values())
    fits = [d for d in latest.values() if len(d) <= budget]
    assert all(sent.get(d, 0) == limit for d in fits)
    assert len(q) == len(latest) - len(fits)


def test_queue_prefers_fewest_transmits_then_freshest():
    q = BroadcastQueue()
    q.put("old", b"o" * 10)
    q.take(100, 5)
    q.put("new", b"n" * 10)
    q.put("newer", b"w" * 10)
    assert q.take(25, 5) == [b"w" * 10, b"n" * 10]
    q.put("old", b"O" * 10)  # replacing resets the count
    assert q.transmits("old") == 0


# -- the same rules inside the core: any delivery order gives the same table -------------------

NAMES = ("b", "c", "d")


def _peer_digest(name: str, version: int = 0) -> Digest:
    a = (f"10.0.0.{ord(name)}", 7000)
    return Digest(name, version, PeerMeta(name, a, a, a, "1", "m", 1.0, 0.0, 0), ())


messages = st.one_of(
    st.builds(lambda n, i: Alive(n, i, _peer_digest(n)), st.sampled_from(NAMES), st.integers(0, 4)),
    st.builds(Suspect, st.sampled_from(NAMES), st.integers(0, 4), st.sampled_from(NAMES)),
    st.builds(Dead, st.sampled_from(NAMES), st.integers(0, 4), st.sampled_from(NAMES)),
    st.builds(Left, st.sampled_from(NAMES), st.integers(0, 4)),
    st.builds(
        lambda n, v, q: Load(n, v, 1.0, q, 0, ()),
        st.sampled_from(NAMES),
        st.integers(1, 4),
        st.sampled_from([0.0, 1.0]),
    ),
)


def _apply_all(msgs: list) -> dict[str, tuple[int, str, int]]:
    me = PeerMeta("a", ("10.0.0.1", 7000), ("10.0.0.1", 7000), ("10.0.0.1", 8000))
    core = GossipCore(me, GossipConfig.lan(), 0.0, seed=1)
    codec = Codec(None)
    head = encode_primary(Gossip("x"))
    for n in NAMES:  # everyone is introduced first (unknown peers' suspicions are ignored)
        core.handle(
            codec.seal(head + encode_broadcast(Alive(n, 0, _peer_digest(n)))), ("h", 1), 0.0
        )
    for t, m in enumerate(msgs):
        # A Left counts only from the leaving peer itself (here: from its gossip address).
        src = _peer_digest(m.name).meta.gossip_addr if isinstance(m, Left) else ("h", 1)
        core.handle(codec.seal(head + encode_broadcast(m)), src, 0.001 * (t + 1))
    return {
        n: (core._members[n].incarnation, core._members[n].status, core.digest_version(n) or 0)
        for n in NAMES
    }


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, max_size=12), st.randoms())
def test_core_table_is_order_independent(msgs, rnd):
    shuffled = msgs[:]
    rnd.shuffle(shuffled)
    first = _apply_all(msgs)
    assert first == _apply_all(shuffled)
    for n in NAMES:
        states = [(0, "alive")] + [
            (m.incarnation, STATUSES[_rank(m)]) for m in msgs if _is_state(m, n)
        ]
        assert (first[n][0], first[n][1]) == reduce(merge_state, states)


def _is_state(m, name: str) -> bool:
    return not isinstance(m, Load) and m.name == name


def _rank(m) -> int:
    return {Alive: 0, Suspect: 1, Dead: 2, Left: 3}[type(m)]
