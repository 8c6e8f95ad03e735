"""The scenario runner's client sends a request again, with the same idempotency key, to
another live peer when its origin is gone; a request with nowhere else to go is counted lost."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from peer.core.config import ephemeral_config
from peer.harness.cluster import free_ports
from peer.harness.scenario import parse_scenario, schedule
from peer.harness.scenario_run import _send, _summarise
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(ephemeral_config("live"), backend=NullBackend())
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def scenario() -> Any:
    return parse_scenario(
        {
            "name": "fallback",
            "seed": 3,
            "policies": ["local"],
            "peers": {"count": 2},
            "workload": {"duration_s": 5, "rate_per_s": 1.0},
        }
    )


async def test_a_dead_origin_is_retried_on_a_live_peer(node: Node) -> None:
    sc = scenario()
    req = schedule(sc)[0]
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there: refused
    live = f"http://127.0.0.1:{node.http_port}"
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    await asyncio.to_thread(_send, sc, req, "local", dead, 0, 0.0, records, lock, None, (live,))
    await asyncio.to_thread(_send, sc, req, "local", dead, 0, 0.0, records, lock, None, ())
    served, lost = records
    assert served["ok"] and served["retried"] == [{"from": dead, "to": live}]
    assert served["mode"] == "local" and "makespan_s" in served
    assert not lost["ok"] and lost["error"] == "connection" and "retried" not in lost
    summary = _summarise(sc, records, [], "none")
    assert (summary["ok"], summary["retried"], summary["lost"]) == (1, 1, 1)


def test_a_client_that_gave_up_waiting_is_a_deadline_miss_not_a_lost_request() -> None:
    import urllib.error

    from peer.harness.scenario_run import _timed_out

    assert _timed_out(TimeoutError("timed out"))
    assert _timed_out(urllib.error.URLError(TimeoutError("timed out")))
    assert not _timed_out(ConnectionRefusedError())
    assert not _timed_out(urllib.error.URLError(ConnectionResetError()))


def test_events_run_beside_the_workload_and_stop_when_the_run_ends() -> None:
    import time as _time

    from peer.harness.scenario import Event
    from peer.harness.scenario_run import _apply_all, _Live

    gate = threading.Event()

    class SlowStop:  # a graceful stop that waits for the peer to drain
        def kill(self, i: int, graceful: bool = False) -> None:
            gate.wait(10.0)

    up, applied, errors, halt = _Live(3), [], [], threading.Event()
    events = [Event(at_s=0.0, action="stop", peer=1), Event(at_s=60.0, action="stop", peer=2)]
    t = threading.Thread(
        target=_apply_all,
        args=(SlowStop(), events, up, _time.perf_counter(), None, applied, errors, halt),
    )
    t.start()
    for _ in range(200):  # the peer leaves the clients' list at once, while its stop drains
        if up.sorted() == [0, 2]:
            break
        _time.sleep(0.01)
    assert up.sorted() == [0, 2] and not applied
    gate.set()
    halt.set()  # the run ends before the second event's time: it is not applied
    t.join(5.0)
    assert not t.is_alive() and [a["action"] for a in applied] == ["stop"] and not errors
    assert up.sorted() == [0, 2]


def test_a_result_with_bad_timings_does_not_stop_the_report() -> None:
    from peer.harness.scenario_run import _timeline_panels

    zero = {"queue_s": 0.0, "transfer_s": 0.0, "compute_s": 0.4}
    good = {"peer": "p0", "units": 1, "start_s": 0.0, "end_s": 0.5, **zero}
    bad = {"peer": "p1", "units": 1, "start_s": 30.7, "end_s": 0.0, **zero}

    def rec(timing: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "index": 0,
            "origin": "p0",
            "images": 1,
            "mode": "batch",
            "makespan_s": 0.5,
            "predicted_s": 0.4,
            "timing": [timing],
        }

    res: dict[str, Any] = {
        "policies": {"onnx": {"records": [rec(good)]}, "greedy": {"records": [rec(bad)]}}
    }
    panels = _timeline_panels(res)
    assert len(panels) == 1
    assert res["timeline_skipped"] and res["timeline_skipped"][0].startswith("greedy")
