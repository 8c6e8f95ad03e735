"""The live dashboard every peer serves at ``GET /ui`` (aiohttp routes; assets in ``ui/``).

Routes (``add_ui_routes``):

- ``GET /ui``, ``/ui/app.js``, ``/ui/app.css``: the page, shipped as package data; no CDN and
  no build step. The page holds no data, so it needs no token: it asks for the peer's API
  token when ``/ui/state`` answers 401, keeps it in ``sessionStorage`` and sends it as
  ``Authorization: Bearer`` (and as ``?token=`` on the event stream, which cannot set headers).
- ``GET /ui/state``: one compact snapshot (below) as JSON.
- ``GET /ui/events``: server-sent events, ``event: snapshot`` every ``PUSH_S`` and as soon as
  a job of this origin ends.
- ``GET /ui/peers/{name}/state`` and ``GET /ui/peers/{name}/jobs/{id}``: a server-side proxy to
  another peer's ``/ui/state`` and ``/v1/jobs/{id}`` at the HTTP address its gossip metadata
  advertises (so any peer's page shows any peer's view without CORS); the caller's token is
  forwarded. Only peers in this peer's view can be reached this way.

A snapshot holds the cluster (at most ``MAX_PEERS`` peers, ``links`` passed through when the
node publishes them), the ``MAX_REQUESTS`` most recent jobs of this origin with their plan and
per-share timing as arrays, and totals since this peer started: jobs by state, by policy and by
mode, failures by code, and the make-span histogram over fixed log-spaced bins.

Totals are folded from scans of the job book every ``SCAN_S``: a job counts once, when a scan
first sees it terminal. A job that ends and is dropped from the book between two scans (more
than ``max_jobs_kept`` jobs finishing within ``SCAN_S``) would be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from importlib import resources
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from peer.core.jobs import Job

MAX_REQUESTS = 200  # recent jobs in a snapshot
MAX_SHARES = 64  # shares per job in a snapshot (the rest counted in shares_total)
MAX_PEERS = 256  # peers in a snapshot (the rest counted in peers_total)
MAX_LINKS = 1024
SCAN_LIMIT = 100_000  # the whole job book
SCAN_S = 0.25
PUSH_S = 1.0
PROXY_TIMEOUT_S = 4.0
PROXY_MAX_BYTES = 16 * 1024 * 1024
# Make-span histogram: 4 bins per decade from 10 ms to 1000 s, plus under and over.
HIST_EDGES: tuple[float, ...] = tuple(round(10 ** (k / 4), 6) for k in range(-8, 13))
ASSETS = {
    "/ui": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "text/javascript"),
    "/ui/app.css": ("app.css", "text/css"),
}
# The page holds no data: these paths need no API token (the data routes do).
PAGE_PATHS: frozenset[str] = frozenset(ASSETS)


class UiApi(Protocol):
    """What the dashboard reads of a peer (``peer.runtime.node.Node``)."""

    def cluster_json(self) -> dict[str, Any]: ...

    def health_json(self) -> dict[str, Any]: ...

    def recent_jobs(self, limit: int) -> list[Job]:
        """At most ``limit`` jobs of the job book, oldest first (newest last)."""
        ...


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def compact_job(job: Job) -> dict[str, Any]:
    """The dashboard's view of one job: no images, shares as ``[peer, units, queue_s,
    transfer_s, compute_s, start_s, end_s]``."""
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "created": job.created,
        "finished": job.finished,
        "progress": [job.done_units, job.total_units],
    }
    if job.error is not None:
        out["error"] = job.error.get("code", "error")
    result = job.result or {}
    plan = result.get("plan")
    if isinstance(plan, dict):
        out["policy"] = plan.get("policy")
        out["requested_policy"] = plan.get("requested_policy")
        out["mode"] = plan.get("mode")
        out["predicted_s"] = _num(plan.get("predicted_makespan_s"))
    timing = result.get("timing")
    if isinstance(timing, dict):
        out["makespan_s"] = _num(timing.get("makespan_s"))
        rows = timing.get("peers") or []
        out["shares"] = [
            [
                str(r.get("peer")),
                r.get("units"),
                _num(r.get("queue_s")),
                _num(r.get("transfer_s")),
                _num(r.get("compute_s")),
                _num(r.get("start_s")),
                _num(r.get("end_s")),
            ]
            for r in rows[:MAX_SHARES]
        ]
        out["shares_total"] = len(rows)
    replans = result.get("replans")
    if isinstance(replans, list):
        out["replans"] = len(replans)
    return out


class Totals:
    """Counts since start, folded once per job when it is first seen terminal."""

    def __init__(self) -> None:
        self.states: Counter[str] = Counter()
        self.policies: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.hist = [0] * (len(HIST_EDGES) + 1)
        self.makespan_sum = 0.0
        self._last: set[str] = set()  # ids terminal at the previous scan

    def scan(self, jobs: Iterable[Job]) -> int:
        """Fold jobs that became terminal since the previous scan; returns how many."""
        now_terminal: set[str] = set()
        new = 0
        for job in jobs:
            if not job.terminal:
                continue
            now_terminal.add(job.id)
            if job.id not in self._last:
                self._fold(job)
                new += 1
        self._last = now_terminal
        return new

    def _fold(self, job: Job) -> None:
        self.states[job.state] += 1
        if job.error is not None:
            self.failures[job.error.get("code", "error")] += 1
        result = job.result or {}
        plan = result.get("plan") or {}
        self.policies[str(plan.get("policy", "-"))] += 1
        self.modes[str(plan.get("mode", "-"))] += 1
        ms = _num((result.get("timing") or {}).get("makespan_s"))
        if job.state == "done" and ms is not None and math.isfinite(ms):
            self.hist[_bin(ms)] += 1
            self.makespan_sum += ms

    def to_json(self) -> dict[str, Any]:
        done = sum(self.hist)
        return {
            "states": dict(self.states),
            "policies": dict(self.policies),
            "modes": dict(self.modes),
            "failures": dict(self.failures),
            "makespan": {
                "edges": list(HIST_EDGES),
                "counts": list(self.hist),
                "n": done,
                "mean_s": self.makespan_sum / done if done else None,
            },
        }


def _bin(x: float) -> int:
    """Index into ``Totals.hist``: 0 below the first edge, len(edges) at or past the last."""
    lo, hi = 0, len(HIST_EDGES)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < HIST_EDGES[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def compact_peers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in (cluster.get("peers") or [])[:MAX_PEERS]:
        addrs = p.get("addresses") or {}
        out.append(
            {
                "name": p.get("name"),
                "status": p.get("status"),
                "self": bool(p.get("self")),
                "capacity": _num(p.get("capacity")),
                "backlog": _num(p.get("backlog")),
                "active_shares": p.get("active_shares"),
                "age": _num(p.get("age")),
                "rtt_s": _num(p.get("rtt_s")),
                "http": addrs.get("http"),
            }
        )
    return out


class Board:
    """The dashboard's state at one peer: totals and the cached snapshot."""

    def __init__(self, api: UiApi, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock
        self.totals = Totals()
        self.version = 0  # bumped when a scan finds newly ended jobs
        self.closing = False
        self._changed = asyncio.Event()
        self._cache: tuple[int, float, bytes] | None = None
        self.session: aiohttp.ClientSession | None = None  # the proxy's, while the app runs

    def scan(self) -> int:
        new = self.totals.scan(self.api.recent_jobs(SCAN_LIMIT))
        if new:
            self.version += 1
            self.wake()
        return new

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def snapshot(self, limit: int = MAX_REQUESTS) -> dict[str, Any]:
        cluster = self.api.cluster_json()
        health = self.api.health_json()
        jobs = self.api.recent_jobs(limit)
        peers = cluster.get("peers") or []
        links = cluster.get("links")
        out: dict[str, Any] = {
            "v": 1,
            "self": cluster.get("self", health.get("name")),
            "t": self.clock(),
            "health": health,
            "peers": compact_peers(cluster),
            "peers_total": len(peers),
            "requests": [compact_job(j) for j in reversed(jobs)],
            "totals": self.totals.to_json(),
        }
        if isinstance(links, list):
            out["links"] = links[:MAX_LINKS]
            out["links_total"] = len(links)
        return out

    def snapshot_bytes(self) -> bytes:
        """The default snapshot, rebuilt at most every ``SCAN_S`` unless jobs ended."""
        now = time.monotonic()
        if self._cache is not None:
            version, at, body = self._cache
            if version == self.version and now - at < SCAN_S:
                return body
        body = json.dumps(self.snapshot(), separators=(",", ":")).encode()
        self._cache = (self.version, now, body)
        return body


BOARD_KEY: web.AppKey[Board] = web.AppKey("ui_board")


def _asset(name: str) -> bytes:
    return resources.files("peer.runtime").joinpath("ui", name).read_bytes()


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _make_asset_handler(name: str, ctype: str) -> Callable[[web.Request], Any]:
    body = _asset(name)  # read once at start-up: a missing asset fails loudly there

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body,
            content_type=ctype,
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    return handler


async def state(request: web.Request) -> web.StreamResponse:
    board = request.app[BOARD_KEY]
    raw = request.query.get("requests", str(MAX_REQUESTS))
    if not (raw.isdigit() and len(raw) <= 4 and int(raw) <= MAX_REQUESTS):
        return _error(
            "out_of_range", f"requests must be an integer in 0..{MAX_REQUESTS}, not {raw!r}", 400
        )
    limit = int(raw)
    if limit == MAX_REQUESTS:
        body = board.snapshot_bytes()
    else:
        body = json.dumps(board.snapshot(limit), separators=(",", ":")).encode()
    return web.Response(body=body, content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    board = request.app[BOARD_KEY]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    try:
        while not board.closing:
            await resp.write(b"event: snapshot\ndata: " + board.snapshot_bytes() + b"\n\n")
            await board.changed(PUSH_S)
    except (ConnectionResetError, ConnectionError):
        return resp  # the viewer went away
    await resp.write_eof()
    return resp


class _NoPeer(Exception):
    pass


def _peer_url(api: UiApi, name: str) -> str:
    for p in api.cluster_json().get("peers") or []:
        if p.get("name") != name:
            continue
        addrs = p.get("addresses") or {}
        http = addrs.get("http")
        if not (isinstance(http, list | tuple) and len(http) == 2):
            raise _NoPeer(f"peer {name!r} publishes no HTTP address")
        host, port = str(http[0]), int(http[1])
        if host in ("", "0.0.0.0", "::"):  # bound to every interface: reach it where it gossips
            gossip = addrs.get("gossip") or [host]
            host = str(gossip[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    raise _NoPeer(f"no peer {name!r} in this peer's view")


async def _proxy(request: web.Request, path: str) -> web.StreamResponse:
    board = request.app[BOARD_KEY]
    name = request.match_info["name"]
    try:
        base = _peer_url(board.api, name)
    except _NoPeer as exc:
        return _error("unknown_peer", str(exc), 404)
    headers = {"Accept": "application/json"}
    auth = request.headers.get("Authorization")
    token = request.query.get("token")
    if auth:
        headers["Authorization"] = auth
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    session = board.session
    if session is None:
        return _error("not_running", "the dashboard is not running", 503)
    try:
        async with session.get(base + path, headers=headers, allow_redirects=False) as r:
            body = await r.content.read(PROXY_MAX_BYTES + 1)
            status = r.status
            ctype = r.content_type
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _error("peer_unreachable", f"peer {name!r} at {base}: {exc!r}", 502)
    if len(body) > PROXY_MAX_BYTES:
        return _error("peer_reply_too_large", f"peer {name!r} sent over {PROXY_MAX_BYTES} B", 502)
    if ctype != "application/json":
        return _error("peer_bad_reply", f"peer {name!r} answered {status} {ctype}", 502)
    return web.Response(body=body, status=status, content_type="application/json")


async def peer_state(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, "/ui/state")


async def peer_job(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    if not (job_id.isalnum() and len(job_id) <= 64):
        return _error("invalid_value", "job ids are alphanumeric", 400)
    return await _proxy(request, f"/v1/jobs/{job_id}")


def add_ui_routes(app: web.Application, api: UiApi) -> None:
    """Serve the dashboard for ``api`` on ``app`` (call before the app starts)."""
    board = Board(api)
    app[BOARD_KEY] = board
    for path, (name, ctype) in ASSETS.items():
        app.router.add_get(path, _make_asset_handler(name, ctype))
    app.router.add_get("/ui/state", state)
    app.router.add_get("/ui/events", events)
    app.router.add_get("/ui/peers/{name}/state", peer_state)
    app.router.add_get("/ui/peers/{name}/jobs/{job_id}", peer_job)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async def scanner() -> None:
            while True:
                board.scan()
                await asyncio.sleep(SCAN_S)

        board.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT_S))
        task = asyncio.create_task(scanner(), name="ui-scanner")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await board.session.close()
        board.session = None

    async def on_shutdown(app: web.Application) -> None:
        board.closing = True  # event streams end, so the server need not wait them out
        board.wake()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
