"""OpenAI's images API on a peer: ``POST /v1/images/generations`` and ``POST /v1/images/edits``.

``add_openai_routes(app, api)`` adds both routes to an aiohttp app over an ``ImagesApi``:
``ClusterImagesApi`` over a peer (every peer's ``build_app`` adds it: a generation is one
generate job with its ``n`` images, an edit one repair job per image, each planned and split
over the cluster like ``/v1/generate`` and ``/v1/repair``) or ``LocalImagesApi`` (one
``PipelineBackend`` in a worker thread). The official ``openai`` client works against them:

- generations (JSON): ``prompt`` (required), ``n`` (1..``MAX_N``), ``size`` (``"WxH"``, the
  model's native size by default; multiples of the model's size quantum), ``response_format``
  (``b64_json``, the default; ``url`` is refused: a peer keeps no images to link to),
  ``output_format`` (``png`` only), ``model`` (absent, or the served model's id or name);
  extensions a client sends in ``extra_body``: ``negative_prompt``, ``guidance_scale``,
  ``steps``, ``seed`` (image k uses ``seed + k``).
- edits (multipart/form-data): the same fields as form values, plus ``image`` (a PNG file; its
  size is the canvas) and ``mask`` (a PNG file of the same size). As in OpenAI's API a mask with
  an alpha channel marks the region to regenerate with alpha 0; a mask without alpha marks it in
  white (> 127), as ``/v1/repair`` does. Without ``mask`` the image's own alpha channel is used.

Any other field, or a field of the wrong type or range, is a 400 in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``); a model that is not a text pipeline
answers 422 ``unsupported_model``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from aiohttp import BodyPartReader, web

from peer.core.errors import BadRequest, PeerError
from peer.diffusion.pipeline.text import TextCaps, TextParams, parse_text_fields

MAX_N = 10
MAX_UPLOAD_BYTES = 16 << 20
GENERATION_KEYS = frozenset(
    {
        "prompt",
        "n",
        "size",
        "response_format",
        "output_format",
        "model",
        "negative_prompt",
        "guidance_scale",
        "steps",
        "seed",
    }
)
EDIT_KEYS = GENERATION_KEYS | {"image", "mask"}


class ImagesApi(Protocol):
    """What the images routes need of a peer."""

    def text_caps(self) -> TextCaps | None:
        """The loaded text pipeline's limits, or None when the model takes no prompt."""
        ...

    async def images_generate(self, params: TextParams, n: int) -> list[np.ndarray]:
        """``n`` images (uint8 (H, W, 3)); image k from seed ``params.seed + k``."""
        ...

    async def images_edit(
        self, params: TextParams, image: np.ndarray, mask: np.ndarray, n: int
    ) -> list[np.ndarray]:
        """``n`` edits of ``image`` (uint8 (H, W, 3)) where ``mask`` (bool (H, W)) is True."""
        ...


class LocalImagesApi:
    """``ImagesApi`` on one ``PipelineBackend``, each call in a worker thread (one at a time)."""

    def __init__(self, backend: Any, max_steps: int = 1000) -> None:
        self.backend = backend
        self.max_steps = max_steps
        self._lock = asyncio.Lock()

    def text_caps(self) -> TextCaps | None:
        if not getattr(self.backend, "takes_prompt", False):
            return None
        caps: TextCaps = self.backend.text_caps(self.max_steps)
        return caps

    async def images_generate(self, params: TextParams, n: int) -> list[np.ndarray]:
        async with self._lock:
            out = await asyncio.to_thread(self.backend.generate_params, params, n)
        return list(out)

    async def images_edit(
        self, params: TextParams, image: np.ndarray, mask: np.ndarray, n: int
    ) -> list[np.ndarray]:
        be = self.backend

        def run() -> list[np.ndarray]:
            cond = be.conditioning(params)
            return [
                be.edit_text(cond, image, mask, params.seed + k, params.steps) for k in range(n)
            ]

        async with self._lock:
            return await asyncio.to_thread(run)


class JobFailed(PeerError):
    """A cluster job behind an images call ended without its images."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ClusterImagesApi:
    """``ImagesApi`` over a peer's submit path (``peer.runtime.node.Node``): the planner, the
    shares sent to collaborators over RPC, re-planning when one is lost."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def text_caps(self) -> TextCaps | None:
        caps: TextCaps | None = self.node.text_caps()
        return caps

    async def _images(self, job: Any) -> list[np.ndarray]:
        from peer.diffusion.images import decode_png

        await self.node.wait_job(job)
        if job.state != "done" or job.result is None:
            err = job.error or {}
            code = str(err.get("code", "internal"))
            status = 503 if code in ("overloaded", "plan_failed") else 502
            status = 500 if code == "internal" else status
            raise JobFailed(code, f"job {job.id} {job.state}: {err.get('message', '')}", status)
        return [decode_png(base64.b64decode(b)) for b in job.result["images"]]

    async def images_generate(self, params: TextParams, n: int) -> list[np.ndarray]:
        from peer.core.requests import GenerateRequest

        req = GenerateRequest(
            count=n,
            label=None,
            steps=params.steps,
            seed=params.seed,
            mode="auto",
            policy=None,
            scheduler="ddim",
            text=params,
        )
        return await self._images(self.node.submit_generate(req))

    async def images_edit(
        self, params: TextParams, image: np.ndarray, mask: np.ndarray, n: int
    ) -> list[np.ndarray]:
        from dataclasses import replace

        from peer.core.requests import MAX_SEED, RepairRequest

        jobs = []
        for k in range(n):
            p = replace(params, seed=(params.seed + k) % (MAX_SEED + 1))
            req = RepairRequest(image, mask, p.steps, p.seed, "auto", None, None, text=p)
            jobs.append(self.node.submit_repair(req))
        outs = await asyncio.gather(*(self._images(j) for j in jobs))
        return [o[0] for o in outs]


IMAGES_API_KEY: web.AppKey[ImagesApi] = web.AppKey("images_api")


def _error(message: str, status: int, code: str, param: str | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def parse_size(value: object, caps: TextCaps) -> tuple[int, int]:
    """``"WxH"`` -> (width, height), each a multiple of the size quantum within the limits."""
    if value is None:
        return caps.sample_size, caps.sample_size
    if not isinstance(value, str):
        raise BadRequest("invalid_type", "size must be a string 'WIDTHxHEIGHT'")
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 0 < len(p) <= 5 for p in parts):
        raise BadRequest("invalid_value", f"size must be 'WIDTHxHEIGHT', got {value[:32]!r}")
    w, h = int(parts[0]), int(parts[1])
    for side in (w, h):
        if not caps.size_quantum <= side <= caps.max_side or side % caps.size_quantum:
            raise BadRequest(
                "invalid_value",
                f"size sides must be multiples of {caps.size_quantum} in "
                f"[{caps.size_quantum}, {caps.max_side}], got {value}",
            )
    return w, h


def _common(body: Mapping[str, Any], caps: TextCaps, allowed: frozenset[str]) -> int:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            "unknown_field", f"unknown field(s): {unknown}; allowed: {sorted(allowed)}"
        )
    fmt = body.get("response_format")
    if fmt not in (None, "b64_json"):
        raise BadRequest(
            "invalid_value", "response_format must be 'b64_json' (a peer keeps no images to link)"
        )
    if body.get("output_format") not in (None, "png"):
        raise BadRequest("invalid_value", "output_format must be 'png'")
    model = body.get("model")
    if model is not None and model not in (caps.model_id, caps.model_id.split("@")[0]):
        raise BadRequest(
            "model_not_found", f"this peer serves {caps.model_id!r}, not {model!r}", 404
        )
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int):
        raise BadRequest("invalid_type", "n must be an integer")
    if not 1 <= n <= MAX_N:
        raise BadRequest("out_of_range", f"n must be in [1, {MAX_N}], got {n}")
    return n


def parse_generation(body: Mapping[str, Any], caps: TextCaps) -> tuple[TextParams, int]:
    from peer.core.requests import edits_only

    n = _common(body, caps, GENERATION_KEYS)
    edits_only(caps)
    w, h = parse_size(body.get("size"), caps)
    fields = {
        k: body.get(k) for k in ("prompt", "negative_prompt", "guidance_scale", "steps", "seed")
    }
    return parse_text_fields({**fields, "width": w, "height": h}, caps), n


def _png(data: bytes, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise BadRequest("bad_png", f"{what} must be a PNG, got {img.format}")
            img.load()
            arr = np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"))
    except BadRequest:
        raise
    except Exception as exc:  # PIL raises many kinds on hostile bytes
        raise BadRequest("bad_png", f"{what} is not a readable PNG: {type(exc).__name__}") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def edit_mask(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The region to regenerate, True = regenerate (see the module's docstring)."""
    if mask is None:
        if image.shape[2] != 4:
            raise BadRequest("missing_field", "send a mask, or an image with an alpha channel")
        return image[:, :, 3] == 0
    if mask.shape[:2] != image.shape[:2]:
        raise BadRequest(
            "size_mismatch",
            f"mask is {mask.shape[1]}x{mask.shape[0]}, image {image.shape[1]}x{image.shape[0]}",
        )
    if mask.shape[2] == 4:
        return mask[:, :, 3] == 0
    return mask[:, :, :3].max(axis=2) > 127


def parse_edit(
    form: Mapping[str, Any], files: Mapping[str, bytes], caps: TextCaps
) -> tuple[TextParams, np.ndarray, np.ndarray, int]:
    body = dict(form)
    for key in ("n", "steps", "seed"):
        if isinstance(body.get(key), str):
            if not body[key].isdigit() or len(body[key]) > 12:
                raise BadRequest("invalid_type", f"{key} must be an integer")
            body[key] = int(body[key])
    if isinstance(body.get("guidance_scale"), str):
        try:
            body["guidance_scale"] = float(body["guidance_scale"])
        except ValueError:
            raise BadRequest("invalid_type", "guidance_scale must be a number") from None
    n = _common({**body, **dict.fromkeys(files)}, caps, EDIT_KEYS)
    if "image" not in files:
        raise BadRequest("missing_field", "image is required (a PNG file)")
    image = _png(files["image"], "image")
    mask = edit_mask(image, _png(files["mask"], "mask") if "mask" in files else None)
    h, w = image.shape[:2]
    if body.get("size") is not None and parse_size(body["size"], caps) != (w, h):
        raise BadRequest("size_mismatch", f"size must be the image's, {w}x{h}")
    fields = {
        k: body.get(k) for k in ("prompt", "negative_prompt", "guidance_scale", "steps", "seed")
    }
    for side, name in ((w, "width"), (h, "height")):
        if side % caps.size_quantum or not caps.size_quantum <= side <= caps.max_side:
            raise BadRequest(
                "invalid_value",
                f"image {name} must be a multiple of {caps.size_quantum} in "
                f"[{caps.size_quantum}, {caps.max_side}], got {side}",
            )
    params = parse_text_fields({**fields, "width": w, "height": h}, caps)
    return params, np.ascontiguousarray(image[:, :, :3]), mask, n


def images_response(images: list[np.ndarray]) -> dict[str, Any]:
    from peer.diffusion.images import encode_png

    return {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(encode_png(im)).decode()} for im in images],
    }


def _caps(request: web.Request) -> TextCaps:
    caps = request.app[IMAGES_API_KEY].text_caps()
    if caps is None:
        raise BadRequest(
            "unsupported_model", "the loaded model is not a text pipeline: it takes no prompt", 422
        )
    return caps


async def _guard(request: web.Request, run: Any) -> web.StreamResponse:
    try:
        return web.json_response(images_response(await run()))
    except BadRequest as exc:
        return _error(exc.message, exc.status, exc.code)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.reason or "http error", exc.status, "http_error")
    except PeerError as exc:
        return _error(str(exc), exc.status, exc.code)
    except ValueError as exc:  # the backend's InvalidRequestError
        return _error(str(exc), 400, "invalid_request")


async def generations(request: web.Request) -> web.StreamResponse:
    async def run() -> list[np.ndarray]:
        from peer.core.requests import parse_json

        if request.content_type != "application/json":
            raise BadRequest("unsupported_media_type", "send JSON (application/json)", 415)
        body = parse_json(await request.read())
        params, n = parse_generation(body, _caps(request))
        return await request.app[IMAGES_API_KEY].images_generate(params, n)

    return await _guard(request, run)


async def edits(request: web.Request) -> web.StreamResponse:
    async def run() -> list[np.ndarray]:
        if request.content_type != "multipart/form-data":
            raise BadRequest("unsupported_media_type", "send multipart/form-data", 415)
        caps = _caps(request)
        form: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("invalid_value", "nested multipart is not accepted")
            name = (part.name or "").removesuffix("[]")
            if not name:
                raise BadRequest("invalid_value", "a form part without a name")
            data = await part.read(decode=False)
            if len(data) > MAX_UPLOAD_BYTES:
                raise BadRequest("body_too_large", f"{name} exceeds {MAX_UPLOAD_BYTES} bytes", 413)
            if name in form or name in files:
                raise BadRequest("duplicate_key", f"{name} is sent more than once")
            if part.filename is not None or name in ("image", "mask"):
                files[name] = bytes(data)
            else:
                try:
                    form[name] = bytes(data).decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest("invalid_value", f"{name} is not UTF-8") from None
        params, image, mask, n = parse_edit(form, files, caps)
        return await request.app[IMAGES_API_KEY].images_edit(params, image, mask, n)

    return await _guard(request, run)


def add_openai_routes(app: web.Application, api: ImagesApi) -> None:
    """Add ``POST /v1/images/generations`` and ``POST /v1/images/edits`` over ``api``."""
    app[IMAGES_API_KEY] = api
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/v1/images/edits", edits)
