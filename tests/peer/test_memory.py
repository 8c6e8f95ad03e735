"""Bounded memory: the pure estimator and budget (peer.core.memory), and the refusal through
HTTP before any work starts (413 when a request can never fit, 503 + Retry-After when it
cannot fit beside the requests in flight, ``auto`` steered to ``tile``)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession
from PIL import Image

from peer.core.config import ConfigError, Limits, ephemeral_config, load_peer_config
from peer.core.memory import (
    MIB,
    Estimate,
    MemoryBook,
    MemoryModel,
    MemoryRefused,
    budget_bytes,
    for_generate,
    for_repair,
    tile_windows,
)
from peer.diffusion.tiles import plan_tiles
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node

M = MemoryModel()


# -- the estimator (pure) ------------------------------------------------------------------


@pytest.mark.parametrize("side", [(16, 16), (17, 16), (24, 40), (64, 64), (100, 37), (128, 128)])
def test_tile_windows_counts_what_the_tiler_cuts(side: tuple[int, int]) -> None:
    assert tile_windows(*side, 16) == len(plan_tiles(*side, 16, 4))


def test_generation_grows_with_count_up_to_one_forward_group() -> None:
    ests = [for_generate(M, n) for n in (1, 8, 64, 128, 1024)]
    assert [e.compute for e in ests] == sorted(e.compute for e in ests)
    assert ests[3].compute == ests[4].compute  # 128 rows per forward at most
    assert ests[4].held > ests[3].held  # held results still grow with count


def test_tiled_repair_is_bounded_whole_canvas_is_quadratic() -> None:
    tiled = [for_repair(M, s, s, False, "tile").compute for s in (64, 128, 256)]
    assert tiled[0] == tiled[1] == tiled[2]  # one group of windows, whatever the canvas
    whole = [for_repair(M, s, s, False, "local").compute for s in (32, 64, 128)]
    assert whole[2] / whole[1] > 12 and whole[1] / whole[0] > 10  # attention: ~P**2
    assert for_repair(M, 128, 128, False, "local").total > 8 * 1024 * MIB
    # an unlabelled window runs every class: ten times the rows of a labelled one
    lab = for_repair(M, 64, 64, True, "local").compute
    unl = for_repair(M, 64, 64, False, "local").compute
    assert unl == pytest.approx(10 * lab, rel=1e-6)
    # auto is held as tiled here (the node holds auto for the whole canvas when that fits)
    assert for_repair(M, 128, 128, False, "auto") == for_repair(M, 128, 128, False, "tile")


def test_scaled_model_scales_the_forward() -> None:
    big = MemoryModel.for_model(native=16, channels=1, classes=10, widest=128, forward_rows=128)
    assert big.row_bytes(256) == pytest.approx(2 * M.row_bytes(256))


def test_book_sums_held_and_counts_one_forward() -> None:
    book = MemoryBook(budget=1000 * MIB, baseline=400 * MIB)
    book.admit("a", Estimate(held=10 * MIB, compute=300 * MIB))
    book.admit("b", Estimate(held=20 * MIB, compute=100 * MIB))
    assert book.in_flight() == 330 * MIB  # 10 + 20 held, the larger forward once
    assert len(book) == 2
    # fits beside: 400 + 30 + 5 held + max(300, 200) = 735
    book.check(Estimate(held=5 * MIB, compute=200 * MIB))
    # 400 + 30 + 300 held + 300 = 1030 > 1000, but alone 400 + 300 = 700 fits: "now"
    with pytest.raises(MemoryRefused) as now:
        book.check(Estimate(held=300 * MIB, compute=0))
    assert now.value.now
    # alone 400 + 700 > 1000: never
    with pytest.raises(MemoryRefused) as never:
        book.admit("c", Estimate(held=0, compute=700 * MIB))
    assert not never.value.now and "c" not in book._held
    assert book.release("a") is not None and book.release("a") is None
    book.check(Estimate(held=300 * MIB, compute=0))  # fits once "a" is gone
    off = MemoryBook(budget=0, baseline=400 * MIB)
    off.admit("x", Estimate(held=10**12, compute=10**12))  # 0: no check, still counted
    assert off.in_flight() == 2 * 10**12


def test_budget_default_and_config() -> None:
    assert budget_bytes(None, 500 * MIB) == 1024 * MIB
    assert budget_bytes(None, 3000 * MIB) == 3512 * MIB  # a larger model keeps headroom
    assert budget_bytes(0, 500 * MIB) == 0
    assert budget_bytes(700, 500 * MIB) == 700 * MIB
    cfg = load_peer_config({"name": "a", "memory_budget_mib": 800})
    assert cfg.memory_budget_mib == 800
    assert load_peer_config({"name": "a"}).memory_budget_mib is None
    with pytest.raises(ConfigError, match="memory_budget_mib"):
        load_peer_config({"name": "a", "memory_budget_mib": -1})
    with pytest.raises(ConfigError, match="integer"):
        load_peer_config({"name": "a", "memory_budget_mib": "lots"})


# -- refusal through HTTP --------------------------------------------------------------------


def png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def _node(budget_mib: int | None) -> Node:
    cfg = ephemeral_config(
        "solo", memory_budget_mib=budget_mib, limits=Limits(max_canvas=128, max_count=64)
    )
    n = Node(cfg, backend=NullBackend())
    await n.start()
    return n


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = await _node(None)
    try:
        yield n
    finally:
        await n.stop()


async def post(s: ClientSession, node: Node, path: str, body: Any) -> tuple[int, Any, Any]:
    url = f"http://127.0.0.1:{node.http_port}{path}"
    async with s.post(
        url, data=json.dumps(body), headers={"Content-Type": "application/json"}
    ) as r:
        return r.status, await r.json(), r.headers


def repair_body(side: int, mode: str, label: int | None = None) -> dict[str, Any]:
    img = np.full((side, side), 90, dtype=np.uint8)
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255
    body = {"image": png_b64(img), "mask": png_b64(mask), "mode": mode, "steps": 2, "seed": 1}
    if label is not None:
        body["label"] = label
    return body


async def test_a_request_that_can_never_fit_is_a_413_before_work() -> None:
    n = await _node(1)  # 1 MiB: below any process's baseline
    try:
        assert n.memory.budget == MIB and n.memory.baseline > MIB
        async with ClientSession() as s:
            st, got, _ = await post(s, n, "/v1/generate", {"count": 1, "steps": 2})
            assert (st, got["error"]["code"]) == (413, "too_large")
            assert "--memory-budget-mib" in got["error"]["message"]
        assert n.jobs.active() == 0 and len(n.memory) == 0
        assert n.rpc_stats["memory_refused"] == 1
    finally:
        await n.stop()


async def test_whole_canvas_local_repair_is_413_tiled_is_served(node: Node) -> None:
    # default budget: a 128 px unlabelled repair as one window needs ~10 GiB
    async with ClientSession() as s:
        st, got, _ = await post(s, node, "/v1/repair", repair_body(128, "local"))
        assert (st, got["error"]["code"]) == (413, "too_large")
        st, got, _ = await post(s, node, "/v1/repair", repair_body(128, "tile"))
        assert st == 200, got
        assert got["result"]["plan"]["mode"] == "tile"
        # auto would be free to pick the whole canvas: it is steered to tile instead
        st, got, _ = await post(s, node, "/v1/repair", repair_body(128, "auto"))
        assert st == 200, got
        assert got["result"]["plan"]["mode"] == "tile"
    assert len(node.memory) == 0  # every job released what it held


async def test_no_room_beside_requests_in_flight_is_503_with_retry_after(node: Node) -> None:
    room = node.memory.budget - node.memory.baseline
    # something in flight holds all but 1 MiB of the budget
    node.memory.admit("elsewhere", Estimate(held=room - MIB, compute=0))
    async with ClientSession() as s:
        st, got, headers = await post(s, node, "/v1/generate", {"count": 4, "steps": 2})
        assert (st, got["error"]["code"]) == (503, "overloaded")
        assert int(headers["Retry-After"]) >= 1
        assert "in flight" in got["error"]["message"]
        node.memory.release("elsewhere")
        st, got, _ = await post(s, node, "/v1/generate", {"count": 4, "steps": 2})
        assert st == 200, got
    assert node.rpc_stats["memory_refused_now"] == 1
    health = node.health_json()["memory"]
    assert health["budget_mib"] == node.memory.budget // MIB and health["in_flight_mib"] == 0
