"""The HTTP API (aiohttp): a thin shell over an ``Api`` (the node); validation lives in ``peer.core.requests``.

Routes: ``POST /v1/generate``, ``POST /v1/repair``, ``GET /v1/jobs/{id}``,
``GET /v1/jobs/{id}/events`` (server-sent events), ``GET /v1/cluster``, ``GET /healthz``,
``GET /metrics`` (Prometheus text). Every error is JSON ``{"error": {"code", "message"}}``;
bad input is a 4xx and is counted; nothing a client sends can make the server hang or 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from peer.core.config import Limits
from peer.core.errors import BadRequest, Overloaded, PeerError, PlanError
from peer.core.jobs import Job, JobBook
from peer.core.requests import (
    GenerateRequest,
    RepairRequest,
    parse_generate,
    parse_json,
    parse_repair,
    parse_wait,
)

log = logging.getLogger("amcoedge.http")


class Api(Protocol):
    """What the HTTP layer needs of a peer (``peer.runtime.node.Node`` provides it)."""

    limits: Limits
    native: int
    jobs: JobBook

    def count_http(self, path: str, status: int, code: str) -> None: ...

    def submit_generate(self, req: GenerateRequest) -> Job: ...

    def submit_repair(self, req: RepairRequest) -> Job: ...

    async def wait_job(self, job: Job) -> None: ...

    async def wait_event(self, job: Job, seen: int, timeout: float) -> None: ...

    def job_json(self, job: Job) -> dict[str, Any]: ...

    def cluster_json(self) -> dict[str, Any]: ...

    def health_json(self) -> dict[str, Any]: ...

    def metrics_text(self) -> str: ...


NODE_KEY: web.AppKey[Api] = web.AppKey("node")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    try:
        resp = await handler(request)
    except BadRequest as exc:
        node.count_http(request.path, exc.status, exc.code)
        return error_response(exc.code, exc.message, exc.status)
    except (Overloaded, PlanError) as exc:
        node.count_http(request.path, exc.status, exc.code)
        return error_response(exc.code, str(exc), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        node.count_http(request.path, exc.status, code)
        return error_response(code, exc.reason or code, exc.status)
    except asyncio.CancelledError:
        raise
    except PeerError as exc:
        node.count_http(request.path, exc.status, exc.code)
        log.warning("request %s failed: %s", request.path, exc)
        return error_response(exc.code, str(exc), exc.status)
    except Exception as exc:
        node.count_http(request.path, 500, "internal")
        log.exception("internal error on %s", request.path)
        return error_response("internal", f"{type(exc).__name__}: {exc}", 500)
    node.count_http(request.path, resp.status, "ok")
    return resp


async def _body(request: web.Request) -> dict[str, Any]:
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise BadRequest(
            "unsupported_media_type", f"send JSON (application/json), not {ctype}", status=415
        )
    raw = await request.read()  # aiohttp raises 413 past client_max_size
    return parse_json(raw)


def _respond(
    request: web.Request, job_json: dict[str, Any], status: int = 200
) -> web.StreamResponse:
    accept = request.headers.get("Accept", "")
    images = (job_json.get("result") or {}).get("images") or []
    if "image/png" in accept and "application/json" not in accept and len(images) == 1:
        body = base64.b64decode(images[0])
        headers = {"X-Job-Id": job_json["id"]}
        makespan = (job_json.get("result") or {}).get("timing", {}).get("makespan_s")
        if makespan is not None:
            headers["X-Makespan-S"] = f"{makespan:.6f}"
        return web.Response(body=body, content_type="image/png", headers=headers, status=status)
    return web.json_response(job_json, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


async def generate(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    body = await _body(request)
    req = parse_generate(body, node.limits)
    wait = parse_wait(body)
    job = node.submit_generate(req)
    if not wait:
        return web.json_response(job.summary(), status=202)
    await node.wait_job(job)
    return _respond(request, node.job_json(job), 200 if job.state == "done" else _fail_status(job))


async def repair(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    body = await _body(request)
    req = parse_repair(body, node.limits, native=node.native)
    wait = parse_wait(body)
    job = node.submit_repair(req)
    if not wait:
        return web.json_response(job.summary(), status=202)
    await node.wait_job(job)
    return _respond(request, node.job_json(job), 200 if job.state == "done" else _fail_status(job))


def _fail_status(job: Job) -> int:
    code = (job.error or {}).get("code", "")
    return 503 if code in ("overloaded", "plan_failed") else 500 if code == "internal" else 502


async def get_job(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    job = node.jobs.get(request.match_info["job_id"])
    return _respond(request, node.job_json(job))


async def job_events(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    job = node.jobs.get(request.match_info["job_id"])
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    sent = 0
    while True:
        while sent < len(job.events):
            ev = job.events[sent]
            data = _dumps({"seq": ev.seq, "t": ev.t, **ev.data})
            await resp.write(f"id: {ev.seq}\nevent: {ev.kind}\ndata: {data}\n\n".encode())
            sent += 1
        if job.terminal:
            break
        await node.wait_event(job, sent, timeout=15.0)
        if sent >= len(job.events) and not job.terminal:
            await resp.write(b": keep-alive\n\n")
    await resp.write_eof()
    return resp


async def cluster(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[NODE_KEY].cluster_json())


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[NODE_KEY].health_json())


async def metrics(request: web.Request) -> web.StreamResponse:
    text = request.app[NODE_KEY].metrics_text()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def build_app(node: Api) -> web.Application:
    app = web.Application(
        client_max_size=node.limits.max_body_bytes, middlewares=[errors_middleware]
    )
    app[NODE_KEY] = node
    app.router.add_post("/v1/generate", generate)
    app.router.add_post("/v1/repair", repair)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    app.router.add_get("/v1/cluster", cluster)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
