"""HTTP API validation: every bad-input class is a 4xx with a stable code; the server keeps
serving. Plumbing only: an in-process node (real gossip, RPC, executor, aiohttp) with a
do-nothing backend; the real model runs in tests/e2e."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession
from PIL import Image

from peer.core.config import Limits, ephemeral_config
from peer.core.costs import BIAS_COUNT_STEPS
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node


def png_b64(arr: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    cfg = ephemeral_config(
        "solo", limits=Limits(max_body_bytes=64 * 1024, max_count=16, max_steps=50, max_canvas=64)
    )
    n = Node(cfg, backend=NullBackend())
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def url(node: Node, path: str) -> str:
    return f"http://127.0.0.1:{node.http_port}{path}"


async def post(s: ClientSession, node: Node, path: str, data: Any, **kw: Any) -> tuple[int, Any]:
    if not isinstance(data, bytes | str):
        data = json.dumps(data)
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    async with s.post(url(node, path), data=data, headers=headers) as r:
        return r.status, await r.json()


IMG = np.full((32, 32), 80, dtype=np.uint8)
MASK = np.zeros((32, 32), dtype=np.uint8)

BAD_GENERATE = [
    (b"{not json", "invalid_json", 400),
    (b"[1, 2]", "not_an_object", 400),
    ({"count": "eight"}, "invalid_type", 400),
    ({"count": 1.5}, "invalid_type", 400),
    ({"count": True}, "invalid_type", 400),
    ({"count": 0}, "out_of_range", 400),
    ({"count": 10_000}, "out_of_range", 400),
    ({"steps": 51}, "out_of_range", 400),
    ({"seed": -1}, "out_of_range", 400),
    ({"label": 10}, "out_of_range", 400),
    ({"mode": "teleport"}, "invalid_value", 400),
    ({"policy": "oracle"}, "invalid_value", 400),
    ({"scheduler": 3}, "invalid_type", 400),
    ({"count": 2, "colour": "red"}, "unknown_field", 400),
    ({"count": 2, "mode": "tile"}, "mode_not_applicable", 400),
    ({"wait": "yes"}, "invalid_type", 400),
]


async def test_bad_generate_inputs_are_4xx_and_counted(node: Node) -> None:
    async with ClientSession() as s:
        for body, code, status in BAD_GENERATE:
            got_status, got = await post(s, node, "/v1/generate", body)
            assert (got_status, got["error"]["code"]) == (status, code), body
            assert got["error"]["message"]
        # still serving
        st, ok = await post(s, node, "/v1/generate", {"count": 2, "steps": 2, "mode": "local"})
        assert st == 200 and len(ok["result"]["images"]) == 2
        async with s.get(url(node, "/metrics")) as r:
            text = await r.text()
    line = next(x for x in text.splitlines() if x.startswith("amcoedge_http_bad_requests_total"))
    assert float(line.split()[-1]) == len(BAD_GENERATE)


async def test_bad_repair_inputs(node: Node) -> None:
    cases: list[tuple[Any, str, int]] = [
        ({"mask": png_b64(MASK)}, "missing_field", 400),
        ({"image": 5, "mask": png_b64(MASK)}, "invalid_type", 400),
        ({"image": "***", "mask": png_b64(MASK)}, "bad_base64", 400),
        ({"image": base64.b64encode(b"not a png").decode(), "mask": png_b64(MASK)}, "bad_png", 400),
        ({"image": png_b64(IMG, "BMP"), "mask": png_b64(MASK)}, "bad_png", 400),
        ({"image": png_b64(IMG), "mask": png_b64(MASK[:16])}, "size_mismatch", 400),
        ({"image": png_b64(IMG[:8, :8]), "mask": png_b64(MASK[:8, :8])}, "out_of_range", 400),
        (
            {"image": png_b64(np.zeros((100, 100))), "mask": png_b64(np.zeros((100, 100)))},
            "out_of_range",
            400,
        ),
        ({"image": png_b64(IMG), "mask": png_b64(MASK), "mode": "batch"}, "invalid_value", 400),
    ]
    async with ClientSession() as s:
        for body, code, status in cases:
            got_status, got = await post(s, node, "/v1/repair", body)
            assert (got_status, got["error"]["code"]) == (status, code)
        st, ok = await post(
            s,
            node,
            "/v1/repair",
            {"image": png_b64(IMG), "mask": png_b64(MASK), "mode": "local", "steps": 2},
        )
        assert st == 200 and ok["result"]["plan"]["mode"] == "local"


async def test_huge_body_wrong_type_unknown_route(node: Node) -> None:
    async with ClientSession() as s:
        big = json.dumps({"count": 1, "pad": "x" * 200_000})
        st, got = await post(s, node, "/v1/generate", big)
        assert (st, got["error"]["code"]) == (413, "body_too_large")
        st, got = await post(
            s,
            node,
            "/v1/generate",
            "count=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (st, got["error"]["code"]) == (415, "unsupported_media_type")
        async with s.get(url(node, "/v1/nothing")) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        async with s.get(url(node, "/v1/generate")) as r:
            assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"
        async with s.get(url(node, "/v1/jobs/deadbeef")) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        async with s.get(url(node, "/healthz")) as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_async_job_events_and_png(node: Node) -> None:
    async with ClientSession() as s:
        st, job = await post(s, node, "/v1/generate", {"count": 1, "steps": 2, "wait": False})
        assert st == 202 and job["state"] in ("queued", "running", "done")
        async with s.get(url(node, f"/v1/jobs/{job['id']}/events")) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            text = await r.text()
        assert "event: plan" in text and '"state":"done"' in text
        async with s.get(url(node, f"/v1/jobs/{job['id']}"), headers={"Accept": "image/png"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/png"
            assert (await r.read())[:8] == b"\x89PNG\r\n\x1a\n"
        async with s.get(url(node, "/v1/cluster")) as r:
            peers = (await r.json())["peers"]
        assert [p["name"] for p in peers] == ["solo"]
        assert {"status", "addresses", "capacity", "backlog", "age"} <= set(peers[0])


async def test_submit_cli_writes_pngs_and_json(node: Node, tmp_path: Any) -> None:
    from peer.cli import build_parser

    out, js = tmp_path / "imgs", tmp_path / "res.json"
    argv = ["submit", "--peer", f"127.0.0.1:{node.http_port}", "--count", "3", "--steps", "2"]
    argv += ["--mode", "local", "--out", str(out), "--json", str(js)]
    args = build_parser().parse_args(argv)
    assert await asyncio.to_thread(args.func, args) == 0
    assert len(list(out.glob("*.png"))) == 3
    assert json.loads(js.read_text())["state"] == "done"
    bad = build_parser().parse_args(
        ["submit", "--peer", f"127.0.0.1:{node.http_port}", "--count", "0"]
    )
    assert await asyncio.to_thread(bad.func, bad) == 1


async def test_malformed_rpc_and_gossip_input_is_counted_in_metrics(node: Node) -> None:
    host, port = "127.0.0.1", node.rpc_port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\xc1" * 16)  # 0xc1 is never valid msgpack
    await writer.drain()
    await reader.read()  # the server answers with an error notification and closes this stream
    writer.close()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(host, port)
    )
    transport.sendto(b"\x00not a gossip datagram")
    transport.close()
    async with ClientSession() as s:
        for _ in range(50):
            async with s.get(url(node, "/metrics")) as r:
                text = await r.text()
            samples = dict(
                line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
            )
            rpc_bad = samples.get('amcoedge_rpc_server_events_total{event="malformed_frames"}')
            gossip_bad = [
                float(v)
                for k, v in samples.items()
                if k.startswith("amcoedge_gossip_events_total") and "malformed" in k
            ]
            if rpc_bad and float(rpc_bad) >= 1 and gossip_bad and max(gossip_bad) >= 1:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"malformed input not counted:\n{text}")
        async with s.get(url(node, "/healthz")) as r:
            assert r.status == 200


async def test_finished_jobs_teach_their_modes_bias(node: Node) -> None:
    body = {"count": 1, "steps": BIAS_COUNT_STEPS, "mode": "local"}
    async with ClientSession() as s:
        st, _ = await post(s, node, "/v1/generate", {**body, "steps": 1})  # a warm-up
        assert st == 200
        for _ in range(3):
            st, _ = await post(s, node, "/v1/generate", body)
            assert st == 200
        async with s.get(url(node, "/v1/cluster")) as r:
            bias = (await r.json())["prediction_bias"]
        # keyed by request kind and mode; the 1-step warm-up is not counted as a run
        assert set(bias) == {"generate/local"}
        learned = bias["generate/local"]
        assert learned["runs"] == 3 and learned["factor"] > 0
        assert node.planner.bias("generate", "local") == pytest.approx(learned["factor"], rel=1e-3)
        assert node.planner.bias("repair", "local") == 1.0  # a repair's local learns apart
        # the next local plan's prediction carries the learned factor
        st, res = await post(s, node, "/v1/generate", body)
    assert st == 200
    assert res["result"]["plan"]["detail"]["bias"] == pytest.approx(learned["factor"], rel=1e-3)


async def test_parallel_steps_on_a_backend_without_latent_hand_off_is_a_400(node: Node) -> None:
    # the fuzzer found it as a 500 (AttributeError) once count > 1 reached parallel steps
    async with ClientSession() as s:
        st, body = await post(s, node, "/v1/generate", {"count": 2, "steps": 4, "mode": "parallel"})
        assert st == 400 and body["error"]["code"] == "mode_not_applicable"
        st, res = await post(s, node, "/v1/generate", {"count": 2, "steps": 4, "mode": "auto"})
    assert st == 200 and res["result"]["plan"]["mode"] != "parallel"
    assert "parallel" not in res["result"]["plan"]["alternatives"]
