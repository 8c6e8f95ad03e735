"""Text pipelines served by real peers: three nodes on loopback load a tiny Stable Diffusion
pipeline through ``--model`` (``PeerConfig.model``), and every request goes through the normal
submit path (planner, shares over RPC, re-planning). Checked: the official ``openai`` client
gets ``n`` images, a batch split and a steps relay over three peers are bit-identical to one
peer, a tiled inpainting over three peers answers with the canvas asked and equals the one-peer
tiled edit, bad fields are clear 4xx, and losing a peer mid-request still completes."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from PIL import Image

from peer.core.config import ephemeral_config
from peer.diffusion.pipeline.backend import load_pipeline_backend
from peer.diffusion.pipeline.text import TextConditioning
from peer.diffusion.pipeline.tiny import make_tiny_sd
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node

pytestmark = pytest.mark.timeout(120)
PROMPT = "a red house by a lake"


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sd")
    return {"t2i": make_tiny_sd(root / "t2i"), "inpaint": make_tiny_sd(root / "inp", inpaint=True)}


async def _cluster(model: Path, n: int = 3) -> list[Node]:
    first = Node(ephemeral_config("p0", model=str(model), share_timeout_s=60.0))
    await first.start()
    nodes = [first]
    for i in range(1, n):
        node = Node(
            ephemeral_config(
                f"p{i}", (("127.0.0.1", first.rpc_port),), model=str(model), share_timeout_s=60.0
            )
        )
        await node.start()
        nodes.append(node)
    for _ in range(400):
        if all(x.gossip is not None and len(x.gossip.view().alive()) == n for x in nodes):
            return nodes
        await asyncio.sleep(0.02)
    raise AssertionError("peers did not see each other")


async def _stop(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()


@pytest.fixture
async def t2i(pipes: dict[str, Path]) -> AsyncIterator[list[Node]]:
    nodes = await _cluster(pipes["t2i"])
    yield nodes
    await _stop(nodes)


@pytest.fixture
async def inpaint(pipes: dict[str, Path]) -> AsyncIterator[list[Node]]:
    nodes = await _cluster(pipes["inpaint"])
    yield nodes
    await _stop(nodes)


def _url(node: Node) -> str:
    return f"http://127.0.0.1:{node.http_port}"


def _b64png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str | None) -> np.ndarray:
    assert b64 is not None
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"))


async def _post(node: Node, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(_url(node) + path, json=body, timeout=aiohttp.ClientTimeout(total=90)) as r,
    ):
        return r.status, await r.json()


def _peers(result: dict[str, Any]) -> set[str]:
    return {s["peer"] for s in result["plan"]["shares"]}


async def test_openai_client_gets_n_images_and_batch_split_is_exact(t2i: list[Node]) -> None:
    client = openai.AsyncOpenAI(base_url=_url(t2i[2]) + "/v1", api_key="unused", max_retries=0)
    try:
        resp = await client.images.generate(
            prompt=PROMPT, n=4, size="32x32", extra_body={"steps": 3, "seed": 7}
        )
    finally:
        await client.close()
    got = [_img(d.b64_json) for d in resp.data or []]
    assert len(got) == 4 and all(g.shape == (32, 32, 3) for g in got)
    assert len({g.tobytes() for g in got}) == 4  # four seeds, four images

    body = {"prompt": PROMPT, "count": 4, "steps": 3, "seed": 7}
    st, split = await _post(t2i[1], "/v1/generate", {**body, "mode": "batch", "policy": "equal"})
    assert st == 200, split
    res = split["result"]
    assert _peers(res) == {"p0", "p1", "p2"} and res["labels"] is None
    st, alone = await _post(t2i[1], "/v1/generate", {**body, "mode": "local"})
    assert st == 200, alone
    split_imgs = [_img(b) for b in res["images"]]
    alone_imgs = [_img(b) for b in alone["result"]["images"]]
    for a, b, c in zip(split_imgs, alone_imgs, got, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


async def test_steps_relay_over_three_peers_is_exact(t2i: list[Node]) -> None:
    body = {"prompt": PROMPT, "negative_prompt": "blurry", "count": 1, "steps": 4, "seed": 3}
    body |= {"guidance_scale": 9.0, "width": 64, "height": 32}
    st, relay = await _post(t2i[0], "/v1/generate", {**body, "mode": "steps", "policy": "equal"})
    assert st == 200, relay
    assert _peers(relay["result"]) == {"p0", "p1", "p2"}
    st, alone = await _post(t2i[0], "/v1/generate", {**body, "mode": "local"})
    assert st == 200, alone
    a, b = _img(relay["result"]["images"][0]), _img(alone["result"]["images"][0])
    assert a.shape == (32, 64, 3) and np.array_equal(a, b)


def _canvas(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    mask[8 : h - 8, 12 : w - 12] = True
    return image, mask


async def test_tiled_inpainting_over_three_peers(
    inpaint: list[Node], pipes: dict[str, Path]
) -> None:
    h, w = 64, 96
    image, mask = _canvas(h, w, 1)
    body = {
        "image": _b64png(image),
        "mask": _b64png(np.where(mask, 255, 0).astype(np.uint8)),
        "prompt": PROMPT,
        "steps": 3,
        "seed": 4,
        "mode": "tile",
        "policy": "equal",
    }
    st, out = await _post(inpaint[2], "/v1/repair", body)
    assert st == 200, out
    res = out["result"]
    assert _peers(res) == {"p0", "p1", "p2"} and res["tiles"] == 15
    got = _img(res["images"][0])
    assert got.shape == (h, w, 3)
    be = load_pipeline_backend(pipes["inpaint"])
    cond = be.encode(TextConditioning(PROMPT, "", 7.5))
    ref = be.edit_canvas(cond, image, mask, seed=4, steps=3)
    assert np.array_equal(got, ref)  # the tiles of three peers blend to the one-peer canvas
    assert np.array_equal(got[~mask], image[~mask])


async def test_openai_edits_on_an_inpainting_cluster(inpaint: list[Node]) -> None:
    image, mask = _canvas(32, 32, 2)
    rgba = np.dstack([np.zeros_like(image), np.where(mask, 0, 255).astype(np.uint8)])
    client = openai.AsyncOpenAI(base_url=_url(inpaint[0]) + "/v1", api_key="unused", max_retries=0)

    def png(arr: np.ndarray) -> bytes:
        return base64.b64decode(_b64png(arr))

    try:
        resp = await client.images.edit(
            image=("image.png", png(image), "image/png"),
            mask=("mask.png", png(rgba), "image/png"),
            prompt=PROMPT,
            n=2,
            extra_body={"steps": 2, "seed": 11},
        )
        with pytest.raises(openai.UnprocessableEntityError, match="inpainting pipeline"):
            await client.images.generate(prompt=PROMPT, extra_body={"steps": 2})  # edits only
    finally:
        await client.close()
    got = [_img(d.b64_json) for d in resp.data or []]
    assert len(got) == 2 and all(g.shape == (32, 32, 3) for g in got)
    assert all(np.array_equal(g[~mask], image[~mask]) for g in got)
    assert not np.array_equal(got[0], got[1])


async def test_bad_fields_are_clear_4xx(t2i: list[Node]) -> None:
    node = t2i[0]
    st, out = await _post(node, "/v1/generate", {"prompt": PROMPT, "label": 3})
    assert st == 422 and out["error"]["code"] == "unsupported_field", out
    assert "label" in out["error"]["message"]
    st, out = await _post(node, "/v1/generate", {"prompt": PROMPT, "width": 30})
    assert st == 400 and "multiple of 8" in out["error"]["message"], out
    st, out = await _post(node, "/v1/generate", {"prompt": PROMPT, "colour": "red"})
    assert st == 400 and out["error"]["code"] == "unknown_field", out
    st, out = await _post(node, "/v1/generate", {"count": 1})
    assert st == 400 and out["error"]["code"] == "missing_field", out  # a prompt is required
    st, out = await _post(node, "/v1/generate", {"prompt": PROMPT, "mode": "parallel"})
    assert st == 400 and out["error"]["code"] == "mode_not_applicable", out


async def test_digits_model_refuses_text_fields() -> None:
    node = Node(ephemeral_config("digits"), backend=NullBackend())
    await node.start()
    client = openai.AsyncOpenAI(base_url=_url(node) + "/v1", api_key="unused", max_retries=0)
    try:
        st, out = await _post(node, "/v1/generate", {"count": 1, "prompt": PROMPT})
        assert st == 422 and out["error"]["code"] == "unsupported_field", out
        assert "prompt" in out["error"]["message"]
        with pytest.raises(openai.UnprocessableEntityError) as err:
            await client.images.generate(prompt=PROMPT)
        assert "not a text pipeline" in str(err.value)
        st, out = await _post(node, "/v1/generate", {"count": 1, "steps": 2})
        assert st == 200, out  # the digits requests are as before
    finally:
        await client.close()
        await node.stop()


async def test_losing_a_peer_mid_request_still_completes(t2i: list[Node]) -> None:
    origin, victim = t2i[0], t2i[2]
    body = {"prompt": PROMPT, "count": 6, "steps": 6, "seed": 21}
    task = asyncio.ensure_future(
        _post(origin, "/v1/generate", {**body, "mode": "batch", "policy": "equal"})
    )
    for _ in range(2000):  # until the victim holds its share
        if victim.executor.active:
            break
        await asyncio.sleep(0.005)
    assert victim.executor.active, "the victim never got a share"
    await victim.stop()
    st, out = await asyncio.wait_for(task, 90)
    assert st == 200, out
    res = out["result"]
    assert any(r["peer"] == "p2" for r in res["replans"]), res["replans"]
    st, alone = await _post(origin, "/v1/generate", {**body, "mode": "local"})
    assert st == 200
    assert res["images"] == alone["result"]["images"]
