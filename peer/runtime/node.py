"""One peer process: gossip node + RPC server (same port: UDP gossip, TCP RPC) + executor + HTTP.

The node is the asyncio shell around the pure parts: it turns the gossip view into planner
input (``states``), carries plans out through ``peer.runtime.origin``, answers RPC calls from other
origins (``run_share``, ``cancel``, ``gossip.push_pull``; ``ping`` and ``info`` are the RPC
server's built-ins, ``info`` carrying this peer's cost model) and publishes its
backlog, capacity and active shares through gossip. RPC transfers feed gossip's bandwidth
estimates; a background prober keeps round-trip estimates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import logging
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from aiohttp import web

from peer.core.config import (
    PeerConfig,
    exposure_problem,
    insecure_warnings,
    is_wildcard,
    read_secret,
    read_token,
)
from peer.core.costs import CostTracker, ModeBias
from peer.core.errors import BadRequest, ConfigError, Overloaded, PeerError, ShareFailed
from peer.core.jobs import Job, JobBook, JobState
from peer.core.links import PRIME_BYTES, PROBE_MAX_BYTES, LinkBook
from peer.core.memory import (
    MIB,
    Estimate,
    MemoryBook,
    MemoryModel,
    MemoryRefused,
    budget_bytes,
    for_generate,
    for_repair,
)
from peer.core.pace import JobPace
from peer.core.parallel_costs import MeasuredParallel, ParallelCostTracker
from peer.core.planner import PeerState, Plan, Planner, Share
from peer.core.recruit import Recruiters
from peer.core.requests import GenerateRequest, RepairRequest, parse_idempotency_key
from peer.core.shares import (
    ChainShare,
    GenerateShare,
    TextSpec,
    TilesShare,
    decode_reply,
    decode_share,
    encode_reply,
    encode_share,
    units_of,
)
from peer.core.viewstate import states_from_view
from peer.rpc.tls import TlsFiles
from peer.runtime.backend import Backend
from peer.runtime.cpu_limit import cpu_limit, quota_slowdown
from peer.runtime.runner import ShareRunner

if TYPE_CHECKING:
    from gossip import GossipNode, View
    from peer.core.fused_plan import Canvas as FusedCanvas
    from peer.diffusion.pipeline.text import TextCaps, TextParams
    from peer.diffusion.tiles import Tile
    from peer.rpc import RpcPool, RpcServer
    from peer.runtime.fused_sessions import Call as FusedCall
    from policy.fleet import DispatchLedger
from peer.runtime.executor import Executor
from peer.runtime.http import ConnectionGuard, build_app, quiet_client_faults
from peer.runtime.metrics import PeerMetrics
from peer.runtime.origin import PeerTiming, run_generate, run_repair

log = logging.getLogger("amcoedge.node")

VERSION = "1"
META_PERIOD_S = 0.1
CLUSTER_UNITS = {
    "capacity": "images x denoising steps per second at batch 8",
    "backlog": "seconds of queued work, as published",
    "age": "seconds since that peer's metadata was published",
    "rtt_s": "seconds, this peer's measured round trip to that peer",
    "links": "per peer, its links to the others: bytes_per_s, rtt_s (seconds), age_s and "
    "samples as measured by this peer for itself; gossiped rates for the others",
}
PROBE_PERIOD_S = 2.0
REFRESH_SAMPLE = 16  # peers whose load is refreshed before a decision, at most
REFRESH_MIN_S = 0.005  # bounds on that round trip's wait
REFRESH_MAX_S = 0.1
FOLLOW_POLL_S = 0.25  # a retried request polls the first origin's job this often
FOLLOW_TIMEOUT_S = 2.0  # per poll
FOLLOW_MISSES = 3  # unanswered polls in a row before the retry runs here
WATCH_PERIOD_S = 0.05  # how often a share's holder is checked against the gossip view
# A holder that gossip suspects while its share is late must answer an RPC ping this fast to
# keep the share; it is then not asked again for VOUCH_S. Suspicion rides on UDP probes, which
# a saturated slow link (a 1 Mbit/s uplink behind a 64 KiB shaper burst: half a second of
# queue) delays past the probe timeout while the peer is up and working: in the prototype
# scenario 29 of 36 re-plans were such false alarms (no peer failed), each sending a fast
# peer's tiles to the back of the slow peers' queues.
HOLDER_PING_S = 1.0
VOUCH_S = 2.0
MAX_SHARE_ID = 64  # characters in a share's id (``run_share``'s "share_id", ``cancel``'s "share")


# ``run_share``'s "waited_s": how long the share's request has been under way at its origin (a
# chain's later hop, a re-planned share); it queues behind what was here that long ago. Bounded:
# no share may claim a place older than this.
MAX_WAITED_S = 3600.0


def _valid_share_id(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_SHARE_ID


def _valid_waited(v: object) -> bool:
    return (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0.0 <= v <= MAX_WAITED_S
    )


def overrun_deadline_s(predicted_s: float) -> float:
    """How long a remote share may run before it is re-planned: well past its prediction (the
    cost model errs), and never less than 5 s (gossip sees a silent peer die in ~2-3 s)."""
    return max(3.0 * max(predicted_s, 0.0), predicted_s + 5.0)


TRIM_ABOVE = 64 * MIB  # a request estimated at this or more hands freed heap back when it ends
HTTP_HEADER_TIMEOUT_S = 10.0  # an HTTP connection must send a request's headers within this


def advertised_host(cfg: PeerConfig) -> str:
    """The host other peers dial: ``--advertise``, the bound host, or for a wildcard bind an
    address of this machine that is not loopback (refuses to guess when there is none)."""
    if cfg.advertise is not None:
        return cfg.advertise[0]
    host = cfg.listen[0]
    if not is_wildcard(host):
        return host
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        addr = str(info[4][0])
        if not addr.startswith("127."):
            return addr
    raise ConfigError(
        f"--listen {host} binds every interface but this machine has no address other peers "
        "can dial; pass --advertise HOST[:PORT] with the address they should use"
    )


async def resolve_host(host: str) -> str:
    """An IP literal for ``host`` (gossip sends to literals only: no DNS lookup per datagram)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}") from None
    return str(infos[0][4][0])


async def resolve_all(addrs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(await resolve_host(h), p) for h, p in addrs]


def rpc_tls(cfg: PeerConfig) -> TlsFiles | None:
    """Mutual TLS for RPC: each peer presents its certificate and trusts the cluster's CA."""
    if cfg.tls_cert_file is None:
        return None
    return TlsFiles(certfile=cfg.tls_cert_file, keyfile=cfg.tls_key_file, cafile=cfg.tls_ca_file)


class Node:
    def __init__(
        self,
        cfg: PeerConfig,
        *,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.limits = cfg.limits
        self.default_policy = cfg.policy
        self.secret = read_secret(cfg)
        self.clock = clock  # monotonic seconds; injectable so tests run on virtual time
        self.executor = Executor(
            max_queued=cfg.limits.max_queued_shares, threads=cfg.threads, clock=clock
        )
        self.jobs = JobBook(keep=cfg.limits.max_jobs_kept)
        self.planner = Planner(Recruiters(seed=0))
        self.mode_bias = ModeBias()  # per kind/mode actual/predicted, from finished jobs
        self._pace: dict[str, JobPace] = {}  # job -> its shares' pace (overrun deadlines)
        self.planner.bias = self.mode_bias.factor
        self.backend: Backend | None = backend
        self.cost = CostTracker(0.004, 0.0008, alpha=cfg.ewma_alpha)
        self.parallel_costs = ParallelCostTracker()  # what parallel-steps runs measured here
        self.native = 16
        self.quantum = 1
        self.runner: ShareRunner | None = None
        self.memory_model = MemoryModel()  # what requests cost in memory (set at start)
        self.memory = MemoryBook(budget=0)  # requests in flight against the budget (at start)
        self.metrics = PeerMetrics()
        self.rpc_stats: Counter[str] = Counter()
        self.links = LinkBook()  # this peer's measured links, one estimator per peer
        self._rng = random.Random(0)
        # origin -> its jobs with shares queued here -> how many of that job's shares
        self._serving: dict[str, dict[str, int]] = {}
        self._share_seq = itertools.count(1)  # ids of the shares this origin sends out
        self.started = clock()
        self._job_tasks: set[asyncio.Task[None]] = set()
        self._job_cond: dict[str, asyncio.Event] = {}
        self._bg: list[asyncio.Task[None]] = []
        self._ledger: DispatchLedger | None = None
        self.gossip: GossipNode | None = None
        self.server: RpcServer | None = None
        self.pool: RpcPool | None = None
        self._http_runner: web.AppRunner | None = None
        self.guard: ConnectionGuard | None = None
        self.advertised = cfg.listen[0]
        self.http_port = cfg.http[1]
        self.rpc_port = cfg.listen[1]
        self.provider = "unknown"
        self.encode_s = 0.0  # the last prompt encoding here, seconds (text pipelines)
        self._fused_rpc: dict[str, Callable[[Any], Awaitable[Any]]] = {}  # fused.* (at start)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        from gossip import GossipConfig, GossipNode, PeerMeta
        from peer.rpc import Limits, RpcPool, RpcServer
        from policy.fleet import DispatchLedger

        problem = exposure_problem(self.cfg)
        if problem is not None:
            raise ConfigError(problem)
        for warning in insecure_warnings(self.cfg):
            log.warning("INSECURE: %s", warning)
        token = read_token(self.cfg)
        self._ledger = DispatchLedger()
        await self.executor.start()
        backend = self.backend
        if backend is None:
            from peer.diffusion.pipeline.backend import load_peer_backend

            cfg = self.cfg
            backend = await self.executor.call(
                lambda: load_peer_backend(  # a digits Backend, or a PipelineBackend
                    model=cfg.model, device=cfg.device, threads=cfg.threads, engine=cfg.engine
                )
            )
            self.backend = backend
        assert backend is not None
        self.native = int(backend.sample_size)
        self.quantum = max(int(backend.batch_quantum), 1)
        self.planner.native = self.native
        if self.cfg.calibrate:
            cal = await self.executor.call(backend.calibrate)
            # calibration's short steps run unthrottled inside a CFS period: scale to the quota
            limit = self.cfg.cpu_cores if self.cfg.cpu_cores is not None else cpu_limit()
            slow = quota_slowdown(self.cfg.threads, limit)
            if slow > 1.0:
                log.info(
                    "cpu quota %.2f cores for %d threads: costs x%.2f",
                    limit,
                    self.cfg.threads,
                    slow,
                )
            self.cost = CostTracker(
                float(cal.a_s) * slow, float(cal.c_s) * slow, alpha=self.cfg.ewma_alpha
            )
        self.runner = ShareRunner(backend, self.cost, self.native)
        self._setup_memory(backend)
        self.provider = self.planner.recruiters.provider(self.cfg.policy)

        host, port = self.cfg.listen
        from peer.runtime.fused_sessions import rpc_handlers as fused_handlers

        self._fused_rpc = fused_handlers(self.executor, backend)
        self.server = RpcServer(
            handlers={
                "run_share": self._rpc_run_share,
                "cancel": self._rpc_cancel,
                "link.probe": self._rpc_link_probe,
                "job.lookup": self._rpc_job_lookup,
                **self._fused_rpc,  # fused tiles: band sessions (this peer's own band calls them)
            },
            limits=Limits(),
            secret=self.secret,
            info=self._info,
            tls=rpc_tls(self.cfg),
        )
        await self.server.start(host, port)
        self.rpc_port = int(self.server.port)
        self.pool = RpcPool(
            secret=self.secret,
            limits=Limits(),
            on_transfer=self._on_transfer,
            tls=rpc_tls(self.cfg),
        )
        self.guard = ConnectionGuard(HTTP_HEADER_TIMEOUT_S, self.clock)
        quiet_client_faults()
        app = build_app(self, token, guard=self.guard)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        if self._http_runner.server is not None:
            self.guard.attach(self._http_runner.server)  # deadlines count from accept
        site = web.TCPSite(self._http_runner, self.cfg.http[0], self.cfg.http[1])
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.http_port = int(server.sockets[0].getsockname()[1])
        self.advertised = await resolve_host(advertised_host(self.cfg))
        adv_port = self.cfg.advertise[1] if self.cfg.advertise and self.cfg.advertise[1] else 0
        rpc_addr = (self.advertised, adv_port or self.rpc_port)
        http_host = self.advertised if is_wildcard(self.cfg.http[0]) else self.cfg.http[0]
        preset = {"lan": GossipConfig.lan, "local": GossipConfig.local, "wan": GossipConfig.wan}
        meta = PeerMeta(
            name=self.name,
            gossip_addr=rpc_addr,
            rpc_addr=rpc_addr,
            http_addr=(http_host, self.http_port),
            version=VERSION,
            model_id=backend.model_id,
            capacity=self.cost.capacity(),
            queued_s=0.0,
            active_shares=0,
        )
        self.gossip = GossipNode(
            meta,
            bind=(host, self.rpc_port),
            config=preset[self.cfg.gossip](),
            secret=self.secret,
            push_pull_dialer=self._dial_push_pull,
        )
        self.server.add_handler("gossip.push_pull", self._rpc_push_pull)
        self.gossip.subscribe(self._on_view)
        await self.gossip.start(seeds=await resolve_all(self.cfg.join))

        self._bg.append(asyncio.create_task(self._publish_loop(), name="meta"))
        self._bg.append(asyncio.create_task(self._probe_loop(), name="probe"))
        self._bg.append(asyncio.create_task(self._guard_loop(), name="http-guard"))
        log.info(
            "peer %s up: rpc/gossip %s:%d http %s:%d model %s a=%.5fs c=%.5fs capacity=%.1f",
            self.name,
            host,
            self.rpc_port,
            self.cfg.http[0],
            self.http_port,
            meta.model_id,
            self.cost.a,
            self.cost.c,
            self.cost.capacity(),
        )

    async def stop(self) -> None:
        for t in self._bg:
            t.cancel()
        for t in list(self._job_tasks):
            t.cancel()
        for t in [*self._bg, *self._job_tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.gossip is not None:
            with contextlib.suppress(TimeoutError, OSError):  # leaving is best effort
                await asyncio.wait_for(self.gossip.leave(), 2.0)
            await self.gossip.stop()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self.server is not None:
            await self.server.close()
        if self.pool is not None:
            await self.pool.close()
        await self.executor.close()

    # -- gossip glue --------------------------------------------------------------------

    def _started(self) -> tuple[GossipNode, RpcPool]:
        if self.gossip is None or self.pool is None:
            raise Overloaded("this peer is still starting")
        return self.gossip, self.pool

    async def _dial_push_pull(self, addr: tuple[str, int], payload: Any) -> Any:
        _, pool = self._started()
        return await pool.call(
            (addr[0], addr[1]), "gossip.push_pull", payload, timeout=self.cfg.rpc_timeout_s
        )

    def _addr_names(self) -> dict[tuple[str, int], str]:
        if self.gossip is None:
            return {}
        view = self.gossip.view()
        return {(p.meta.rpc_addr[0], p.meta.rpc_addr[1]): p.name for p in view.peers.values()}

    def _on_transfer(self, addr: tuple[str, int], nbytes: int, seconds: float) -> None:
        name = self._addr_names().get((addr[0], addr[1]))
        if name is not None and name != self.name and seconds > 0 and self.gossip is not None:
            self.gossip.record_transfer(name, nbytes=nbytes, seconds=seconds)

    def _publish(self) -> None:
        """Backlog, active shares and capacity into gossip (rate-limited by the gossip core)."""
        if self.gossip is None:
            return
        self.gossip.update_meta(
            queued_s=self.executor.queued_s(),
            active_shares=self.executor.active,
            capacity=self.cost.capacity(),
        )

    async def _publish_loop(self) -> None:
        self.executor.on_change = self._publish  # publish at once when work comes and goes
        while True:
            self._publish()
            await asyncio.sleep(META_PERIOD_S)

    async def _guard_loop(self) -> None:
        """Close HTTP connections that send no request in time (see ``ConnectionGuard``)."""
        while True:
            await asyncio.sleep(1.0)
            runner = self._http_runner
            if runner is not None and runner.server is not None and self.guard is not None:
                self.guard.sweep([h.transport for h in runner.server.connections])

    def retry_after_s(self) -> int:
        """Seconds until this peer's queued work is done: what a 503 asks a client to wait."""
        return max(1, math.ceil(self.executor.queued_s()))

    def _link_sample(self, peer: str, nbytes: int, seconds: float) -> None:
        """One transfer's network time into the link estimate; the rate on to gossip."""
        if seconds <= 0 or peer == self.name:
            return
        now = self.clock()
        self.links.observe(peer, nbytes, seconds, now)
        est = self.links.estimate(peer, now)
        if est is not None and est.bytes_per_s is not None and self.gossip is not None:
            # gossip carries one rate per link: hand it the fitted rate as a 1 s sample
            self.gossip.record_transfer(peer, nbytes=max(int(est.bytes_per_s), 1), seconds=1.0)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_PERIOD_S)
            await self.probe_links()

    async def probe_links(self) -> None:
        """A ping to every live peer (round trip), and one budgeted bulk probe per call to the
        peer whose rate no transfer has shown for longest (``peer.core.links``)."""
        from peer.rpc import RpcError

        gossip, pool = self._started()
        now = self.clock()
        others = [p for p in gossip.view().alive() if p.name != self.name]
        stale = [p for p in others if self.links.needs_probe(p.name, now)]
        bulk = min(stale, key=lambda p: self.links.last_rate_sample(p.name)) if stale else None
        for p in others:
            addr = (p.meta.rpc_addr[0], p.meta.rpc_addr[1])
            try:
                if p is bulk:  # drain a shaper's burst first (unmeasured), then measure
                    await pool.call(addr, "link.probe", {"bytes": PRIME_BYTES}, timeout=5.0)
                    size = self.links.probe_bytes(p.name, now)
                    _, info = await pool.call_measured(
                        addr, "link.probe", {"bytes": size}, timeout=5.0
                    )
                else:
                    _, info = await pool.call_measured(addr, "ping", timeout=1.0)
            except (RpcError, OSError, TimeoutError):
                continue
            self._link_sample(p.name, info.request_bytes + info.response_bytes, info.seconds)

    # -- planner input ------------------------------------------------------------------

    async def refresh_load(self) -> dict[str, float]:
        """Just before deciding: one bounded round trip refreshes the load of the peers the
        planner may use (a sample of them in a large cluster); returns the age of the load
        now held for each candidate, fresh or not."""
        gossip = self.gossip
        if gossip is None:
            return {}
        others = [p.name for p in gossip.view().alive() if p.name != self.name]
        if len(others) > REFRESH_SAMPLE:
            others = self._rng.sample(others, REFRESH_SAMPLE)
        if others:
            await gossip.refresh_load(others, timeout_s=self._refresh_timeout_s(others))
        ages = {}
        for name in others:
            age = gossip.load_age(name)
            if age is not None:
                ages[name] = age
        return ages

    def _refresh_timeout_s(self, names: Sequence[str]) -> float:
        """Wait for answers about 3 round trips of the slowest of them, within bounds."""
        now = self.clock()
        rtts = [e.rtt_s for n in names if (e := self.links.estimate(n, now)) is not None]
        return min(max(3.0 * max(rtts, default=0.01), REFRESH_MIN_S), REFRESH_MAX_S)

    def states(self, exclude: Sequence[str] = ()) -> list[PeerState]:
        """The view as planner input (see ``peer.core.viewstate``)."""
        gossip, _ = self._started()
        now = self.clock()
        assert self._ledger is not None  # set by start() before gossip
        return states_from_view(
            gossip.view(),
            me=self.name,
            my_addr=(self.cfg.listen[0], self.rpc_port),
            my_wait_s=self.executor.queued_s(now),
            cost=self.cost,
            ledger=self._ledger,
            now=now,
            model_id=self.backend.model_id if self.backend is not None else "",
            links=self.links.estimates(now),
            exclude=exclude,
        )

    def parallel_capable(self) -> bool:
        """The backend can hand a latent over mid-chain (what parallel steps are made of)."""
        return callable(getattr(self.backend, "with_latent", None))

    def parallel_measured(self) -> MeasuredParallel:
        return self.parallel_costs.snapshot(self.clock())

    def parallel_observed(
        self, plan: Plan, report: Any, makespan_s: float, local_s: float, images: int
    ) -> None:
        from peer.runtime.parallel import record_run

        evals = plan.detail.get("coarse_evals", 2)
        record_run(
            self.parallel_costs,
            plan,
            report,
            makespan_s,
            local_s,
            images,
            evals if isinstance(evals, int) else 2,
            self.clock(),
        )

    def record_dispatch(self, plan: Plan) -> None:
        if self._ledger is None:
            return
        now = self.clock()
        for s in plan.shares:
            if not s.is_self:
                self._ledger.record(s.peer, max(s.work_s, 0.0), now)
        self._ledger.prune(now - 60.0)

    # -- running shares -----------------------------------------------------------------

    async def run_share(
        self, share: Share, work: GenerateShare | TilesShare | ChainShare, job: Job
    ) -> tuple[Any, PeerTiming]:
        units = units_of(work)
        t0 = time.perf_counter()
        pace = self._pace.setdefault(job.id, JobPace())
        waited = pace.waited(t0)  # a later hop queues where it would have been at planning
        if share.is_self:
            assert self.runner is not None
            runner = self.runner
            key = pace.start_own(t0, share.predicted_s)
            try:
                local_out, st = await self.executor.run(
                    lambda: runner.run(work), runner.predict(work), job.id, waited_s=waited
                )
            finally:
                pace.finish_own(key, time.perf_counter())
            return local_out, PeerTiming(self.name, units, st.queue_s, 0.0, st.compute_s, t0, 0.0)
        from peer.rpc import RpcError, RpcTimeout

        _, pool = self._started()
        work = self._embeddings_for(work, share.peer)
        # the id lets a cancel name this share alone: the holder may hold others of the job
        share_id = f"s{next(self._share_seq)}"
        payload: dict[str, Any] = {
            "job": job.id,
            "origin": self.name,
            "share": encode_share(work),
            "share_id": share_id,
        }
        if waited > 0:
            payload["waited_s"] = round(waited, 4)
        call = asyncio.ensure_future(
            pool.call_measured(share.addr, "run_share", payload, timeout=self._share_timeout(share))
        )
        watch = asyncio.ensure_future(self._watch_holder(share, t0, pace))
        try:
            await asyncio.wait({call, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not call.done():  # the holder was declared lost, or overran: re-plan at once
            call.cancel()
            self.rpc_stats["share_abandoned"] += 1
            self._spawn_bg(self._cancel_remote(share.addr, job.id, share_id))
            raise ShareFailed(share.peer, watch.result())
        try:
            res, info = call.result()
        except (RpcError, OSError, TimeoutError) as exc:
            self.rpc_stats["share_failed"] += 1
            if isinstance(exc, RpcTimeout | TimeoutError):  # best effort: drop it over there
                self._spawn_bg(self._cancel_remote(share.addr, job.id, share_id))
            raise ShareFailed(share.peer, f"{type(exc).__name__}: {exc}") from exc
        wall = time.perf_counter() - t0
        pace.finished_share(wall, share.predicted_s)
        try:
            out = decode_reply(work, res)
            q, c = float(res["queue_s"]), float(res["compute_s"])
        except BadRequest as exc:
            raise ShareFailed(share.peer, f"malformed reply: {exc.message}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ShareFailed(share.peer, f"malformed reply timing: {exc}") from exc
        net = max(info.seconds - q - c, 0.0)
        self._link_sample(share.peer, info.request_bytes + info.response_bytes, net)
        timing = PeerTiming(share.peer, units, q, max(wall - q - c, 0.0), c, t0, 0.0)
        return out, timing

    def _on_view(self, view: View) -> None:
        """Drop the queued shares of origins that gossip declares dead or gone: no work for
        nobody (a share already running finishes; its reply then fails to arrive)."""
        for origin in list(self._serving):
            peer = view.peers.get(origin)
            if peer is None or peer.status in ("dead", "left"):
                for job_id in self._serving.pop(origin, {}):
                    self.rpc_stats["orphans_cancelled"] += self.executor.cancel(job_id)

    def _spawn_bg(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)

    def _share_timeout(self, share: Share) -> float:
        """The RPC's own bound on a remote share: the configured one, or longer for a share
        predicted to run long (a large repair on a slow peer legitimately runs past 60 s; a
        holder that is lost or overruns is caught sooner by ``_watch_holder``)."""
        return max(self.cfg.share_timeout_s, 4.0 * overrun_deadline_s(share.predicted_s))

    async def _watch_holder(self, share: Share, t0: float, pace: JobPace | None = None) -> str:
        """Returns (why) once the peer holding ``share`` is declared dead or gone by gossip, or
        suspect past the share's predicted finish, or the share overruns that prediction by
        far (``overrun_deadline_s``); both predictions scaled by the request's own ``pace``
        (``peer.core.pace``: when every share of it runs late, the model erred, not the holder).
        A suspect holder is asked directly first (``HOLDER_PING_S``): one that answers keeps
        its share until gossip declares it dead, it overruns, or it stops answering."""
        vouched_until = -math.inf
        while True:
            now = time.perf_counter()
            k = pace.factor(now) if pace is not None else 1.0
            predicted = share.predicted_s * k
            gossip = self.gossip
            peer = gossip.view().peers.get(share.peer) if gossip is not None else None
            status = "gone" if peer is None else peer.status
            late = now - t0 > predicted
            # dead or gone: at once; suspect (a busy peer can be, falsely): once also overdue,
            # unless it answers a ping
            if status in ("gone", "dead", "left"):
                return f"{share.peer} declared {status} by gossip while holding the share"
            if status == "suspect" and late and now >= vouched_until:
                if not await self._answers(share.addr):
                    return (
                        f"{share.peer} declared suspect by gossip while holding the share, "
                        f"and did not answer a ping within {HOLDER_PING_S:g} s"
                    )
                self.rpc_stats["suspect_vouched"] += 1
                vouched_until = time.perf_counter() + VOUCH_S
                continue
            if now - t0 >= overrun_deadline_s(predicted):
                return (
                    f"{share.peer} overran the share's predicted finish "
                    f"({share.predicted_s:.3f} s, x{k:.2f} at this request's pace) "
                    f"past {overrun_deadline_s(predicted):.1f} s"
                )
            await asyncio.sleep(WATCH_PERIOD_S)

    async def _answers(self, addr: tuple[str, int]) -> bool:
        """Whether the peer at ``addr`` answers an RPC ping within ``HOLDER_PING_S``."""
        from peer.rpc import RpcError

        _, pool = self._started()
        try:
            await pool.call(addr, "ping", timeout=HOLDER_PING_S)
        except (RpcError, OSError, TimeoutError):
            return False
        return True

    async def _cancel_remote(
        self, addr: tuple[str, int], job_id: str, share_id: str | None = None
    ) -> None:
        """Drop the share ``share_id`` of ``job_id`` queued at ``addr`` (every share of the job
        there when None): the job's other shares that peer holds keep running."""
        from peer.rpc import RpcError

        _, pool = self._started()
        params = {"job": job_id} if share_id is None else {"job": job_id, "share": share_id}
        with contextlib.suppress(RpcError, OSError, TimeoutError):  # best effort
            await pool.call(addr, "cancel", params, timeout=self.cfg.rpc_timeout_s)

    async def run_local_repair(self, req: RepairRequest, job: Job) -> tuple[np.ndarray, PeerTiming]:
        assert self.runner is not None
        runner = self.runner
        text = None if req.text is None else await self.text_spec(req.text, sized=False)
        area = req.image.shape[0] * req.image.shape[1] / float(self.native**2)
        area *= runner.rows(req.label)
        t0 = time.perf_counter()
        img, st = await self.executor.run(
            lambda: runner.repair(req.image, req.mask, req.steps, req.seed, req.label, text),
            self.cost.predict(area, req.steps),
            job.id,
        )
        return img, PeerTiming(self.name, 1, st.queue_s, 0.0, st.compute_s, t0, 0.0)

    # -- fused tiles (peer.runtime.fused_repair) -------------------------------------------

    def fused_canvas(self, req: RepairRequest) -> FusedCanvas | None:
        from peer.runtime.fused_repair import fused_canvas

        return fused_canvas(self.backend, req, self.native)

    def fused_call(self, share: Share) -> FusedCall:
        """Band calls to ``share``'s holder: this peer's own handlers in-process, or RPC."""
        if share.is_self:
            handlers = self._fused_rpc

            async def here(method: str, params: dict[str, Any]) -> Any:
                return await handlers[method](params)

            return here
        _, pool = self._started()
        timeout = self.cfg.share_timeout_s

        async def there(method: str, params: dict[str, Any]) -> Any:
            return await pool.call(share.addr, method, params, timeout=timeout)

        return there

    def fused_lost(self, peer: str, late: bool) -> str | None:
        """Why gossip counts a band holder lost: dead or gone at once, suspect once late."""
        if peer == self.name or self.gossip is None:
            return None
        p = self.gossip.view().peers.get(peer)
        status = "gone" if p is None else p.status
        if status in ("gone", "dead", "left") or (status == "suspect" and late):
            return f"{peer} declared {status} by gossip while holding a band"
        return None

    def plan_tiles(self, h: int, w: int) -> list[Tile]:
        from peer.diffusion import plan_tiles

        if self.text_caps() is not None:  # latent-grid windows of the pipeline's native size
            return list(cast(Any, self.backend).plan_edit_tiles(h, w))
        return list(plan_tiles(h, w, tile=self.native, halo=4))

    def repair_rows(self, label: int | None) -> int:
        assert self.runner is not None
        return self.runner.rows(label)

    def tile_area(self, tile: Tile) -> float:
        assert self.runner is not None
        return self.runner.tile_area(tile)

    def blend(self, shape: tuple[int, ...], parts: list[tuple[Tile, np.ndarray]]) -> np.ndarray:
        from peer.diffusion import blend_tiles

        return np.asarray(blend_tiles(shape, parts))

    # -- text pipelines (peer.diffusion.pipeline; the OpenAI routes: peer.runtime.openai_api) --

    def text_caps(self) -> TextCaps | None:
        """The loaded text pipeline's limits, or None when the model takes no prompt."""
        be = self.backend
        if be is None or not getattr(be, "takes_prompt", False):
            return None
        return cast("TextCaps", cast(Any, be).text_caps(self.limits.max_steps))

    async def text_spec(self, params: TextParams, sized: bool) -> TextSpec:
        """The request's prompt pair encoded once here (timed: ``_embeddings_for`` weighs
        sending the embeddings against encoding again on each collaborator)."""
        from peer.diffusion.pipeline.text import TextConditioning

        be: Any = self.backend
        raw = TextConditioning(params.prompt, params.negative_prompt, params.guidance_scale)
        t0 = time.perf_counter()
        cond = await self.executor.call(lambda: be.encode(raw))
        self.encode_s = time.perf_counter() - t0
        w, h = (params.width, params.height) if sized else (0, 0)
        return TextSpec(cond, w, h, embeddings=True)

    def _embeddings_for(
        self, work: GenerateShare | TilesShare | ChainShare, peer: str
    ) -> GenerateShare | TilesShare | ChainShare:
        """Send the prompt embeddings with a remote share, or let that peer encode again:
        whichever costs less over the measured link (``embeddings_travel``)."""
        if work.text is None or not work.text.cond.encoded:
            return work
        from peer.diffusion.pipeline.text import embeddings_travel

        est = self.links.estimate(peer, self.clock())
        rate = est.bytes_per_s if est is not None and est.bytes_per_s else 0.0
        travel = embeddings_travel(work.text.embed_bytes(), float(rate), self.encode_s)
        return dataclasses.replace(work, text=dataclasses.replace(work.text, embeddings=travel))

    def encode_png(self, img: np.ndarray) -> bytes:
        from peer.diffusion import encode_png

        return bytes(encode_png(img))

    # -- RPC handlers -------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": VERSION,
            "model_id": self.backend.model_id if self.backend is not None else "",
            "engine": self.backend.engine_info() if self.backend is not None else {},
            "a_s": self.cost.a,
            "c_s": self.cost.c,
            "capacity": self.cost.capacity(),
            "queued_s": self.executor.queued_s(),
            "threads": self.cfg.threads,
        }

    async def _rpc_push_pull(self, params: Any) -> bytes:
        """Gossip's full-state exchange; a malformed payload is the caller's fault."""
        from gossip import RemoteError, StateError
        from peer.rpc import RpcError

        if not isinstance(params, bytes | bytearray) or self.gossip is None:
            raise RpcError("gossip.push_pull takes one bytes payload", code="invalid_params")
        try:
            return await self.gossip.handle_push_pull(bytes(params))
        except RemoteError as exc:
            raise RpcError(f"bad push-pull payload: {exc}", code="invalid_params") from None
        except StateError as exc:
            raise RpcError(str(exc), code="shutting_down") from None

    async def _rpc_link_probe(self, params: Any) -> bytes:
        """``{"bytes": n}`` -> n zero bytes (n <= PROBE_MAX_BYTES): a bulk sample of the link."""
        from peer.rpc import RpcError

        n = params.get("bytes") if isinstance(params, dict) else None
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= PROBE_MAX_BYTES:
            raise RpcError(
                f"link.probe needs {{'bytes': 0..{PROBE_MAX_BYTES}}}", code="invalid_params"
            )
        return bytes(n)

    async def _rpc_cancel(self, params: Any) -> dict[str, Any]:
        """``{"job": j}`` drops every share of job ``j`` queued here; ``{"job": j, "share": s}``
        only the one that ``run_share`` sent with ``"share_id": s``."""
        from peer.rpc import RpcError

        job = params.get("job") if isinstance(params, dict) else None
        share = params.get("share") if isinstance(params, dict) else None
        if not isinstance(job, str) or (
            isinstance(params, dict) and "share" in params and not _valid_share_id(share)
        ):
            raise RpcError(
                f"cancel needs {{'job': str, 'share'?: str of 1..{MAX_SHARE_ID} chars}}",
                code="invalid_params",
            )
        return {"cancelled": self.executor.cancel(job, share)}

    async def _rpc_run_share(self, params: Any) -> dict[str, Any]:
        from peer.rpc import RpcError

        self.rpc_stats["run_share"] += 1
        if (
            not isinstance(params, dict)
            or not isinstance(params.get("job"), str)
            or ("share_id" in params and not _valid_share_id(params["share_id"]))
            or ("waited_s" in params and not _valid_waited(params["waited_s"]))
        ):
            raise RpcError(
                "run_share needs {'job': str, 'share': {...}, "
                f"'share_id'?: str of 1..{MAX_SHARE_ID} chars, "
                f"'waited_s'?: seconds in [0, {MAX_WAITED_S:g}]}}",
                code="invalid_params",
            )
        try:
            work = decode_share(params.get("share"))
        except BadRequest as exc:
            raise RpcError(exc.message, code="invalid_params") from None
        if self.runner is None:
            raise RpcError("this peer is still starting", code="busy")
        runner = self.runner
        from peer.diffusion import DiffusionError, InvalidRequestError

        job_id: str = params["job"]
        share_id: str | None = params.get("share_id")
        origin = params.get("origin")
        origin = origin if isinstance(origin, str) else ""
        serving = self._serving.setdefault(origin, {}) if origin else None
        if serving is not None:
            serving[job_id] = serving.get(job_id, 0) + 1
        try:
            out, st = await self.executor.run(
                lambda: runner.run(work),
                runner.predict(work),
                job_id,
                share_id,
                waited_s=float(params.get("waited_s", 0.0)),
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this handler itself is being cancelled
            raise RpcError(f"share of job {job_id} cancelled here", code="cancelled") from None
        except Overloaded as exc:
            raise RpcError(str(exc), code="busy") from None
        except (BadRequest, InvalidRequestError) as exc:  # the caller's share is at fault
            msg = exc.message if isinstance(exc, BadRequest) else str(exc)
            raise RpcError(msg, code="invalid_params") from None
        except DiffusionError as exc:  # this peer's model failed on a valid share
            log.error("share of job %s failed here", job_id, exc_info=exc)
            raise RpcError(f"{type(exc).__name__}: {exc}", code="internal") from None
        finally:
            if serving is not None:  # the job stays while another of its shares is here
                left = serving.get(job_id, 0) - 1
                if left > 0:
                    serving[job_id] = left
                else:
                    serving.pop(job_id, None)
                if not serving and self._serving.get(origin) is serving:
                    self._serving.pop(origin, None)
        res: dict[str, Any] = {"queue_s": st.queue_s, "compute_s": st.compute_s, "peer": self.name}
        res.update(encode_reply(work, out))
        return res

    # -- jobs ---------------------------------------------------------------------------

    def _admit(self) -> None:
        if self.gossip is None or self.runner is None:
            raise Overloaded("this peer is still starting")
        if self.jobs.active() >= self.limits.max_pending_jobs:
            raise Overloaded(f"{self.limits.max_pending_jobs} jobs already in progress here")

    # -- memory admission (peer.core.memory) -------------------------------------------

    def _setup_memory(self, backend: Backend) -> None:
        """The estimator for the loaded model, and the budget over this process's RSS now."""
        from peer.runtime.heap import rss_bytes, trim

        trim()
        base = rss_bytes()
        self.memory_model = MemoryModel(native=self.native, classes=backend.num_classes)
        self.memory = MemoryBook(budget_bytes(self.cfg.memory_budget_mib, base), baseline=base)
        log.info(
            "memory: baseline %d MiB, budget %s",
            base // MIB,
            f"{self.memory.budget // MIB} MiB" if self.memory.budget else "off",
        )

    def _check_memory(self, est: Estimate) -> None:
        """413 when ``est`` never fits the budget, 503 (Retry-After) when not beside the rest."""
        try:
            self.memory.check(est)
        except MemoryRefused as exc:
            self.rpc_stats["memory_refused_now" if exc.now else "memory_refused"] += 1
            if exc.now:
                raise Overloaded(str(exc)) from None
            raise BadRequest("too_large", str(exc), status=413) from None

    def _repair_memory(self, req: RepairRequest) -> tuple[RepairRequest, Estimate]:
        """The repair's estimate; ``auto`` on a canvas whose whole-canvas run does not fit (now)
        is steered to ``tile``, whose forwards run in bounded groups."""
        h, w = (int(v) for v in req.image.shape[:2])
        labelled = req.label is not None or self.memory_model.classes is None
        est = for_repair(self.memory_model, h, w, labelled, req.mode)
        if req.mode == "auto" and max(h, w) > self.native:
            whole = for_repair(self.memory_model, h, w, labelled, "local")
            try:
                self.memory.check(whole)
                est = whole  # auto may pick the whole canvas: hold for that
            except MemoryRefused:
                req = dataclasses.replace(req, mode="tile")
        self._check_memory(est)
        return req, est

    def _release_memory(self, job: Job) -> None:
        est = self.memory.release(job.id)
        if est is not None and est.total >= TRIM_ABOVE:
            from peer.runtime.heap import trim

            self._spawn_bg(self._trim(trim))

    async def _trim(self, trim: Callable[[], bool]) -> None:
        """Hand freed heap back to the system, on the worker thread between shares."""
        with contextlib.suppress(RuntimeError, AssertionError):  # the executor is closing
            await self.executor.call(trim)
            self.rpc_stats["heap_trims"] += 1

    def submit_generate(
        self, req: GenerateRequest, *, key: str | None = None, retry_of: str | None = None
    ) -> Job:
        """Start a generate job; a request sent again with the same idempotency ``key`` gets
        the first job, here or, when ``retry_of`` names its origin and that origin survives,
        there (see ``_run_or_follow``)."""
        seen = self.jobs.by_key(key) if key is not None else None
        if seen is not None:
            return seen
        self._admit()
        if req.mode in ("tile", "fused"):
            raise BadRequest("mode_not_applicable", f"{req.mode} mode applies to repair requests")
        if req.text is not None and req.mode == "parallel":
            raise BadRequest("mode_not_applicable", "parallel steps do not run text pipelines")
        if req.mode == "parallel" and not self.parallel_capable():
            raise BadRequest(
                "mode_not_applicable", "parallel steps need a backend that hands latents over"
            )
        units = req.count if req.mode not in ("chain", "steps") else req.count * req.steps
        est = for_generate(self.memory_model, req.count)
        self._check_memory(est)
        job = self.jobs.create("generate", units, time.time(), key=key)
        self.memory.admit(job.id, est)
        self._spawn(
            job,
            lambda: self._run_or_follow(key, retry_of, lambda: run_generate(self, req, job)),
            steps=req.steps,
        )
        return job

    def submit_repair(
        self, req: RepairRequest, *, key: str | None = None, retry_of: str | None = None
    ) -> Job:
        seen = self.jobs.by_key(key) if key is not None else None
        if seen is not None:
            return seen
        self._admit()
        if req.mode == "tile" and max(req.image.shape) <= self.native:
            raise BadRequest(
                "mode_not_applicable", f"tile mode needs a canvas larger than {self.native}px"
            )
        if req.mode == "fused" and (
            self.fused_canvas(req) is None or req.image.shape[0] < 2 * self.native
        ):
            raise BadRequest(
                "mode_not_applicable",
                f"fused mode needs the digits model and a canvas at least {2 * self.native}px high",
            )
        req, est = self._repair_memory(req)
        job = self.jobs.create("repair", 1, time.time(), key=key)
        self.memory.admit(job.id, est)
        self._spawn(
            job,
            lambda: self._run_or_follow(key, retry_of, lambda: run_repair(self, req, job)),
            steps=req.steps,
        )
        return job

    async def _run_or_follow(
        self,
        key: str | None,
        retry_of: str | None,
        run: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run the job here, unless it is a client's retry of a request whose first origin
        still holds it: then follow that job to its end and answer with its result."""
        addr = self._rpc_addr_of_http(retry_of) if key is not None and retry_of else None
        if addr is None or key is None:
            return await run()
        from peer.rpc import RpcError

        _, pool = self._started()
        misses = 0
        while misses < FOLLOW_MISSES:
            try:
                got = await pool.call(addr, "job.lookup", {"key": key}, timeout=FOLLOW_TIMEOUT_S)
            except (RpcError, OSError, TimeoutError):
                misses += 1  # that origin may be gone: a few tries, then run it here
                await asyncio.sleep(FOLLOW_POLL_S)
                continue
            if not isinstance(got, dict) or not got.get("found"):
                break  # it never reached that origin, or was forgotten there: run it here
            misses = 0
            remote = got.get("job")
            if isinstance(remote, dict) and remote.get("state") in ("done", "failed", "cancelled"):
                if remote.get("state") == "done" and isinstance(remote.get("result"), dict):
                    self.rpc_stats["retries_followed"] += 1
                    return {
                        **remote["result"],
                        "followed": {"origin": retry_of, "job": remote.get("id")},
                    }
                break  # it failed there: try it here
            await asyncio.sleep(FOLLOW_POLL_S)
        self.rpc_stats["retries_run"] += 1
        return await run()

    def _rpc_addr_of_http(self, base_url: str) -> tuple[str, int] | None:
        """The RPC address of the peer whose HTTP API is at ``base_url`` (None: not known)."""
        hostport = base_url.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        if self.gossip is None or not port.isdigit():
            return None
        for p in self.gossip.view().peers.values():
            h, hp = p.meta.http_addr
            if p.name != self.name and str(h) == host.strip("[]") and int(hp) == int(port):
                return (str(p.meta.rpc_addr[0]), int(p.meta.rpc_addr[1]))
        return None

    async def _rpc_job_lookup(self, params: Any) -> dict[str, Any]:
        """``{"key": k}`` -> whether this peer took a request with idempotency key ``k``, and
        the job (with its result once finished)."""
        from peer.rpc import RpcError

        key = params.get("key") if isinstance(params, dict) else None
        try:
            key = parse_idempotency_key(key) if isinstance(key, str) else None
        except BadRequest:
            key = None
        if key is None:
            raise RpcError("job.lookup needs {'key': str}", code="invalid_params")
        job = self.jobs.by_key(key)
        if job is None:
            return {"found": False}
        return {"found": True, "job": self.job_json(job) if job.terminal else job.summary()}

    def _spawn(
        self,
        job: Job,
        factory: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
        *,
        steps: int,
    ) -> None:
        """Run ``factory`` as ``job``'s task; ``steps`` (the request's denoising steps) weighs
        what its make-span teaches the prediction bias."""
        self._job_cond[job.id] = asyncio.Event()

        async def drive() -> None:
            self.emit_state(job, "running")
            try:
                result = await factory()
            except asyncio.CancelledError:
                if not job.terminal:
                    job.transition("cancelled", time.time())
                raise
            except Exception as raised:
                exc = _leaf(raised)
                if isinstance(exc, PeerError):
                    job.fail(exc.code, str(exc), time.time())
                    self.metrics.count_job_failure(exc.code)
                else:
                    log.error("job %s failed", job.id, exc_info=exc)
                    job.fail("internal", f"{type(exc).__name__}: {exc}", time.time())
                    self.metrics.count_job_failure("internal")
            else:
                if job.total_units and job.done_units < job.total_units:
                    job.done_units = job.total_units
                job.finish(result, time.time())
                self.metrics.observe_job(result)
                self._learn_bias(job.kind, steps, result)
            finally:
                self._pace.pop(job.id, None)
                self._release_memory(job)
                self._wake(job)
                self._job_cond.pop(job.id, None) if job.terminal else None

        task = asyncio.create_task(drive(), name=f"job-{job.id}")
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)

    def _learn_bias(self, kind: str, steps: int, result: Mapping[str, Any]) -> None:
        """Fold a finished job's make-span over its raw prediction into the bias of its kind
        (generate or repair) and mode, weighted by its denoising ``steps``."""
        plan = result.get("plan") or {}
        timing = result.get("timing") or {}
        mode, predicted, actual = (
            plan.get("mode"),
            timing.get("predicted_s"),
            timing.get("makespan_s"),
        )
        if not isinstance(mode, str) or mode == "parallel":
            return
        if not isinstance(predicted, int | float) or not isinstance(actual, int | float):
            return
        used = (plan.get("detail") or {}).get("bias", 1.0)
        used = float(used) if isinstance(used, int | float) and used > 0 else 1.0
        self.mode_bias.observe(kind, mode, float(predicted) / used, float(actual), steps)

    def emit_state(self, job: Job, state: JobState) -> None:
        job.transition(state, time.time())
        self._wake(job)

    def emit(self, job: Job, kind: str, **data: Any) -> None:
        job.note(kind, time.time(), **data)
        self._wake(job)

    def progress(self, job: Job, units: int, peer: str) -> None:
        job.progress(units, time.time(), peer)
        self._wake(job)

    def _wake(self, job: Job) -> None:
        ev = self._job_cond.get(job.id)
        if ev is not None:
            ev.set()
            self._job_cond[job.id] = asyncio.Event() if not job.terminal else ev

    async def wait_event(self, job: Job, seen: int, timeout: float) -> None:
        if len(job.events) > seen or job.terminal:
            return
        ev = self._job_cond.get(job.id)
        if ev is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)

    async def wait_job(self, job: Job) -> None:
        while not job.terminal:
            await self.wait_event(job, len(job.events), timeout=30.0)

    def recent_jobs(self, limit: int) -> list[Job]:
        """The dashboard's recent requests: at most ``limit`` jobs, oldest first."""
        return self.jobs.recent(limit)

    def job_json(self, job: Job) -> dict[str, Any]:
        out = job.summary()
        if job.result is not None:
            device = self.backend.device if self.backend is not None else "cpu"
            out["result"] = {**job.result, "device": device}
        return out

    # -- surfaces -----------------------------------------------------------------------

    def count_http(self, path: str, status: int, code: str) -> None:
        self.metrics.count_http(path, status, code)

    def cluster_json(self) -> dict[str, Any]:
        if self.gossip is None:
            return {"self": self.name, "units": CLUSTER_UNITS, "peers": []}
        view = self.gossip.view()
        peers: list[dict[str, Any]] = []
        for p in sorted(view.peers.values(), key=lambda p: p.name):
            peers.append(
                {
                    "name": p.name,
                    "status": p.status,
                    "incarnation": p.incarnation,
                    "self": p.name == self.name,
                    "addresses": {
                        "gossip": list(p.meta.gossip_addr),
                        "rpc": list(p.meta.rpc_addr),
                        "http": list(p.meta.http_addr),
                    },
                    "model_id": p.meta.model_id,
                    "capacity": p.meta.capacity,
                    "backlog": p.meta.queued_s,
                    "active_shares": p.meta.active_shares,
                    "age": round(float(p.meta_age_s), 4),
                    "rtt_s": self._rtt_to(p.name),
                    "links": self._links_json(view, p.name),
                }
            )
        links = [
            {"from": p["name"], "to": to, **est}
            for p in peers
            for to, est in sorted(p["links"].items())
        ]
        return {
            "self": self.name,
            "units": CLUSTER_UNITS,
            "peers": peers,
            "links": links,  # the same, flat: one row per (from, to)
            # this origin's factors per "kind/mode" (e.g. "generate/local", "repair/tile")
            "prediction_bias": self.mode_bias.to_json(),
        }

    def _rtt_to(self, name: str) -> float | None:
        est = self.links.estimate(name, self.clock()) if name != self.name else None
        return None if est is None else round(est.rtt_s, 6)

    def _links_json(self, view: Any, name: str) -> dict[str, dict[str, Any]]:
        """Links from ``name`` to the others: measured here for this peer; for another, the
        rates it gossips (its round trips and sample counts stay with it)."""
        if name == self.name:
            return {k: v.to_json() for k, v in self.links.estimates(self.clock()).items()}
        out: dict[str, dict[str, Any]] = {}
        for other in sorted(view.peers):
            rate = view.bandwidth(name, other) if other != name else None
            if rate is not None:
                out[other] = {"bytes_per_s": round(float(rate), 1), "rtt_s": None}
        return out

    def health_json(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "name": self.name,
            "insecure": self.cfg.insecure,
            "warnings": insecure_warnings(self.cfg),
            "uptime_s": round(self.clock() - self.started, 3),
            "alive_peers": len(self.gossip.view().alive()) if self.gossip else 0,
            "queued_s": round(self.executor.queued_s(), 6),
            "jobs_active": self.jobs.active(),
            "memory": {
                "budget_mib": self.memory.budget // MIB,
                "baseline_mib": self.memory.baseline // MIB,
                "in_flight_mib": self.memory.in_flight() // MIB,
            },
        }

    def metrics_bytes(self) -> bytes:
        return self.metrics.render(self)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
