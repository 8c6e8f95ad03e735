"""PeerMetrics: prometheus_client metrics in a registry of their own, histograms that count every
finished job (not the last 1,000), bounded label values, and a valid text exposition of the
node's live levels and drop counters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from peer.core.config import Limits, PeerConfig
from peer.core.links import LinkBook
from peer.runtime.backend import NullBackend
from peer.runtime.metrics import RPC_DROP_KEYS, PeerMetrics, route_of
from peer.runtime.node import Node


def result(makespan: float, policy: str = "greedy", mode: str = "batch") -> dict[str, Any]:
    return {
        "plan": {"policy": policy, "mode": mode},
        "replans": [{"peer": "b"}],
        "timing": {
            "makespan_s": makespan,
            "peers": [
                {"peer": "a", "queue_s": 0.01, "transfer_s": 0.0, "compute_s": makespan},
                {"peer": "b", "queue_s": 0.02, "transfer_s": 0.003, "compute_s": makespan / 2},
            ],
        },
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class FakeNode:
    """The attributes render() reads, with fixed values."""

    class jobs:
        @staticmethod
        def counts() -> dict[str, int]:
            return {"done": 3, "failed": 1}

    class executor:
        active = 2
        completed = 7
        failed = 1
        backlog_ratio = 1.5

        @staticmethod
        def queued_s() -> float:
            return 1.25

    class cost:
        a = 0.004
        c = 0.0008

        @staticmethod
        def capacity() -> float:
            return 900.0

    class planner:
        class recruiters:
            fallbacks = 4

    class server:
        stats: ClassVar[dict[str, int]] = {"calls": 5, "malformed_frames": 2, "idle_timeouts": 1}

    class gossip:
        stats: ClassVar[dict[str, int]] = {
            "datagrams_in": 9,
            "dropped_malformed": 3,
            "live": 2,
            "health": 0,
        }

        @staticmethod
        def view() -> Any:
            class V:
                @staticmethod
                def alive() -> list[str]:
                    return ["a", "b"]

            return V()

    rpc_stats: ClassVar[dict[str, int]] = {"run_share": 6}

    class backend:
        @staticmethod
        def engine_info() -> dict[str, Any]:
            return {
                "engine": "onnx",
                "provider": "CPUExecutionProvider",
                "requested": "auto",
                "ms_per_step": {"torch": {"1": 5.5}, "onnx": {"1": 1.25, "8": 8.0}},
            }

    links = LinkBook()
    links.observe("b", 262144, 0.0006 + 262144 / 2.5e6, now=0.5)
    links.observe("b", 200, 0.0006, now=0.9)

    @staticmethod
    def clock() -> float:
        return 1.0


def test_makespan_histogram_counts_every_job_past_a_thousand() -> None:
    pm = PeerMetrics()
    for i in range(1500):
        pm.observe_job(result(0.001 * (i % 10 + 1)))
    pm.observe_job(result(2.0, policy="onnx", mode="steps"))
    got = samples(pm.render(FakeNode()).decode())
    key = (("mode", "batch"), ("policy", "greedy"))
    assert got[("amcoedge_makespan_seconds_count", key)] == 1500
    assert got[("amcoedge_makespan_seconds_sum", key)] == pytest.approx(150 * 0.055)
    assert got[("amcoedge_makespan_seconds_bucket", (("le", "0.005"), *key))] == 750
    assert got[("amcoedge_share_queue_seconds_count", key)] == 3000
    assert got[("amcoedge_share_compute_seconds_count", key)] == 3000
    onnx = (("mode", "steps"), ("policy", "onnx"))
    assert got[("amcoedge_makespan_seconds_count", onnx)] == 1
    assert got[("amcoedge_share_transfer_seconds_sum", onnx)] == pytest.approx(0.003)
    assert got[("amcoedge_replans_total", ())] == 1501


def test_unknown_policy_mode_route_and_codes_are_bounded() -> None:
    pm = PeerMetrics()
    pm.observe_job(result(0.5, policy="x" * 50, mode="../etc"))
    for i in range(500):
        pm.count_http(f"/random/{i}", 404, f"code_{i}")
        pm.count_job_failure(f"weird code {i}")
    pm.count_http("/v1/jobs/abc", 200, "ok")
    pm.count_http("/v1/generate", 503, "overloaded")
    got = samples(pm.render(FakeNode()).decode())
    assert got[("amcoedge_makespan_seconds_count", (("mode", "other"), ("policy", "other")))] == 1
    http = {k[1]: v for k, v in got.items() if k[0] == "amcoedge_http_requests_total"}
    assert len(http) <= 66  # 64 distinct codes, then "other"; plus the two below
    assert {dict(lab)["route"] for lab in http} == {"other", "/v1/jobs", "/v1/generate"}
    assert http[(("code", "ok"), ("route", "/v1/jobs"), ("status", "200"))] == 1
    assert sum(v for lab, v in http.items() if dict(lab)["route"] == "other") == 500
    assert got[("amcoedge_http_bad_requests_total", ())] == 500
    assert got[("amcoedge_http_server_errors_total", ())] == 1
    assert got[("amcoedge_jobs_failed_total", (("code", "other"),))] == 500
    assert route_of("/v1/jobs/x/events") == "/v1/jobs" and route_of("/healthz") == "/healthz"


def test_live_levels_and_drops_by_cause() -> None:
    got = samples(PeerMetrics().render(FakeNode()).decode())
    assert got[("amcoedge_executor_queued_seconds", ())] == 1.25
    assert got[("amcoedge_executor_backlog_ratio", ())] == 1.5
    assert got[("amcoedge_executor_active_shares", ())] == 2
    assert got[("amcoedge_jobs", (("state", "failed"),))] == 1
    assert got[("amcoedge_peers_alive", ())] == 2
    assert got[("amcoedge_policy_fallbacks_total", ())] == 4
    assert got[("amcoedge_drops_total", (("cause", "malformed_frames"), ("surface", "rpc")))] == 2
    assert got[("amcoedge_drops_total", (("cause", "idle_timeouts"), ("surface", "rpc")))] == 1
    assert got[("amcoedge_drops_total", (("cause", "malformed"), ("surface", "gossip")))] == 3
    assert got[("amcoedge_gossip_state", (("level", "live"),))] == 2
    assert ("amcoedge_gossip_events_total", (("event", "live"),)) not in got
    assert got[("amcoedge_gossip_events_total", (("event", "datagrams_in"),))] == 9
    assert got[("amcoedge_rpc_server_events_total", (("event", "calls"),))] == 5
    info = (("engine", "onnx"), ("provider", "CPUExecutionProvider"), ("requested", "auto"))
    assert got[("amcoedge_engine_info", info)] == 1
    assert got[("amcoedge_engine_ms_per_step", (("batch", "1"), ("engine", "torch")))] == 5.5
    assert got[("amcoedge_engine_ms_per_step", (("batch", "8"), ("engine", "onnx")))] == 8.0
    rate = got[("amcoedge_link_bytes_per_second", (("peer", "b"),))]
    assert rate == pytest.approx(2.5e6, rel=1e-6)
    assert got[("amcoedge_link_rtt_seconds", (("peer", "b"),))] == pytest.approx(0.0006)
    assert got[("amcoedge_link_age_seconds", (("peer", "b"),))] == pytest.approx(0.1)


def test_prediction_ratio_is_a_histogram_per_policy_and_mode() -> None:
    pm = PeerMetrics()
    r = result(0.5)
    r["timing"]["actual_over_predicted"] = 1.2
    pm.observe_job(r)
    got = samples(pm.render(FakeNode()).decode())
    key = (("mode", "batch"), ("policy", "greedy"))
    assert got[("amcoedge_makespan_actual_over_predicted_count", key)] == 1
    assert got[("amcoedge_makespan_actual_over_predicted_sum", key)] == pytest.approx(1.2)


def test_rpc_drop_keys_match_the_server() -> None:
    from peer.rpc.server import DROP_KEYS

    assert tuple(RPC_DROP_KEYS) == tuple(DROP_KEYS)


def test_registries_are_per_instance_and_not_global() -> None:
    before = {m.name for m in REGISTRY.collect()}
    a, b = PeerMetrics(), PeerMetrics()  # would raise "Duplicated timeseries" if shared
    a.count_http("/healthz", 200, "ok")
    got_b = samples(b.render(FakeNode()).decode())
    assert not [k for k in got_b if k[0] == "amcoedge_http_requests_total"]
    assert {m.name for m in REGISTRY.collect()} == before


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    cfg = PeerConfig(
        name="solo",
        listen=("127.0.0.1", 0),
        http=("127.0.0.1", 0),
        gossip="local",
        calibrate=False,
        limits=Limits(max_body_bytes=64 * 1024),
    )
    n = Node(cfg, backend=NullBackend())
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def test_render_reads_a_real_node(node: Node) -> None:
    pm = PeerMetrics()
    pm.count_http("/healthz", 200, "ok")
    got = samples(pm.render(node).decode())
    assert (
        got[
            (
                "amcoedge_http_requests_total",
                (("code", "ok"), ("route", "/healthz"), ("status", "200")),
            )
        ]
        == 1
    )
    assert got[("amcoedge_peers_alive", ())] == 1
    assert ("amcoedge_drops_total", (("cause", "malformed_frames"), ("surface", "rpc"))) in got
