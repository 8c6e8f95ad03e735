"""The OpenAI images API, driven by the official `openai` client against a real aiohttp server."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from peer.diffusion.errors import InvalidRequestError
from peer.diffusion.pipeline.backend import PipelineBackend, load_pipeline_backend
from peer.diffusion.pipeline.text import TextParams
from peer.diffusion.pipeline.tiny import make_tiny_sd
from peer.runtime.backend import NullBackend
from peer.runtime.openai_api import LocalImagesApi, add_openai_routes


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PipelineBackend]:
    root = tmp_path_factory.mktemp("sd")
    return {
        "t2i": load_pipeline_backend(make_tiny_sd(root / "t2i")),
        "inpaint": load_pipeline_backend(make_tiny_sd(root / "inpaint", inpaint=True)),
    }


async def _client(backend: object) -> tuple[TestServer, openai.AsyncOpenAI]:
    app = web.Application()
    add_openai_routes(app, LocalImagesApi(backend, max_steps=50))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
    )
    return server, client


@pytest.fixture
async def t2i_client(backends: dict[str, PipelineBackend]) -> AsyncIterator[openai.AsyncOpenAI]:
    server, client = await _client(backends["t2i"])
    yield client
    await client.close()
    await server.close()


def _decode(b64: str | None) -> np.ndarray:
    assert b64 is not None
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


async def test_generations_through_the_openai_client(
    t2i_client: openai.AsyncOpenAI, backends: dict[str, PipelineBackend]
) -> None:
    resp = await t2i_client.images.generate(
        prompt="a red house",
        n=4,
        size="32x32",  # type: ignore[arg-type]
        response_format="b64_json",
        extra_body={"steps": 2, "seed": 11, "guidance_scale": 6.0, "negative_prompt": "blurry"},
    )
    images = [_decode(d.b64_json) for d in resp.data or []]
    assert len(images) == 4 and all(im.shape == (32, 32, 3) for im in images)
    params = TextParams("a red house", "blurry", 6.0, 2, 11, 32, 32)
    want = backends["t2i"].generate_params(params, 4)
    assert all(np.array_equal(a, b) for a, b in zip(images, want, strict=True))
    wide = await t2i_client.images.generate(prompt="a cat", size="48x16", extra_body={"steps": 1})  # type: ignore[arg-type]
    assert _decode(wide.data[0].b64_json).shape == (16, 48, 3)  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"response_format": "url"}, "b64_json"),
        ({"size": "33x32"}, "multiples of 8"),
        ({"n": 11}, "n must be"),
        ({"extra_body": {"label": 3}}, "unknown field"),
        ({"extra_body": {"guidance_scale": -1}}, "guidance_scale"),
        ({"prompt": ""}, "prompt"),
    ],
)
async def test_bad_generation_fields_are_400(
    t2i_client: openai.AsyncOpenAI, kwargs: dict[str, object], needle: str
) -> None:
    args: dict[str, object] = {"prompt": "a cat", "extra_body": {"steps": 1}, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        await t2i_client.images.generate(**args)  # type: ignore[call-overload]
    assert needle in str(err.value)


async def test_unknown_model_is_404(t2i_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="serves"):
        await t2i_client.images.generate(prompt="a cat", model="dall-e-3", extra_body={"steps": 1})


async def test_edits_through_the_openai_client(backends: dict[str, PipelineBackend]) -> None:
    server, client = await _client(backends["inpaint"])
    try:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32, 4), dtype=np.uint8)
        mask[..., 3] = 255
        mask[8:24, 4:20, 3] = 0  # transparent = regenerate (OpenAI's convention)
        resp = await client.images.edit(
            image=("image.png", _png(image), "image/png"),
            mask=("mask.png", _png(mask), "image/png"),
            prompt="a red house",
            n=2,
            response_format="b64_json",
            extra_body={"steps": 2, "seed": 5},
        )
        outs = [_decode(d.b64_json) for d in resp.data or []]
        hole = mask[..., 3] == 0
        assert len(outs) == 2 and all(o.shape == (32, 32, 3) for o in outs)
        assert all(np.array_equal(o[~hole], image[~hole]) for o in outs)
        be = backends["inpaint"]
        cond = be.conditioning(TextParams("a red house", "", 7.5, 2, 5, 32, 32))
        assert np.array_equal(outs[1], be.edit_text(cond, image, hole, 6, 2))
        with pytest.raises(openai.BadRequestError, match="mask is"):
            await client.images.edit(
                image=("image.png", _png(image), "image/png"),
                mask=("mask.png", _png(mask[:16]), "image/png"),
                prompt="x",
            )
        with pytest.raises(openai.BadRequestError, match="alpha"):
            await client.images.edit(image=("image.png", _png(image), "image/png"), prompt="x")
    finally:
        await client.close()
        await server.close()


async def test_a_model_without_prompts_is_422() -> None:
    server, client = await _client(NullBackend())
    try:
        with pytest.raises(openai.UnprocessableEntityError, match="not a text pipeline"):
            await client.images.generate(prompt="a cat")
    finally:
        await client.close()
        await server.close()


def test_make_tiny_sd_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidRequestError, match="not empty"):
        make_tiny_sd(tmp_path)
