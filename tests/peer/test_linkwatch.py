"""The scenario runner's watch of what peers believe: links, convergence, prediction, loss."""

from __future__ import annotations

from typing import Any

import pytest

from peer.harness.linkwatch import (
    MBIT,
    Observation,
    convergence,
    expected_mbit,
    links_summary,
    links_verdict,
    loss_summary,
    parse_cluster,
    prediction_summary,
    rate_timeline,
)
from peer.harness.scenario import Link

NAMES = ["p0", "p1", "p2"]
START = 100.0  # perf_counter of the workload's start


def _obs(t: float, observer: int, rates: dict[str, float | None], alive: int = 3) -> Observation:
    status = {n: ("alive" if k < alive else "dead") for k, n in enumerate(NAMES)}
    return Observation(START + t, observer, status, rates, {k: 1 for k in rates})


def test_parse_cluster_reads_own_links_and_every_status() -> None:
    body = {
        "self": "p0",
        "peers": [
            {
                "name": "p0",
                "status": "alive",
                "links": {"p1": {"bytes_per_s": 2.5e6, "rtt_s": 0.001, "samples": 4}},
            },
            {"name": "p1", "status": "suspect", "links": {"p0": {"bytes_per_s": 9.0}}},
            {"name": "p2", "status": "alive", "links": {"p0": {"bytes_per_s": None}}},
        ],
    }
    obs = parse_cluster(0, body, 5.0)
    assert obs is not None
    assert obs.status == {"p0": "alive", "p1": "suspect", "p2": "alive"}
    assert obs.rates == {"p1": 2.5e6} and obs.samples == {"p1": 4}  # only its own measurements
    assert parse_cluster(0, {"error": {}}, 5.0) is None
    assert parse_cluster(0, None, 5.0) is None


def test_expected_rate_is_that_of_the_probe_reply_target_up_observer_down() -> None:
    links = [Link(), Link(20, 20), Link(2, 10)]
    assert expected_mbit(links, 0, 1) == 20
    assert expected_mbit(links, 1, 2) == 2  # p2's uplink
    assert expected_mbit(links, 0, 2) == 2
    assert expected_mbit(links, 2, 0) == 10  # into p2 at its downlink rate
    assert expected_mbit([Link(), Link()], 0, 1) is None


def test_rate_timeline_follows_applied_link_events_only() -> None:
    applied: list[dict[str, Any]] = [
        {"action": "link", "peer": "p1", "up_mbit": 2, "down_mbit": None, "applied_at_s": 10.0}
        | {"result": "rate set: up 2, down 20 Mbit/s"},
        {"action": "link", "peer": "p2", "up_mbit": 5, "down_mbit": 5, "applied_at_s": 12.0}
        | {"result": "skipped: fallback to loopback"},
        {"action": "heal", "applied_at_s": 13.0, "result": "healed"},
    ]
    tl = rate_timeline([Link(), Link(20, 20), Link()], applied)
    assert [t for t, _ in tl] == [-float("inf"), 10.0]
    assert tl[1][1][1] == Link(2, 20) and tl[0][1][1] == Link(20, 20)


def test_links_summary_times_the_first_estimate_within_30pct_from_the_first_sample() -> None:
    links = [Link(), Link(20, 20), Link()]
    obs = [
        _obs(-3.0, 0, {"p1": None, "p2": None}),  # first sample (a ping): no rate yet
        _obs(-2.0, 0, {"p1": 100e6, "p2": 900e6}),  # a burst: far too fast
        _obs(0.0, 0, {"p1": 25.0 * MBIT, "p2": 950e6}),  # 25 Mbit: within
        _obs(5.0, 0, {"p1": 19.0 * MBIT, "p2": 990e6}),
        _obs(11.0, 0, {"p1": 18.0 * MBIT, "p2": 990e6}),  # after the change to 2 Mbit up
        _obs(14.0, 0, {"p1": 2.2 * MBIT, "p2": 990e6}),
    ]
    applied = [
        {"action": "link", "peer": "p1", "up_mbit": 2, "down_mbit": None, "applied_at_s": 10.0}
        | {"result": "rate set: up 2, down 20 Mbit/s"}
    ]
    rows = links_summary(obs, START, links, applied, NAMES)
    p1 = [r for r in rows if r["target"] == "p1"]
    assert [r["from_s"] for r in p1] == [None, 10.0]
    first, second = p1
    assert first["configured_mbit"] == 20 and first["estimated_mbit"] == pytest.approx(19.0)
    assert first["first_within_30pct_s"] == pytest.approx(3.0)  # from -3.0 to 0.0
    assert second["configured_mbit"] == 2 and second["first_within_30pct_s"] == pytest.approx(4.0)
    verdict = links_verdict(rows)
    assert verdict["limited_links"] == 1 and verdict["limited_within_30pct_at_end"] == 1
    assert verdict["first_within_30pct_s_max"] == pytest.approx(3.0)
    assert verdict["unlimited_links"] == 1
    assert verdict["unlimited_over_fastest_limited"] == pytest.approx(990e6 / MBIT / 20, rel=1e-3)


def test_a_link_never_estimated_right_is_counted_and_has_no_time() -> None:
    links = [Link(), Link(20, 20)]
    obs = [
        Observation(START + t, 0, {"p0": "alive", "p1": "alive"}, {"p1": 100e6}, {"p1": 1})
        for t in (1.0, 2.0)
    ]
    rows = links_summary(obs, START, links, [], ["p0", "p1"])
    assert rows[0]["first_within_30pct_s"] is None and rows[0]["ratio"] == pytest.approx(40.0)
    verdict = links_verdict(rows)
    assert verdict["never_within_30pct"] == 1 and verdict["first_within_30pct_s_max"] is None


def test_convergence_waits_for_every_peer_to_hold_every_other_alive() -> None:
    applied = [{"action": "heal", "applied_at_s": 10.0, "result": "healed"}]
    obs = [
        _obs(9.0, 0, {}, alive=3),  # before the heal: ignored
        _obs(11.0, 0, {}, alive=3),
        _obs(11.5, 1, {}, alive=2),
        _obs(12.0, 2, {}, alive=3),
        _obs(13.0, 1, {}, alive=3),  # the last one to see all: 3 s after the heal
        _obs(14.0, 0, {}, alive=3),
    ]
    [c] = convergence(obs, START, applied, 3)
    assert c == {"action": "heal", "at_s": 10.0, "all_alive_after_s": 3.0}
    [never] = convergence(obs[:3], START, applied, 3)
    assert never["all_alive_after_s"] is None


def test_prediction_summary_is_the_median_abs_error_per_mode() -> None:
    def rec(mode: str, actual: float, predicted: float, ok: bool = True) -> dict[str, Any]:
        return {"ok": ok, "mode": mode, "makespan_s": actual, "predicted_s": predicted}

    runs = {
        "onnx": {"records": [rec("batch", 1.1, 1.0), rec("batch", 0.5, 1.0), rec("tile", 3, 2)]},
        "greedy": {"records": [rec("batch", 1.0, 1.0), rec("tile", 9, 1, ok=False)]},
        "broken": {"error": "cluster failed"},
    }
    s = prediction_summary(runs)
    assert s["per_mode"]["batch"] == {"median_abs_error": pytest.approx(0.1), "requests": 3}
    assert s["per_mode"]["tile"] == {"median_abs_error": pytest.approx(0.5), "requests": 1}
    assert s["per_policy"]["greedy"] == {"batch": {"median_abs_error": 0.0, "requests": 1}}
    assert s["per_policy"]["broken"] == {}


def test_loss_summary_takes_requests_in_flight_through_the_peer_that_went_down() -> None:
    applied = [{"action": "link_down", "peer": "p2", "applied_at_s": 20.0}]
    base = {"ok": True, "origin": "p0", "replans": 1}
    records = [
        base | {"index": 0, "sent_s": 18.0, "wall_s": 6.0, "predicted_s": 3.0, "peers": ["p2"]},
        base | {"index": 1, "sent_s": 19.0, "wall_s": 9.0, "predicted_s": 3.0, "peers": ["p2"]},
        base | {"index": 2, "sent_s": 10.0, "wall_s": 3.0, "predicted_s": 3.0, "peers": ["p2"]},
        base | {"index": 3, "sent_s": 18.0, "wall_s": 6.0, "predicted_s": 3.0, "peers": ["p1"]},
        base | {"index": 4, "sent_s": 19.0, "predicted_s": 3.0, "peers": ["p2"], "ok": False},
    ]
    rows = loss_summary(records, applied)
    assert [(r["request"], r["within_5s"]) for r in rows] == [(0, True), (1, False)]
    assert rows[1]["over_prediction_s"] == pytest.approx(6.0)
