"""The dashboard's plumbing (peer/runtime/ui.py) and the report timeline (peer/harness/timeline.py).

Synthetic peers and jobs behind a fake ``UiApi`` (20 peers, 300 jobs: what is sent stays
capped), the routes on a bare aiohttp app, the proxy between two apps, the event stream, and
one in-process node with a do-nothing backend. The browser test is tests/e2e/test_ui_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from peer.core.jobs import Job
from peer.harness import timeline
from peer.runtime import ui


def make_job(i: int, rng: random.Random, peers: list[str], state: str = "done") -> Job:
    job = Job(id=f"{i:016x}", kind="generate", created=1000.0 + i, total_units=8)
    job.transition("running", 1000.0 + i)
    if state == "running":
        return job
    if state == "failed":
        job.fail("overloaded", "no capacity", 1001.0 + i)
        return job
    used = rng.sample(peers, k=min(len(peers), rng.randint(1, 4)))
    rows: list[dict[str, Any]] = []
    for p in used:
        start = rng.uniform(0.0, 0.05)
        q, t, c = rng.uniform(0, 0.2), rng.uniform(0, 0.1), rng.uniform(0.1, 1.0)
        rows.append(
            {
                "peer": p,
                "units": rng.randint(1, 4),
                "queue_s": q,
                "transfer_s": t,
                "compute_s": c,
                "start_s": start,
                "end_s": start + q + t + c + 0.01,
            }
        )
    makespan = max(r["end_s"] for r in rows)
    result = {
        "images": ["iVBORw0KGgo=" * 20] * 8,  # stand-ins: the dashboard must not send them
        "plan": {
            "policy": rng.choice(["onnx", "greedy", "equal"]),
            "requested_policy": "onnx",
            "mode": rng.choice(["batch", "steps"]),
            "predicted_makespan_s": makespan * rng.uniform(0.8, 1.2),
        },
        "replans": [],
        "timing": {"makespan_s": makespan, "plan_s": 0.001, "peers": rows},
    }
    job.finish(result, 1000.0 + i + makespan)
    return job


class FakeApi:
    """Synthetic cluster of ``n_peers`` and a list of jobs (oldest first)."""

    def __init__(self, n_peers: int = 20, self_name: str = "p0") -> None:
        self.self_name = self_name
        self.peer_names = [f"p{i}" for i in range(n_peers)]
        self.jobs: list[Job] = []
        self.http_of: dict[str, tuple[str, int]] = {}

    def cluster_json(self) -> dict[str, Any]:
        peers = []
        for i, name in enumerate(self.peer_names):
            http = self.http_of.get(name, ("127.0.0.1", 8100 + i))
            peers.append(
                {
                    "name": name,
                    "status": "alive" if i % 7 else "suspect",
                    "self": name == self.self_name,
                    "addresses": {
                        "gossip": ["127.0.0.1", 7100 + i],
                        "rpc": ["127.0.0.1", 7100 + i],
                        "http": list(http),
                    },
                    "capacity": 100.0 + i,
                    "backlog": 0.1 * i,
                    "active_shares": i % 3,
                    "age": 0.05 * i,
                    "rtt_s": 0.001 * i if i else None,
                }
            )
        return {"self": self.self_name, "peers": peers}

    def health_json(self) -> dict[str, Any]:
        return {"status": "ok", "name": self.self_name, "uptime_s": 12.5, "alive_peers": 20}

    def recent_jobs(self, limit: int) -> list[Job]:
        return self.jobs[-limit:] if limit else []


def synthetic(n_peers: int = 20, n_jobs: int = 300, seed: int = 7) -> FakeApi:
    rng = random.Random(seed)
    api = FakeApi(n_peers)
    for i in range(n_jobs):
        state = "failed" if i % 25 == 3 else "running" if i == n_jobs - 1 else "done"
        api.jobs.append(make_job(i, rng, api.peer_names, state))
    return api


# -- the snapshot ----------------------------------------------------------------------------


def test_snapshot_caps_requests_and_sends_no_images() -> None:
    api = synthetic()
    board = ui.Board(api, clock=lambda: 5000.0)
    board.scan()
    snap = board.snapshot()
    assert snap["self"] == "p0" and snap["t"] == 5000.0
    assert len(snap["peers"]) == snap["peers_total"] == 20
    reqs = snap["requests"]
    assert len(reqs) == ui.MAX_REQUESTS == 200
    assert reqs[0]["id"] == api.jobs[-1].id and reqs[0]["state"] == "running"  # newest first
    assert reqs[-1]["id"] == api.jobs[100].id
    done = [r for r in reqs if r["state"] == "done"]
    for r in done:
        job = next(j for j in api.jobs if j.id == r["id"])
        assert job.result is not None
        rows = job.result["timing"]["peers"]
        assert r["shares_total"] == len(r["shares"]) == len(rows)
        assert r["shares"][0] == [
            rows[0]["peer"],
            rows[0]["units"],
            rows[0]["queue_s"],
            rows[0]["transfer_s"],
            rows[0]["compute_s"],
            rows[0]["start_s"],
            rows[0]["end_s"],
        ]
        assert r["makespan_s"] == job.result["timing"]["makespan_s"]
        assert r["predicted_s"] == job.result["plan"]["predicted_makespan_s"]
    body = board.snapshot_bytes()
    assert b"iVBORw0KGgo" not in body
    # 20 peers and 200 requests of up to 4 shares fit in well under 256 KiB
    assert len(body) < 256 * 1024, len(body)
    assert [r["error"] for r in reqs if r["state"] == "failed"] == ["overloaded"] * sum(
        r["state"] == "failed" for r in reqs
    )


def test_totals_count_each_job_once_and_survive_the_book_dropping_it() -> None:
    api = synthetic(n_jobs=50)
    board = ui.Board(api)
    assert board.scan() == 49  # the last one still runs
    assert board.scan() == 0  # nothing new: nothing counted twice
    v = board.version
    totals = board.totals.to_json()
    failed = sum(1 for j in api.jobs if j.state == "failed")
    assert totals["states"] == {"done": 49 - failed, "failed": failed}
    assert totals["failures"] == {"overloaded": failed}
    assert sum(totals["policies"].values()) == 49
    assert totals["makespan"]["n"] == 49 - failed == sum(totals["makespan"]["counts"])
    # the book drops the 30 oldest; a new job ends: only it is added
    del api.jobs[:30]
    api.jobs[-1].finish(
        {"plan": {"policy": "greedy", "mode": "batch"}, "timing": {"makespan_s": 2.0}}, 2000.0
    )
    assert board.scan() == 1 and board.version == v + 1
    after = board.totals.to_json()
    assert after["states"]["done"] == totals["states"]["done"] + 1
    assert after["policies"]["greedy"] == totals["policies"].get("greedy", 0) + 1


@pytest.mark.parametrize(
    ("x", "index"),
    [(0.0, 0), (0.0099, 0), (0.01, 1), (0.0177, 1), (0.017783, 2), (1.0, 9), (500.0, 19), (999.9, 20),
     (1000.0, 21), (5e6, 21)],
)  # fmt: skip
def test_histogram_bins(x: float, index: int) -> None:
    assert ui.HIST_EDGES[0] == 0.01 and ui.HIST_EDGES[-1] == 1000.0
    assert ui._bin(x) == index


# -- routes ------------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], FakeApi]]:
    api = synthetic(n_jobs=40)
    app = web.Application()
    ui.add_ui_routes(app, api)
    async with TestClient(TestServer(app)) as c:
        yield c, api


async def test_page_and_assets_are_served(
    client: tuple[TestClient[web.Request, web.Application], FakeApi],
) -> None:
    c, _ = client
    r = await c.get("/ui")
    assert r.status == 200 and r.content_type == "text/html"
    page = await r.text()
    assert '<script src="/ui/app.js">' in page and 'href="/ui/app.css"' in page
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    js = await c.get("/ui/app.js")
    assert js.content_type == "text/javascript" and "EventSource" in await js.text()
    css = await c.get("/ui/app.css")
    assert css.content_type == "text/css" and ".seg.c" in await css.text()


async def test_state_route_and_its_limit(
    client: tuple[TestClient[web.Request, web.Application], FakeApi],
) -> None:
    c, api = client
    snap = await (await c.get("/ui/state")).json()
    assert len(snap["requests"]) == 40 and len(snap["peers"]) == 20
    few = await (await c.get("/ui/state?requests=5")).json()
    assert [r["id"] for r in few["requests"]] == [j.id for j in reversed(api.jobs[-5:])]
    for bad in ("abc", "-1", "201", "1e3"):
        r = await c.get(f"/ui/state?requests={bad}")
        assert r.status == 400, bad
        assert (await r.json())["error"]["code"] == "out_of_range"


async def read_event(stream: Any) -> dict[str, Any]:
    """The next ``snapshot`` event's data."""
    kind, data = None, b""
    while True:
        line = await asyncio.wait_for(stream.readline(), 10.0)
        if not line:
            raise EOFError("stream ended")
        if line.startswith(b"event: "):
            kind = line[7:].strip()
        elif line.startswith(b"data: "):
            data = line[6:].strip()
        elif line == b"\n" and kind == b"snapshot":
            return dict(json.loads(data))


async def test_events_push_a_snapshot_when_a_job_ends(
    client: tuple[TestClient[web.Request, web.Application], FakeApi],
) -> None:
    c, api = client
    r = await c.get("/ui/events")
    assert r.headers["Content-Type"] == "text/event-stream"
    first = await read_event(r.content)
    running = api.jobs[-1]
    assert first["requests"][0]["id"] == running.id and first["requests"][0]["state"] == "running"
    running.finish({"plan": {"policy": "equal", "mode": "batch"}, "timing": {"makespan_s": 0.5}}, 0)
    for _ in range(20):  # periodic snapshots until the scanner sees the job end
        snap = await read_event(r.content)
        if snap["requests"][0]["state"] == "done":
            break
    else:
        raise AssertionError("the finished job never appeared")
    assert snap["totals"]["policies"]["equal"] >= 1
    r.close()


async def test_shutdown_ends_open_event_streams() -> None:
    app = web.Application()
    ui.add_ui_routes(app, synthetic(n_jobs=3))
    server = TestServer(app)
    await server.start_server()
    async with ClientSession() as s, s.get(server.make_url("/ui/events")) as r:
        await read_event(r.content)
        await asyncio.wait_for(server.close(), 15.0)  # would wait out the stream otherwise
        rest = await asyncio.wait_for(r.content.read(), 5.0)
        assert b"event: snapshot" not in rest or rest.endswith(b"\n\n")


# -- the proxy to another peer's view ----------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_proxy_reads_another_peers_view_with_the_callers_token() -> None:
    seen: list[str | None] = []

    @web.middleware
    async def need_token(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "no"}}, status=401
            )
        return await handler(request)

    api_b = synthetic(n_jobs=4)
    api_b.self_name = "p1"
    app_b = web.Application(middlewares=[need_token])
    ui.add_ui_routes(app_b, api_b)

    async def job(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["job_id"], "state": "done"})

    app_b.router.add_get("/v1/jobs/{job_id}", job)
    async with TestServer(app_b) as server_b:
        api_a = synthetic(n_jobs=2)
        assert server_b.port is not None
        api_a.http_of["p1"] = ("0.0.0.0", server_b.port)  # any-interface: reached via gossip host
        api_a.http_of["p2"] = ("127.0.0.1", closed_port())
        app_a = web.Application()
        ui.add_ui_routes(app_a, api_a)
        async with TestClient(TestServer(app_a)) as c:
            auth = {"Authorization": "Bearer s3cret"}
            r = await c.get("/ui/peers/p1/state", headers=auth)
            assert r.status == 200
            snap = await r.json()
            assert snap["self"] == "p1" and len(snap["requests"]) == 4
            r = await c.get("/ui/peers/p1/state?token=s3cret")  # the event-stream form
            assert r.status == 200
            r = await c.get("/ui/peers/p1/state")
            assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
            r = await c.get("/ui/peers/p1/jobs/00ab", headers=auth)
            assert (await r.json()) == {"id": "00ab", "state": "done"}
            r = await c.get("/ui/peers/p1/jobs/..%2Fmetrics", headers=auth)
            assert r.status in (400, 404)
            r = await c.get("/ui/peers/nobody/state")
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_peer"
            r = await c.get("/ui/peers/p2/state")
            assert r.status == 502 and (await r.json())["error"]["code"] == "peer_unreachable"
    assert seen[:3] == ["Bearer s3cret", "Bearer s3cret", None]


# -- a real node (do-nothing backend) ----------------------------------------------------------


async def test_real_node_request_shows_up_with_its_shares(tmp_path: Path) -> None:
    from peer.core.config import PeerConfig
    from peer.core.requests import parse_generate
    from peer.runtime.backend import NullBackend
    from peer.runtime.http import build_app
    from peer.runtime.node import Node

    if not hasattr(Node, "recent_jobs"):
        pytest.skip("Node.recent_jobs(limit) is not there yet (the dashboard's one node method)")
    cfg = PeerConfig(
        name="solo", listen=("127.0.0.1", 0), http=("127.0.0.1", 0), gossip="local", calibrate=False
    )
    node = Node(cfg, backend=NullBackend())
    await node.start()
    try:
        app = build_app(node)
        api: Any = node  # a UiApi once Node.recent_jobs exists
        ui.add_ui_routes(app, api)
        async with TestClient(TestServer(app)) as c:
            job = node.submit_generate(parse_generate({"count": 3, "steps": 2}, node.limits))
            await node.wait_job(job)
            assert job.state == "done", job.error
            snap = await (await c.get("/ui/state")).json()
            assert snap["self"] == "solo" and [p["name"] for p in snap["peers"]] == ["solo"]
            (req,) = snap["requests"]
            assert req["id"] == job.id and req["state"] == "done"
            assert job.result is not None
            assert len(req["shares"]) == len(job.result["timing"]["peers"]) >= 1
            assert sum(s[1] for s in req["shares"]) == 3
    finally:
        await node.stop()


# -- the report timeline ---------------------------------------------------------------------


SHARES = [
    {"peer": "a", "units": 3, "queue_s": 0.1, "transfer_s": 0.2, "compute_s": 0.5,
     "start_s": 0.1, "end_s": 1.0},
    {"peer": "b", "units": 5, "queue_s": 0.0, "transfer_s": 0.0, "compute_s": 0.7,
     "start_s": 0.0, "end_s": 0.7},
    {"peer": "a", "units": 1, "queue_s": 0.0, "transfer_s": 0.1, "compute_s": 0.2,
     "start_s": 1.0, "end_s": 1.3},
]  # fmt: skip


def test_timeline_segments_lay_parts_end_to_end() -> None:
    segs = timeline.segments(timeline.parse_shares(SHARES))
    got = [(s.share, s.row, s.kind, round(s.left, 6), round(s.width, 6)) for s in segs]
    assert got == [
        (0, 0, "queue", 0.1, 0.1),
        (0, 0, "transfer", 0.2, 0.2),
        (0, 0, "compute", 0.4, 0.5),
        (0, 0, "other", 0.9, 0.1),
        (1, 1, "compute", 0.0, 0.7),
        (2, 0, "transfer", 1.0, 0.1),
        (2, 0, "compute", 1.1, 0.2),
    ]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"queue_s": -1}, r"timing.peers\[1\].queue_s"),
        ({"end_s": None}, r"timing.peers\[1\].end_s"),
        ({"units": 1.5}, r"timing.peers\[1\].units"),
        ({"peer": ""}, r"timing.peers\[1\].peer"),
        ({"start_s": 2.0}, r"timing.peers\[1\]: end_s"),
    ],
)
def test_timeline_rejects_bad_rows(patch: dict[str, Any], message: str) -> None:
    rows = [dict(r) for r in SHARES]
    rows[1].update(patch)
    with pytest.raises(ValueError, match=message):
        timeline.parse_shares(rows)


def test_timeline_png(tmp_path: Path) -> None:
    from PIL import Image

    result = {"plan": {"predicted_makespan_s": 1.1}, "timing": {"makespan_s": 1.3, "peers": SHARES}}
    panels = [timeline.panel_of(result, "one"), timeline.panel_of(result, "two")]
    assert panels[0].predicted_s == 1.1 and panels[0].makespan_s == 1.3
    drawn = timeline.draw(panels, tmp_path / "t.png")
    assert [len(d) for d in drawn] == [7, 7]
    with Image.open(tmp_path / "t.png") as im:
        assert im.width == 990 and im.height > 200
        assert len(set(im.convert("RGB").getdata())) > 4  # drawn, not blank
    with pytest.raises(ValueError, match=r"result\.timing"):
        timeline.panel_of({}, "none")
    with pytest.raises(ValueError, match="no timelines"):
        timeline.draw([], tmp_path / "none.png")


def test_demo_and_scenario_reports_draw_the_slowest_request(tmp_path: Path) -> None:
    from peer.harness import demo, scenario_run

    fast = [dict(r, end_s=r["end_s"] / 2, compute_s=r["compute_s"] / 4) for r in SHARES]
    batch = [
        {"origin": "p0", "makespan_s": 0.65, "predicted_s": 0.6, "timing": fast},
        {"origin": "p1", "makespan_s": 1.3, "predicted_s": 1.1, "timing": SHARES},
    ]
    demo._timeline_chart({"policies": {"onnx": {"batch": batch}}}, tmp_path / "demo.png")
    assert (tmp_path / "demo.png").stat().st_size > 0
    records = [
        {"ok": True, "index": i, "origin": b["origin"], "images": 8, "mode": "batch",
         "makespan_s": b["makespan_s"], "predicted_s": b["predicted_s"], "timing": b["timing"]}
        for i, b in enumerate(batch)
    ] + [{"ok": False, "index": 2, "error": "connection"}]  # fmt: skip
    res = {"policies": {"onnx": {"records": records}, "local": {"records": records[2:]}}}
    (panel,) = scenario_run._timeline_panels(res)
    assert panel.title.startswith("onnx: request 1 from p1") and panel.makespan_s == 1.3
    assert len(timeline.segments(panel.shares)) == 7
