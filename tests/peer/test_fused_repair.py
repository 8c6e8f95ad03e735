"""Fused tiles through the request path and losing a band holder.

- ``run_fused`` replaces a holder whose call fails, that membership declares lost, or that
  overruns its deadline: the band re-opens elsewhere from its last checkpoint, the strips sent
  since are replayed, and the image is bit-identical to the failure-free run.
- POST /v1/repair with ``mode: fused`` on two in-process peers gives ``repair_fused``'s image
  for the bands the response names; a holder failing mid-run is replaced there too; bad modes
  are a clear 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import numpy as np
import pytest
from aiohttp import ClientSession
from PIL import Image

from peer.core.config import ephemeral_config
from peer.core.costs import CostTracker
from peer.diffusion import Backend, load_backend
from peer.diffusion.checks import centre_mask
from peer.diffusion.fused import repair_fused
from peer.harness.bench_shares import canvas_of_digits
from peer.runtime.fused_sessions import Call, FusedSessions, HolderLost, run_fused
from peer.runtime.node import Node

pytestmark = pytest.mark.timeout(600)

SIDE = 48
STEPS = 8


@pytest.fixture(scope="module")
def shipped() -> Backend:
    return load_backend(device="cpu", threads=1, engine="onnx")


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    return canvas_of_digits(SIDE), centre_mask(SIDE, 0.5)


def wire(book: FusedSessions) -> Call:
    """A holder over msgpack, in this process."""

    async def call(method: str, params: dict[str, Any]) -> Any:
        q = msgpack.unpackb(msgpack.packb(params, use_bin_type=True), raw=False)
        if method == "fused.open":
            out = book.open(q, 0.0)
        elif method == "fused.step":
            out = book.step(q, 0.0)
        else:
            out = book.close(q)
        return msgpack.unpackb(msgpack.packb(out, use_bin_type=True), raw=False)

    return call


def failing(inner: Call, method: str, at: int, how: str = "raise") -> Call:
    """``inner``, except that its ``at``-th call of ``method`` (from 1) fails: raises a
    connection error, or (``hang``) never answers."""
    seen = 0

    async def call(m: str, params: dict[str, Any]) -> Any:
        nonlocal seen
        if m == method:
            seen += 1
            if seen == at:
                if how == "hang":
                    await asyncio.Event().wait()
                raise ConnectionResetError("holder went away")
        return await inner(m, params)

    return call


async def fused(
    shipped: Backend,
    scene: tuple[np.ndarray, np.ndarray],
    calls: list[tuple[str, Call]],
    **kw: Any,
) -> Any:
    canvas, mask = scene
    return await run_fused(shipped, canvas, mask, STEPS, 5, calls, halo=8, label=3, **kw)


@pytest.fixture(scope="module")
def reference(shipped: Backend, scene: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    canvas, mask = scene
    return repair_fused(shipped, canvas, mask, STEPS, 5, parts=3, halo=8, label=3).image


@pytest.mark.parametrize(
    ("method", "at", "from_step", "replayed"),
    [
        ("fused.step", 2, None, 2),  # before the first checkpoint: from the open, 2 steps
        ("fused.step", 5, 3, 2),  # checkpoint after round 3: rounds 4 and 5 replayed
        ("fused.open", 1, None, 0),
        ("fused.close", 1, 6, 2),  # rounds 7 and 8 (the last) replayed, then closed there
    ],
)
async def test_a_failing_holder_is_replaced_and_the_image_is_identical(
    shipped: Backend,
    scene: tuple[np.ndarray, np.ndarray],
    reference: np.ndarray,
    method: str,
    at: int,
    from_step: int | None,
    replayed: int,
) -> None:
    books = [FusedSessions(shipped) for _ in range(3)]
    spare = FusedSessions(shipped)
    asked: list[tuple[int, set[str]]] = []

    def replace(band: int, avoid: set[str]) -> tuple[str, Call]:
        asked.append((band, set(avoid)))
        return "spare", wire(spare)

    calls = [
        ("p0", wire(books[0])),
        ("p1", failing(wire(books[1]), method, at)),
        ("p2", wire(books[2])),
    ]
    got = await fused(shipped, scene, calls, checkpoint_every=3, replace=replace)
    assert np.array_equal(got.image, reference)
    assert got.holders == ["p0", "spare", "p2"]
    assert asked == [(1, {"p1"})]
    [r] = got.replans
    assert (r["peer"], r["band"], r["to"]) == ("p1", 1, "spare")
    assert (r["from_step"], r["replayed"]) == (from_step, replayed)
    assert "ConnectionResetError" in r["reason"]
    assert got.checkpoints == 3 * 2  # rounds 3 and 6 of 8, every band
    assert all(not b.sessions for b in (*books, spare))  # the dropped session closed too


async def test_a_holder_membership_declares_lost_is_replaced(
    shipped: Backend, scene: tuple[np.ndarray, np.ndarray], reference: np.ndarray
) -> None:
    books = [FusedSessions(shipped) for _ in range(3)]
    steps_seen = {"p2": 0}
    inner = wire(books[2])

    async def p2(method: str, params: dict[str, Any]) -> Any:
        if method == "fused.step":
            steps_seen["p2"] += 1
        return await inner(method, params)

    def lost(peer: str, late: bool) -> str | None:
        return "p2 declared dead by gossip" if peer == "p2" and steps_seen["p2"] >= 4 else None

    calls = [("p0", wire(books[0])), ("p1", wire(books[1])), ("p2", p2)]
    here = FusedSessions(shipped)
    got = await fused(
        shipped,
        scene,
        calls,
        checkpoint_every=2,
        lost=lost,
        replace=lambda band, avoid: ("origin", wire(here)),
    )
    assert np.array_equal(got.image, reference)
    assert got.holders == ["p0", "p1", "origin"]
    assert [(r["peer"], r["from_step"], r["reason"]) for r in got.replans] == [
        ("p2", 4, "p2 declared dead by gossip")
    ]


async def test_a_holder_past_its_deadline_is_replaced(
    shipped: Backend, scene: tuple[np.ndarray, np.ndarray], reference: np.ndarray
) -> None:
    books = [FusedSessions(shipped) for _ in range(3)]
    here = FusedSessions(shipped)
    calls = [
        ("p0", failing(wire(books[0]), "fused.step", 3, how="hang")),
        ("p1", wire(books[1])),
        ("p2", wire(books[2])),
    ]
    got = await fused(
        shipped,
        scene,
        calls,
        checkpoint_every=2,
        replace=lambda band, avoid: ("origin", wire(here)),
        step_s=[0.001] * 3,
        exchange_s=[0.0] * 3,
        slack_s=0.3,
    )
    assert np.array_equal(got.image, reference)
    [r] = got.replans
    assert r["peer"] == "p0" and "overran fused.step" in r["reason"]


async def test_without_a_prediction_a_slow_holder_has_no_deadline(
    shipped: Backend, scene: tuple[np.ndarray, np.ndarray], reference: np.ndarray
) -> None:
    """``bench shares`` drives run_fused without predictions: a slow call is waited for."""
    books = [FusedSessions(shipped) for _ in range(3)]
    inner = wire(books[1])

    async def slow(method: str, params: dict[str, Any]) -> Any:
        if method == "fused.step":
            await asyncio.sleep(0.2)
        return await inner(method, params)

    def replace(band: int, avoid: set[str]) -> tuple[str, Call]:
        raise AssertionError("nothing was lost")

    calls = [("p0", wire(books[0])), ("p1", slow), ("p2", wire(books[2]))]
    got = await fused(shipped, scene, calls, replace=replace, slack_s=0.05)
    assert np.array_equal(got.image, reference) and got.replans == []


async def test_without_a_replacement_a_loss_is_an_error(
    shipped: Backend, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    books = [FusedSessions(shipped) for _ in range(2)]
    calls = [("p0", wire(books[0])), ("p1", failing(wire(books[1]), "fused.step", 2))]
    with pytest.raises(HolderLost, match="no holder left"):
        await fused(shipped, scene, calls)


# -- through the node and HTTP ------------------------------------------------------------------


def png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def png_of(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L"))


@pytest.fixture
async def pair(shipped: Backend) -> AsyncIterator[tuple[Node, Node]]:
    # a step cost (nominal, no calibration) at which two bands are predicted to beat one
    a = Node(ephemeral_config("a", (), share_timeout_s=120.0), backend=shipped)
    a.cost = CostTracker(0.004, 0.02)
    await a.start()
    b = Node(ephemeral_config("b", (("127.0.0.1", a.rpc_port),)), backend=shipped)
    b.cost = CostTracker(0.004, 0.02)
    await b.start()
    try:
        for _ in range(300):
            if a.gossip is not None and len(a.gossip.view().alive()) == 2:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the peers did not see each other")
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def post(node: Node, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        ClientSession() as s,
        s.post(f"http://127.0.0.1:{node.http_port}{path}", data=json.dumps(body)) as r,
    ):
        return r.status, await r.json()


def body(scene: tuple[np.ndarray, np.ndarray], **kw: Any) -> dict[str, Any]:
    canvas, mask = scene
    return {
        "image": png_b64(canvas),
        "mask": png_b64(mask.astype(np.uint8) * 255),
        "steps": STEPS,
        "seed": 5,
        "label": 3,
        "policy": "equal",
        **kw,
    }


async def test_http_fused_repair_is_the_in_process_fused_image(
    shipped: Backend, scene: tuple[np.ndarray, np.ndarray], pair: tuple[Node, Node]
) -> None:
    a, _ = pair
    status, job = await post(a, "/v1/repair", body(scene, mode="fused"))
    assert status == 200, job
    res = job["result"]
    assert res["plan"]["mode"] == "fused"
    f = res["fused"]
    assert sorted(f["holders"]) == ["a", "b"] and len(f["bands"]) == 2
    assert f["exchanges"] == (STEPS - f["warmup"] - 1) // f["sync_every"]
    assert f["bytes_per_step"] > 0 and res["replans"] == []
    canvas, mask = scene
    want = repair_fused(
        shipped,
        canvas,
        mask,
        STEPS,
        5,
        parts=2,
        halo=f["halo"],
        sync_every=f["sync_every"],
        warmup=f["warmup"],
        label=3,
    )
    assert np.array_equal(png_of(res["images"][0]), want.image)


async def test_http_fused_repair_replaces_a_failing_holder(
    shipped: Backend, scene: tuple[np.ndarray, np.ndarray], pair: tuple[Node, Node]
) -> None:
    a, b = pair
    assert b.server is not None
    inner = b._fused_rpc["fused.step"]
    seen = 0

    async def step(params: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == 3:
            raise ConnectionResetError("b lost its band")
        return await inner(params)

    b.server.handlers["fused.step"] = step
    status, job = await post(a, "/v1/repair", body(scene, mode="fused"))
    assert status == 200, job
    res = job["result"]
    [r] = res["replans"]
    assert r["peer"] == "b" and r["to"] == "a"
    assert res["fused"]["holders"] == ["a", "a"]
    f = res["fused"]
    canvas, mask = scene
    want = repair_fused(
        shipped, canvas, mask, STEPS, 5, parts=2, halo=f["halo"], warmup=f["warmup"], label=3
    )
    assert np.array_equal(png_of(res["images"][0]), want.image)


@pytest.mark.parametrize(
    ("path", "extra", "status", "code"),
    [
        ("/v1/repair", {"mode": "fusion"}, 400, "invalid_value"),
        ("/v1/repair", {"mode": 3}, 400, "invalid_type"),
    ],
)
async def test_bad_modes_are_clear_errors(
    scene: tuple[np.ndarray, np.ndarray],
    pair: tuple[Node, Node],
    path: str,
    extra: dict[str, Any],
    status: int,
    code: str,
) -> None:
    a, _ = pair
    got, err = await post(a, path, body(scene, **extra))
    assert (got, err["error"]["code"]) == (status, code)
    assert "fused" in err["error"]["message"] or code == "invalid_type"


async def test_fused_where_it_does_not_apply_is_a_400(
    scene: tuple[np.ndarray, np.ndarray], pair: tuple[Node, Node]
) -> None:
    a, _ = pair
    got, err = await post(a, "/v1/generate", {"count": 1, "steps": 2, "mode": "fused"})
    assert (got, err["error"]["code"]) == (400, "mode_not_applicable")
    low = (scene[0][:16], scene[1][:16])
    got, err = await post(a, "/v1/repair", body(low, mode="fused"))
    assert (got, err["error"]["code"]) == (400, "mode_not_applicable")
