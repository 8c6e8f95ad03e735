"""Link estimates: rtt and rate from the lower envelope of noisy samples."""

from __future__ import annotations

import numpy as np
import pytest

from peer.core.links import (
    PRIME_BYTES,
    PROBE_BYTES,
    PROBE_DUTY,
    PROBE_EVERY_S,
    PROBE_MAX_BYTES,
    PROBE_MAX_S,
    PROBE_MIN_BYTES,
    LinkBook,
    LinkEstimator,
    Sample,
    fit,
)

RTT, RATE = 0.0006, 2.5e6  # a 20 Mbit/s link with 0.6 ms round trips


def noisy(rng: np.random.Generator, nbytes: int) -> float:
    """What a call of ``nbytes`` takes: the link's time plus delays that only ever add."""
    return RTT + nbytes / RATE + float(rng.exponential(0.0004)) * (rng.random() < 0.7)


def test_small_and_large_samples_recover_rtt_and_rate() -> None:
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.choice([300, 2_000, 40_000, 140_000], size=40)]
    rtt, rate = fit(Sample(float(i), n, noisy(rng, n)) for i, n in enumerate(sizes))
    assert rtt == pytest.approx(RTT, rel=0.3)
    assert rate == pytest.approx(RATE, rel=0.15)


def test_only_large_samples_still_find_both() -> None:
    rng = np.random.default_rng(1)
    sizes = [int(s) for s in rng.integers(20_000, 200_000, size=30)]
    rtt, rate = fit(Sample(float(i), n, noisy(rng, n)) for i, n in enumerate(sizes))
    assert rate == pytest.approx(RATE, rel=0.15)
    assert rtt < 0.005


def test_a_fast_link_seen_only_through_small_calls_has_no_rate_yet() -> None:
    # 1 GB/s: 2 KB moves in 2 us, hidden in a 200 us round trip
    rtt, rate = fit(Sample(float(i), 2_000, 0.0002 + 2_000 / 1e9) for i in range(10))
    assert rate is None and rtt == pytest.approx(0.0002, rel=0.01)


def test_probe_schedule_age_and_expiry() -> None:
    est = LinkEstimator()
    assert est.needs_probe(0.0) and est.estimate(0.0) is None
    est.observe(300, RTT, now=1.0)
    est.observe(131072, RTT + 131072 / RATE, now=1.0)
    assert not est.needs_probe(1.0 + PROBE_EVERY_S / 2)
    assert est.needs_probe(1.0 + PROBE_EVERY_S)
    got = est.estimate(3.0)
    assert got is not None and got.samples == 2 and got.age_s == pytest.approx(2.0)
    assert est.estimate(1.0 + 121.0) is None  # forgotten after MAX_AGE_S
    with pytest.raises(ValueError):
        est.observe(10, -1.0, now=5.0)


def test_book_keeps_one_estimator_per_peer() -> None:
    book = LinkBook()
    book.observe("b", 100, 0.001, 0.0)
    book.observe("c", 100, 0.002, 0.0)
    assert sorted(book.estimates(0.5)) == ["b", "c"]
    assert book.needs_probe("d", 0.0)
    book.forget("b")
    assert book.estimate("b", 0.5) is None


async def test_two_peers_measure_their_link_and_show_it() -> None:
    import asyncio

    from peer.core.config import ephemeral_config
    from peer.runtime.backend import NullBackend
    from peer.runtime.node import Node

    cfg = ephemeral_config
    a = Node(cfg("a"), backend=NullBackend())
    await a.start()
    b = Node(cfg("b", (("127.0.0.1", a.rpc_port),)), backend=NullBackend())
    await b.start()
    try:
        for _ in range(200):
            if len(a.gossip.view().alive()) == 2:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.02)
        await a.probe_links()  # the bulk probe goes to b: no rate sample yet
        await a.probe_links()  # then a ping
        est = a.links.estimate("b", a.clock())
        assert est is not None and est.samples == 2 and est.rtt_s > 0
        assert a.links.last_rate_sample("b") > float("-inf")
        [mine] = [p for p in a.cluster_json()["peers"] if p["self"]]
        assert mine["links"]["b"]["samples"] == 2
        flat = [r for r in a.cluster_json()["links"] if r["from"] == "a"]
        assert [(r["to"], r["samples"]) for r in flat] == [("b", 2)]  # for the dashboard
        [other] = [p for p in a.cluster_json()["peers"] if p["name"] == "b"]
        assert other["rtt_s"] == pytest.approx(est.rtt_s, abs=1e-6)
    finally:
        await b.stop()
        await a.stop()


def test_on_a_busy_machine_the_few_clean_calls_are_the_link() -> None:
    # an unlimited link (400 MB/s) seen through a CPU shared with other work: four calls in
    # five wait 2-10x their transfer time, one in five gets through clean; the probes have grown
    # to their largest (PROBE_MAX_BYTES), where the transfer shows past the round trip
    rng = np.random.default_rng(3)
    fast, rtt = 400e6, 0.0002
    xs = [Sample(float(i), 300, rtt + float(rng.exponential(0.0002))) for i in range(20)]
    for i in range(20):
        n = PROBE_MAX_BYTES
        wait = 0.0 if i % 5 == 0 else float(rng.uniform(2, 10)) * n / fast
        xs.append(Sample(20.0 + i, n, rtt + n / fast + wait))
    _, rate = fit(xs)
    assert rate is not None and rate == pytest.approx(fast, rel=0.3)


def test_small_rate_samples_do_not_drown_a_probe() -> None:
    # share replies of 5-8 KB whose fixed costs the round trip does not hold read slow; the
    # probes (256 KiB) show the link
    rate = 2.5e6
    xs = [Sample(float(i), 300, RTT) for i in range(5)]
    xs += [Sample(10.0 + i, 6_000, RTT + 0.004 + 6_000 / rate) for i in range(30)]
    xs += [Sample(50.0 + i, 256 * 1024, RTT + 256 * 1024 / rate) for i in range(3)]
    _, got = fit(xs)
    assert got == pytest.approx(rate, rel=0.05)


def test_probes_grow_on_a_fast_link_and_stay_small_on_a_slow_one() -> None:
    slow, fast = LinkEstimator(), LinkEstimator()
    assert fast.probe_bytes(0.0) == PROBE_BYTES  # nothing known yet
    for i in range(3):
        slow.observe(300, 0.0005, now=float(i))
        fast.observe(300, 0.0005, now=float(i))
    slow.observe(PROBE_BYTES, 0.0005 + PROBE_BYTES / 2.5e6, now=3.0)  # 20 Mbit/s
    assert slow.probe_bytes(3.0) == PROBE_BYTES
    size = PROBE_BYTES
    for i in range(4):  # each probe sees 40 MB/s, a bit more each time as it grows
        fast.observe(size, 0.0005 + size / 40e6, now=4.0 + i)
        size = fast.probe_bytes(4.0 + i)
    assert size == PROBE_MAX_BYTES


def test_share_sized_transfers_do_not_postpone_the_probe() -> None:
    # a link busy with 6 KB share replies still gets its probe: they cannot show its rate
    est = LinkEstimator()
    est.observe(PROBE_BYTES, RTT + PROBE_BYTES / RATE, now=0.0)
    for i in range(1, 40):
        est.observe(6_000, RTT + 0.004 + 6_000 / RATE, now=float(i))
    assert est.needs_probe(PROBE_EVERY_S) and est.last_rate_sample == 0.0


def test_a_probe_that_hid_in_the_round_trip_is_retried_at_the_largest_size() -> None:
    # pings take 3 ms on a busy box; a 256 KiB probe over 1 GB/s adds 0.26 ms: no rate shows
    est = LinkEstimator()
    for i in range(3):
        est.observe(300, 0.003, now=float(i))
    est.observe(PROBE_BYTES, 0.003 + PROBE_BYTES / 1e9, now=3.0)
    assert est.estimate(3.0) is not None and est.estimate(3.0).bytes_per_s is None  # type: ignore[union-attr]
    assert not est.needs_probe(4.0) and est.needs_probe(3.0 + 5.0)
    assert est.probe_bytes(8.0) == PROBE_MAX_BYTES
    est.observe(PROBE_MAX_BYTES, 0.003 + 0.012, now=8.0)  # ... where 12 ms of transfer show
    got = est.estimate(8.0)
    assert got is not None and got.bytes_per_s == pytest.approx(PROBE_MAX_BYTES / 0.012, rel=0.1)
    assert not est.needs_probe(8.0 + 5.0)  # a rate is known: the next probe in PROBE_EVERY_S


def test_a_slow_link_gets_short_probes_spaced_to_a_small_duty() -> None:
    # 1 Mbit/s: a 256 KiB probe would hold the link for 2.1 s (pings behind it time out)
    slow_rate = 125_000.0
    est = LinkEstimator()
    for i in range(3):
        est.observe(300, 0.001, now=float(i))
    est.observe(PROBE_BYTES, 0.001 + PROBE_BYTES / slow_rate, now=3.0)
    got = est.estimate(3.0)
    assert got is not None and got.bytes_per_s == pytest.approx(slow_rate, rel=0.05)
    size = est.probe_bytes(3.0)
    assert PROBE_MIN_BYTES <= size <= PROBE_MAX_S * slow_rate * 1.05
    every = est.probe_every_s(3.0)
    assert (PRIME_BYTES + size) / slow_rate / every == pytest.approx(PROBE_DUTY, rel=0.01)
    assert every > PROBE_EVERY_S
    assert not est.needs_probe(3.0 + PROBE_EVERY_S) and est.needs_probe(3.0 + every)


def test_a_share_that_shows_a_slow_links_rate_postpones_the_probe() -> None:
    # 16 KB over 1 Mbit/s takes 0.13 s: as good a rate sample as a probe (on 20 Mbit/s it
    # would take 6 ms and show nothing; see the test above about share-sized transfers)
    slow_rate = 125_000.0
    est = LinkEstimator()
    est.observe(300, 0.001, now=0.0)
    est.observe(PROBE_BYTES, 0.001 + PROBE_BYTES / slow_rate, now=1.0)
    est.observe(16_000, 0.001 + 16_000 / slow_rate, now=50.0)
    assert est.last_rate_sample == 50.0
    assert not est.needs_probe(50.0 + PROBE_EVERY_S / 2)
