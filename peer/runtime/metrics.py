"""A peer's Prometheus metrics, on ``prometheus_client``, one registry per node.

``PeerMetrics`` owns what the node observes as it happens (HTTP requests by route, status and
code; finished jobs and their make-span, queue, transfer and compute histograms; failed jobs by
code) in its own ``CollectorRegistry``, so that several nodes in one process never clash and
nothing lands in the library's global default registry. What is a level or someone else's
counter (the executor's backlog, jobs by state, the cost model, the RPC server's and the gossip
driver's ``stats`` dicts, drops by cause) is read from the node when ``/metrics`` is scraped:
``render(node)`` exposes both in the text format.

Wiring in a node::

    self.metrics = PeerMetrics()
    self.metrics.count_http(request_path, status, code)  # once per HTTP answer
    self.metrics.observe_job(result)                     # once per job that finished
    self.metrics.count_job_failure(code)                 # once per job that failed
    body: bytes = self.metrics.render(self)              # GET /metrics, CONTENT_TYPE

Histograms are cumulative for the process's life: every finished job is observed once, so the
``_sum``/``_count`` are true counters however many jobs run. Label values are bounded (routes,
policies and modes outside the known sets become ``other``) so that hostile input cannot grow
the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from peer.core.config import MODES, POLICIES

CONTENT_TYPE = CONTENT_TYPE_LATEST

ROUTES = frozenset(
    {"/v1/generate", "/v1/repair", "/v1/cluster", "/healthz", "/metrics", "/v1/jobs"}
)

# Seconds: from a 16x16 single-step job on a GPU to a large repair on a loaded CPU cluster.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# Keys of the gossip driver's stats that are levels, not counts.
GOSSIP_GAUGES = frozenset({"members", "live", "health", "incarnation", "queued_broadcasts"})

# The RPC server's stats that count connections or frames refused or closed, by cause
# (the same list as ``peer.rpc.server.DROP_KEYS``, repeated so that rendering needs no import
# of the RPC package; a test keeps them equal).
RPC_DROP_KEYS = (
    "connections_rejected",
    "source_cap_rejections",
    "auth_timeouts",
    "auth_failures",
    "idle_timeouts",
    "frame_timeouts",
    "oversized_frames",
    "malformed_frames",
    "mac_failures",
)

# Error codes become label values; keep them short identifiers and their number bounded.
_MAX_CODES = 64


def route_of(path: str) -> str:
    """The route label of a request path: a known route, ``/v1/jobs`` or ``other``."""
    if path in ROUTES:
        return path
    return "/v1/jobs" if path.startswith("/v1/jobs/") else "other"


def _bounded(value: object, known: Iterable[str]) -> str:
    return value if isinstance(value, str) and value in known else "other"


RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0, 10.0)


class PeerMetrics:
    """The metrics one peer observes; ``render(node)`` adds the node's live levels and stats."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._codes: set[str] = {"ok", "internal"}
        self.http_requests = Counter(
            "amcoedge_http_requests",
            "HTTP requests by route, status and error code (ok when none).",
            ["route", "status", "code"],
            registry=r,
        )
        self.http_bad = Counter(
            "amcoedge_http_bad_requests", "HTTP requests answered 4xx.", registry=r
        )
        self.http_errors = Counter(
            "amcoedge_http_server_errors", "HTTP requests answered 5xx.", registry=r
        )
        labels = ["policy", "mode"]
        self.makespan = Histogram(
            "amcoedge_makespan_seconds",
            "Make-span of finished jobs at this origin.",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.prediction = Histogram(
            "amcoedge_makespan_actual_over_predicted",
            "Measured make-span over the plan's predicted make-span, per finished job.",
            labels,
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "amcoedge_share_queue_seconds",
            "Seconds each share of a finished job waited in its peer's queue.",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.transfer = Histogram(
            "amcoedge_share_transfer_seconds",
            "Seconds each share of a finished job spent on the network (both ways).",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "amcoedge_share_compute_seconds",
            "Seconds each share of a finished job computed on its peer.",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.replans = Counter(
            "amcoedge_replans", "Shares re-planned after a peer failed them.", registry=r
        )
        self.jobs_failed = Counter(
            "amcoedge_jobs_failed", "Jobs that ended in an error, by code.", ["code"], registry=r
        )

    # -- observations ---------------------------------------------------------------------

    def _code(self, code: str) -> str:
        """An error code as a label value; past ``_MAX_CODES`` distinct codes, ``other``."""
        if code in self._codes:
            return code
        if len(self._codes) >= _MAX_CODES or not code.isidentifier():
            return "other"
        self._codes.add(code)
        return code

    def count_http(self, path: str, status: int, code: str) -> None:
        """One HTTP answer: its request path, status and error code (``ok`` when none)."""
        status = int(status) if 100 <= int(status) <= 599 else 0
        self.http_requests.labels(route_of(path), str(status), self._code(code)).inc()
        if 400 <= status < 500:
            self.http_bad.inc()
        elif status >= 500:
            self.http_errors.inc()

    def observe_job(self, result: Mapping[str, Any]) -> None:
        """One finished job: its result as the origin answers it (``plan`` and ``timing``)."""
        plan = result.get("plan") or {}
        policy = _bounded(plan.get("policy"), POLICIES)
        mode = _bounded(plan.get("mode"), MODES)
        timing = result.get("timing") or {}
        self.makespan.labels(policy, mode).observe(float(timing["makespan_s"]))
        for t in timing.get("peers") or ():
            self.queue.labels(policy, mode).observe(float(t.get("queue_s", 0.0)))
            self.transfer.labels(policy, mode).observe(float(t.get("transfer_s", 0.0)))
            self.compute.labels(policy, mode).observe(float(t.get("compute_s", 0.0)))
        self.replans.inc(len(result.get("replans") or ()))
        ratio = timing.get("actual_over_predicted")
        if isinstance(ratio, int | float) and not isinstance(ratio, bool):
            self.prediction.labels(policy, mode).observe(float(ratio))

    def count_job_failure(self, code: str) -> None:
        """One job that ended in an error with this code."""
        self.jobs_failed.labels(self._code(code)).inc()

    # -- exposition -----------------------------------------------------------------------

    def render(self, node: Any) -> bytes:
        """The text exposition (``CONTENT_TYPE``) of this registry plus ``node``'s live values.

        ``node`` is read, never changed: ``jobs.counts()``, ``executor`` (``queued_s()``,
        ``active``, ``completed``, ``failed``), ``cost`` (``capacity()``, ``a``, ``c``),
        ``gossip`` (``view().alive()``, ``stats``; may be None), ``server`` (``stats``; may
        be None), ``rpc_stats`` and ``planner.recruiters.fallbacks``.
        """
        return generate_latest(_Scrape(self.registry, node))


class _Scrape(Collector):
    """The registry's metrics followed by the node's live ones, for one scrape."""

    def __init__(self, registry: CollectorRegistry, node: Any) -> None:
        self._registry = registry
        self._node = node

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from live_metrics(self._node)


def _gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    g.add_metric(list(labels.values()), float(value))
    return g


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def engine_metrics(info: Mapping[str, Any]) -> Iterator[Metric]:
    """The denoiser engine in use and the ms per step measured for each engine."""
    yield _gauge(
        "amcoedge_engine_info",
        "The denoiser engine that runs (1), with its execution provider.",
        1.0,
        engine=str(info.get("engine", "")),
        provider=str(info.get("provider", "")),
        requested=str(info.get("requested", "")),
    )
    ms = GaugeMetricFamily(
        "amcoedge_engine_ms_per_step",
        "Milliseconds per denoising step measured on this peer, by engine and batch size.",
        labels=["engine", "batch"],
    )
    for engine, rows in sorted((info.get("ms_per_step") or {}).items()):
        for batch, value in sorted(rows.items()):
            if _number(value):
                ms.add_metric([str(engine), str(batch)], float(value))
    yield ms


def link_metrics(estimates: Mapping[str, Any]) -> Iterator[Metric]:
    """This peer's measured links (``peer.core.links``)."""
    rate = GaugeMetricFamily(
        "amcoedge_link_bytes_per_second", "Measured rate of the link to a peer.", labels=["peer"]
    )
    rtt = GaugeMetricFamily(
        "amcoedge_link_rtt_seconds", "Measured round trip to a peer.", labels=["peer"]
    )
    age = GaugeMetricFamily(
        "amcoedge_link_age_seconds", "Age of the newest sample of the link.", labels=["peer"]
    )
    for name, est in sorted(estimates.items()):
        if est.bytes_per_s is not None:
            rate.add_metric([name], float(est.bytes_per_s))
        rtt.add_metric([name], float(est.rtt_s))
        age.add_metric([name], float(est.age_s))
    yield from (rate, rtt, age)


def live_metrics(node: Any) -> Iterator[Metric]:
    """Levels and counters that the node's parts keep themselves, read at scrape time."""
    if node.backend is not None:
        yield from engine_metrics(node.backend.engine_info())
    yield from link_metrics(node.links.estimates(node.clock()))
    jobs = GaugeMetricFamily(
        "amcoedge_jobs", "Jobs kept at this origin, by state.", labels=["state"]
    )
    for state, n in sorted(node.jobs.counts().items()):
        jobs.add_metric([state], n)
    yield jobs
    ex = node.executor
    yield _gauge(
        "amcoedge_executor_queued_seconds",
        "Predicted seconds of work queued or running on this peer (the backlog it gossips), "
        "at this peer's recent actual/predicted ratio.",
        round(ex.queued_s(), 6),
    )
    yield _gauge(
        "amcoedge_executor_backlog_ratio",
        "This peer's recent actual over predicted seconds per share (EWMA; scales its backlog).",
        round(ex.backlog_ratio, 6),
    )
    yield _gauge("amcoedge_executor_active_shares", "Shares queued or running here.", ex.active)
    shares = CounterMetricFamily(
        "amcoedge_executor_shares", "Shares run by the executor.", labels=["result"]
    )
    shares.add_metric(["ok"], ex.completed)
    shares.add_metric(["error"], ex.failed)
    yield shares
    yield _gauge("amcoedge_capacity", "Images x steps per second at batch 8.", node.cost.capacity())
    cost = GaugeMetricFamily(
        "amcoedge_cost_seconds", "Affine cost per denoising step (a + c * images).", labels=["term"]
    )
    cost.add_metric(["a"], node.cost.a)
    cost.add_metric(["c"], node.cost.c)
    yield cost
    gossip = node.gossip
    alive = len(gossip.view().alive()) if gossip is not None else 0
    yield _gauge("amcoedge_peers_alive", "Alive or suspect peers in this peer's view.", alive)
    rpc = CounterMetricFamily("amcoedge_rpc_events", "RPC events at this origin.", labels=["event"])
    for k, v in sorted(node.rpc_stats.items()):
        rpc.add_metric([k], v)
    yield rpc
    server_stats: dict[str, Any] = dict(node.server.stats) if node.server is not None else {}
    srv = CounterMetricFamily(
        "amcoedge_rpc_server_events",
        "RPC server events: connections, frames, malformed or oversized frames, auth failures.",
        labels=["event"],
    )
    for k, v in sorted(server_stats.items()):
        if _number(v):
            srv.add_metric([k], v)
    yield srv
    gossip_stats: dict[str, Any] = dict(gossip.stats) if gossip is not None else {}
    ev = CounterMetricFamily(
        "amcoedge_gossip_events",
        "Gossip driver events: datagrams and bytes in and out, dropped malformed or forged input.",
        labels=["event"],
    )
    levels = GaugeMetricFamily(
        "amcoedge_gossip_state",
        "Gossip levels: members, live members, local health, own incarnation, queued broadcasts.",
        labels=["level"],
    )
    for k, v in sorted(gossip_stats.items()):
        if not _number(v):
            continue
        (levels if k in GOSSIP_GAUGES else ev).add_metric([k], v)
    yield ev
    yield levels
    drops = CounterMetricFamily(
        "amcoedge_drops",
        "Input refused or connections closed, by surface and cause.",
        labels=["surface", "cause"],
    )
    for k in RPC_DROP_KEYS:
        if _number(server_stats.get(k)):
            drops.add_metric(["rpc", k], server_stats[k])
    for k, v in sorted(gossip_stats.items()):
        if (k.startswith("dropped_") or k == "tcp_errors") and _number(v):
            drops.add_metric(["gossip", k.removeprefix("dropped_")], v)
    yield drops
    yield CounterMetricFamily(
        "amcoedge_policy_fallbacks",
        "Decisions that fell back to greedy.",
        value=node.planner.recruiters.fallbacks,
    )
