"""The HTTP API (aiohttp): a thin shell over an ``Api`` (the node); validation lives in ``peer.core.requests``.

Routes: ``POST /v1/generate``, ``POST /v1/repair``, ``GET /v1/jobs/{id}``,
``GET /v1/jobs/{id}/events`` (server-sent events), ``GET /v1/cluster``, ``GET /healthz``,
``GET /metrics`` (Prometheus text), and OpenAI's images API (``POST /v1/images/generations``,
``POST /v1/images/edits``; ``peer.runtime.openai_api``) over the same node. Every error is
JSON ``{"error": {"code", "message"}}``;
bad input is a 4xx and is counted; nothing a client sends can make the server hang or 500.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from peer.core.config import Limits
from peer.core.errors import BadRequest, Overloaded, PeerError, PlanError
from peer.core.jobs import Job, JobBook
from peer.core.requests import (
    GenerateRequest,
    RepairRequest,
    parse_generate,
    parse_idempotency_key,
    parse_json,
    parse_repair,
    parse_wait,
)
from peer.runtime.metrics import CONTENT_TYPE
from peer.runtime.ui import PAGE_PATHS, add_ui_routes

if TYPE_CHECKING:
    from peer.diffusion.pipeline.text import TextCaps

log = logging.getLogger("amcoedge.http")


class Api(Protocol):
    """What the HTTP layer needs of a peer (``peer.runtime.node.Node`` provides it)."""

    limits: Limits
    native: int
    jobs: JobBook

    def count_http(self, path: str, status: int, code: str) -> None: ...

    def text_caps(self) -> TextCaps | None:
        """The loaded text pipeline's limits; None when the model takes no prompt."""
        ...

    def submit_generate(
        self, req: GenerateRequest, *, key: str | None = None, retry_of: str | None = None
    ) -> Job: ...

    def submit_repair(
        self, req: RepairRequest, *, key: str | None = None, retry_of: str | None = None
    ) -> Job: ...

    async def wait_job(self, job: Job) -> None: ...

    async def wait_event(self, job: Job, seen: int, timeout: float) -> None: ...

    def job_json(self, job: Job) -> dict[str, Any]: ...

    def recent_jobs(self, limit: int) -> list[Job]: ...

    def cluster_json(self) -> dict[str, Any]: ...

    def health_json(self) -> dict[str, Any]: ...

    def metrics_bytes(self) -> bytes: ...

    def retry_after_s(self) -> int:
        """Seconds a client refused with 503 should wait before trying again."""
        ...


NODE_KEY: web.AppKey[Api] = web.AppKey("node")
TOKEN_KEY: web.AppKey[str | None] = web.AppKey("token")
# readiness probes and the dashboard's static files (no data; the page then asks for the token)
OPEN_PATHS = frozenset({"/healthz"}) | PAGE_PATHS
BODY_TIMEOUT_S = 30.0  # a request body must arrive within this (slow uploads are cut: 408)
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
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a token, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.

    ``?token=`` is accepted too, for the dashboard's server-sent events (EventSource cannot set
    headers). Compared in constant time.
    """
    token = request.app[TOKEN_KEY]
    if token is None or request.path in OPEN_PATHS:
        return await handler(request)
    given = request.headers.get("Authorization", "")
    offered = given[7:].strip() if given[:7].lower() == "bearer " else request.query.get("token")
    if offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
        return await handler(request)
    request.app[NODE_KEY].count_http(request.path, 401, "unauthorized")
    resp = error_response(
        "unauthorized", "send the peer's API token as 'Authorization: Bearer <token>'", 401
    )
    resp.headers["WWW-Authenticate"] = 'Bearer realm="amcoedge"'
    return resp


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
        resp = error_response(exc.code, str(exc), exc.status)
        if exc.status == 503:
            resp.headers["Retry-After"] = str(node.retry_after_s())
        return resp
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
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()  # aiohttp raises 413 past client_max_size
    except ConnectionResetError:  # the client went away mid-body: its fault, nobody to answer
        raise BadRequest("client_disconnected", "the connection closed before the body") from None
    except TimeoutError:
        raise BadRequest(
            "body_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s", status=408
        ) from None
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
    req = parse_generate(body, node.limits, node.text_caps())
    wait = parse_wait(body)
    job = node.submit_generate(req, **_retry_headers(request))
    if not wait:
        return web.json_response(job.summary(), status=202)
    await node.wait_job(job)
    return _respond(request, node.job_json(job), 200 if job.state == "done" else _fail_status(job))


async def repair(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    body = await _body(request)
    req = parse_repair(body, node.limits, native=node.native, caps=node.text_caps())
    wait = parse_wait(body)
    job = node.submit_repair(req, **_retry_headers(request))
    if not wait:
        return web.json_response(job.summary(), status=202)
    await node.wait_job(job)
    return _respond(request, node.job_json(job), 200 if job.state == "done" else _fail_status(job))


def _retry_headers(request: web.Request) -> dict[str, str | None]:
    """``Idempotency-Key`` (the same request sent again runs once) and ``X-Retry-Of`` (the
    base URL of the origin that a client gave up on: that peer is asked first)."""
    retry_of = request.headers.get("X-Retry-Of")
    if retry_of is not None and len(retry_of) > 256:
        raise BadRequest("invalid_retry_of", "X-Retry-Of is a peer's base URL")
    return {
        "key": parse_idempotency_key(request.headers.get("Idempotency-Key")),
        "retry_of": retry_of,
    }


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
    body = request.app[NODE_KEY].metrics_bytes()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def build_app(
    node: Api, token: str | None = None, *, guard: ConnectionGuard | None = None
) -> web.Application:
    """The API over ``node``; ``token``: require it as a bearer token (``/healthz`` excepted)."""
    middlewares = [auth_middleware, errors_middleware]
    if guard is not None:
        middlewares.insert(0, guard.middleware)
    app = web.Application(client_max_size=node.limits.max_body_bytes, middlewares=middlewares)
    app[NODE_KEY] = node
    app[TOKEN_KEY] = token
    app.router.add_post("/v1/generate", generate)
    app.router.add_post("/v1/repair", repair)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    app.router.add_get("/v1/cluster", cluster)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_ui_routes(app, node)
    from peer.runtime.openai_api import ClusterImagesApi, add_openai_routes

    add_openai_routes(app, ClusterImagesApi(node))
    return app


class ConnectionGuard:
    """Closes HTTP connections that hold a slot without sending a request (slowloris).

    aiohttp closes idle keep-alive connections but sets no deadline for a request's headers: a
    client that sends a partial header line and then a byte now and then holds a connection
    forever. The guard sweeps the server's connections: one with no request in progress for
    ``header_timeout_s`` since it opened or since its last request ended is closed. A request
    is in progress from the moment its headers are parsed (the middleware sees it) to its end.
    ``attach(server)`` stamps each connection when it is accepted; without it a connection's
    clock starts at the first sweep that sees it.
    """

    def __init__(self, header_timeout_s: float, clock: Callable[[], float]) -> None:
        self.header_timeout_s = header_timeout_s
        self.clock = clock
        self.closed = 0
        self._seen: dict[int, float] = {}  # id(transport) -> when it opened or last went idle
        self._busy: dict[int, int] = {}  # id(transport) -> requests in progress

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = id(request.transport)
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            return await handler(request)
        finally:
            self._busy[key] -= 1
            if self._busy[key] <= 0:
                del self._busy[key]
            self._seen[key] = self.clock()

    def attach(self, server: web.Server) -> None:
        """Count each connection's deadline from its accept, not from the first sweep."""
        made = server.connection_made

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            self._seen[id(transport)] = self.clock()
            made(handler, transport)

        server.connection_made = connection_made  # type: ignore[method-assign]

    def sweep(self, transports: list[asyncio.BaseTransport | None]) -> int:
        """Close the idle ones among ``transports``; returns how many it closed."""
        now = self.clock()
        live: set[int] = set()
        n = 0
        for tr in transports:
            if tr is None or tr.is_closing():
                continue
            key = id(tr)
            live.add(key)
            since = self._seen.setdefault(key, now)
            if key not in self._busy and now - since > self.header_timeout_s:
                tr.close()
                n += 1
        for key in list(self._seen):
            if key not in live:
                del self._seen[key]
        self.closed += n
        return n


class ClientFaultFilter(logging.Filter):
    """Keeps aiohttp's server log for our faults: a malformed request (bad request line, bad
    header, a peer resetting mid-request) is the client's, answered 400 by aiohttp and counted
    here instead of logged with a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | ConnectionResetError):
            self.dropped += 1
            return False
        return True


CLIENT_FAULTS = ClientFaultFilter()


def quiet_client_faults() -> None:
    """Install ``CLIENT_FAULTS`` on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if CLIENT_FAULTS not in logger.filters:
        logger.addFilter(CLIENT_FAULTS)
