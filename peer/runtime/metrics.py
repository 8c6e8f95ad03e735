"""Prometheus text exposition of a node's counters and gauges."""

from __future__ import annotations

from typing import Any

ROUTES = frozenset(
    {"/v1/generate", "/v1/repair", "/v1/cluster", "/healthz", "/metrics", "/v1/jobs"}
)


# Keys of the gossip driver's stats that are levels, not counts.
_GOSSIP_GAUGES = frozenset({"members", "live", "health", "incarnation", "queued_broadcasts"})


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(node: Any) -> str:
    lines: list[str] = []

    def metric(
        name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float]]
    ) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    metric(
        "amcoedge_http_requests_total",
        "counter",
        "HTTP requests by route, status and error code (ok when none).",
        [
            ({"route": r, "status": s, "code": c}, n)
            for (r, s, c), n in sorted(node.http_stats.items())
        ],
    )
    bad = sum(n for (_r, s, _c), n in node.http_stats.items() if 400 <= s < 500)
    metric(
        "amcoedge_http_bad_requests_total", "counter", "HTTP requests answered 4xx.", [({}, bad)]
    )
    metric(
        "amcoedge_jobs",
        "gauge",
        "Jobs kept at this origin, by state.",
        [({"state": k}, v) for k, v in sorted(node.jobs.counts().items())],
    )
    metric(
        "amcoedge_executor_queued_seconds",
        "gauge",
        "Predicted seconds of work queued or running on this peer.",
        [({}, round(node.executor.queued_s(), 6))],
    )
    metric(
        "amcoedge_executor_shares_total",
        "counter",
        "Shares run by the executor.",
        [
            ({"result": "ok"}, node.executor.completed),
            ({"result": "error"}, node.executor.failed),
        ],
    )
    metric(
        "amcoedge_capacity",
        "gauge",
        "Images x steps per second at batch 8.",
        [({}, round(node.cost.capacity(), 3))],
    )
    metric(
        "amcoedge_cost_seconds",
        "gauge",
        "Affine cost per denoising step (a + c * images).",
        [
            ({"term": "a"}, node.cost.a),
            ({"term": "c"}, node.cost.c),
        ],
    )
    alive = len(node.gossip.view().alive()) if node.gossip is not None else 0
    metric(
        "amcoedge_peers_alive",
        "gauge",
        "Alive or suspect peers in this peer's view.",
        [({}, alive)],
    )
    ms = node.makespans
    metric(
        "amcoedge_makespan_seconds_sum",
        "counter",
        "Sum of make-spans of finished jobs.",
        [({}, round(sum(ms), 6))],
    )
    metric("amcoedge_makespan_seconds_count", "counter", "Finished jobs.", [({}, len(ms))])
    metric(
        "amcoedge_rpc_events_total",
        "counter",
        "RPC events at this origin.",
        [({"event": k}, v) for k, v in sorted(node.rpc_stats.items())],
    )
    server_stats = node.server.stats if node.server is not None else {}
    metric(
        "amcoedge_rpc_server_events_total",
        "counter",
        "RPC server events: connections, frames, malformed or oversized frames, auth failures.",
        [({"event": k}, v) for k, v in sorted(server_stats.items())],
    )
    gossip_stats = node.gossip.stats if node.gossip is not None else {}
    metric(
        "amcoedge_gossip_events_total",
        "counter",
        "Gossip driver events: datagrams and bytes in and out, dropped malformed or forged input.",
        [
            ({"event": k}, v)
            for k, v in sorted(gossip_stats.items())
            if k not in _GOSSIP_GAUGES and isinstance(v, int | float) and not isinstance(v, bool)
        ],
    )
    metric(
        "amcoedge_policy_fallbacks_total",
        "counter",
        "Decisions that fell back to greedy.",
        [({}, node.planner.recruiters.fallbacks)],
    )
    return "\n".join(lines) + "\n"
