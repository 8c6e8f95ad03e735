"""Fused tiles over peers: a stateful session per band (``fused.open`` / ``fused.step`` /
``fused.close``) and the origin's driver that exchanges overlap strips between them.

A holder keeps one ``peer.diffusion.fused.FusedPart`` per session: ``open`` builds it (the
canvas, mask, band and, after a warm-up at the origin, the whole canvas's latent and generator
state), ``step`` puts the neighbours' rows into its halo and runs ``n`` steps, answering its own
boundary rows, and ``close`` answers the band's finished core rows and forgets it. Only the strips
(``2 * halo * width`` float32 per interior seam and exchange) cross the wire per step.

``run_fused`` is the origin's side: it opens every band (its own in this process), runs the
rounds with every holder at once, hands each band its neighbours' strips, and closes. Its result
is the same array ``repair_fused`` computes in one process with the same bands (same engine).
Sessions live in ``FusedSessions`` (bounded; an idle one expires), driven by the node's executor.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from peer.diffusion.fused import Band, FusedPart, WholeState, assemble, plan_bands, warm_up
from peer.rpc.tensors import pack_tensor, unpack_tensor

MAX_SESSIONS = 16
IDLE_S = 120.0  # a session nobody stepped for this long is dropped

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]  # (method, params) -> result


class FusedSessionError(Exception):
    """A session request this peer cannot serve (unknown session, bad fields, too many)."""


@dataclass
class _Session:
    part: FusedPart
    used: float


@dataclass
class FusedSessions:
    """This peer's open band sessions (call every method from the executor's thread)."""

    backend: Any
    limit: int = MAX_SESSIONS
    sessions: dict[str, _Session] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def open(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        self._expire(now)
        if len(self.sessions) >= self.limit:
            raise FusedSessionError(f"{self.limit} fused sessions already open here")
        try:
            canvas = unpack_tensor(params["canvas"])
            mask = unpack_tensor(params["mask"]).astype(bool)
            band = Band.from_wire(params["band"], int(canvas.shape[0]))
            start = None
            if params.get("start") is not None:
                s = params["start"]
                start = WholeState(int(s["step"]), unpack_tensor(s["latent"]), bytes(s["rng"]))
            part = FusedPart(
                self.backend,
                canvas,
                mask,
                band,
                int(params["steps"]),
                int(params["seed"]),
                params.get("label"),
                str(params.get("scheduler", "ddim")),
                start,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FusedSessionError(f"bad fused.open: {exc}") from None
        sid = f"f{next(self._ids)}"
        self.sessions[sid] = _Session(part, now)
        return {"session": sid, "step": part.i}

    def step(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        s = self._get(params)
        s.used = now
        above, below = params.get("above"), params.get("below")
        if above is not None or below is not None:
            s.part.put(
                None if above is None else unpack_tensor(above),
                None if below is None else unpack_tensor(below),
            )
        strips = s.part.run(int(params.get("n", 1)))
        out: dict[str, Any] = {
            "step": s.part.i,
            "strips": {k: pack_tensor(v) for k, v in strips.items()},
        }
        if params.get("export"):  # a whole-canvas band hands its state on (warm-up on a peer)
            out["state"] = {
                "step": s.part.i,
                "latent": pack_tensor(np.ascontiguousarray(s.part.x.numpy())),
                "rng": bytes(s.part.gen.get_state().numpy()),
            }
        return out

    def close(self, params: dict[str, Any]) -> dict[str, Any]:
        s = self._get(params)
        del self.sessions[str(params["session"])]
        if not s.part.done:  # dropped before its last step (a warm-up, an abandoned run)
            return {"core": None, "step": s.part.i}
        return {"core": pack_tensor(s.part.core_image())}

    def _get(self, params: dict[str, Any]) -> _Session:
        sid = params.get("session") if isinstance(params, dict) else None
        s = self.sessions.get(str(sid))
        if s is None:
            raise FusedSessionError(f"no fused session {sid!r} here")
        return s

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self.sessions.items() if now - s.used > IDLE_S]:
            del self.sessions[sid]


@dataclass(frozen=True)
class FusedRun:
    image: np.ndarray
    exchanges: int
    strip_bytes: int  # msgpack bytes of the strips sent between holders (both ways), all rounds
    bytes_per_step: float
    bands: list[Band]
    holders: list[str]
    wall_s: float


def _base(
    img: np.ndarray,
    mask: np.ndarray,
    steps: int,
    seed: int,
    label: int | None,
    start: WholeState | None,
) -> dict[str, Any]:
    return {
        "canvas": pack_tensor(np.ascontiguousarray(img)),
        "mask": pack_tensor(np.ascontiguousarray(mask, dtype=bool)),
        "steps": steps,
        "seed": seed,
        "label": label,
        "scheduler": "ddim",
        "start": None
        if start is None
        else {"step": start.step, "latent": pack_tensor(start.latent), "rng": start.rng_state},
    }


def _strip_bytes(payload: Any) -> int:
    return len(msgpack.packb(payload, use_bin_type=True))


async def run_fused(
    be: Any,
    canvas: np.ndarray,
    mask: np.ndarray,
    steps: int,
    seed: int,
    calls: Sequence[tuple[str, Call]],
    *,
    halo: int = 8,
    sync_every: int = 1,
    warmup: int = 0,
    label: int | None = None,
    run_local: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
    warm_call: Call | None = None,
) -> FusedRun:
    """Fused bands over ``calls`` (one per band, top to bottom: (holder name, its RPC call)).

    ``run_local`` runs blocking work here (the warm-up; default: a thread); with
    ``warm_call`` the warm-up runs as a whole-canvas session on that holder instead. The strips each
    holder answers go to its neighbours with the next ``fused.step``; ``strip_bytes`` counts
    them once, as msgpack, whoever holds the bands (the relay through the origin is not doubled).
    """
    t0 = time.perf_counter()
    img = np.asarray(canvas)
    bands = plan_bands(img.shape[0], len(calls), halo, be.downscale)
    run = run_local or (lambda fn: asyncio.to_thread(fn))
    start = None
    if warmup and warm_call is not None:  # on the first holder: open the whole canvas there
        whole = await warm_call(
            "fused.open",
            {
                **_base(img, mask, steps, seed, label, None),
                "band": [0, img.shape[0], 0, img.shape[0]],
            },
        )
        st = await warm_call(
            "fused.step", {"session": whole["session"], "n": warmup, "export": True}
        )
        await warm_call("fused.close", {"session": whole["session"]})
        s = st["state"]
        start = WholeState(int(s["step"]), unpack_tensor(s["latent"]), bytes(s["rng"]))
    elif warmup:
        start = await run(lambda: warm_up(be, img, mask, steps, seed, warmup, label))
    base = _base(img, mask, steps, seed, label, start)
    opened = await asyncio.gather(
        *(
            call("fused.open", {**base, "band": b.to_wire()})
            for (_, call), b in zip(calls, bands, strict=True)
        )
    )
    sids = [o["session"] for o in opened]
    step = int(opened[0]["step"])
    strips: list[dict[str, Any]] = [{} for _ in bands]
    exchanges = 0
    moved = 0
    first = True
    while step < steps:
        params = []
        for p, sid in enumerate(sids):
            q: dict[str, Any] = {"session": sid, "n": sync_every}
            if not first:
                q["above"] = strips[p - 1].get("down") if p > 0 else None
                q["below"] = strips[p + 1].get("up") if p + 1 < len(sids) else None
                moved += sum(_strip_bytes(q[k]) for k in ("above", "below") if q[k] is not None)
                exchanges += 1 if p == 0 else 0
            params.append(q)
        outs = await asyncio.gather(
            *(call("fused.step", q) for (_, call), q in zip(calls, params, strict=True))
        )
        strips = [o["strips"] for o in outs]
        step = int(outs[0]["step"])
        first = False
    cores = await asyncio.gather(
        *(call("fused.close", {"session": sid}) for (_, call), sid in zip(calls, sids, strict=True))
    )
    image = assemble(img.shape, bands, [unpack_tensor(c["core"]) for c in cores])
    split = max(steps - warmup, 1)
    return FusedRun(
        image,
        exchanges,
        moved,
        moved / split,
        bands,
        [name for name, _ in calls],
        time.perf_counter() - t0,
    )


def rpc_handlers(executor: Any, backend: Any) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """``fused.open`` / ``fused.step`` / ``fused.close`` for a node's RPC server (the work runs
    on ``executor``, one call at a time, beside the node's shares)."""
    from peer.diffusion import DiffusionError
    from peer.rpc import RpcError

    book = FusedSessions(backend)

    def guard(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Awaitable[Any]]:
        async def handler(params: Any) -> Any:
            if not isinstance(params, dict):
                raise RpcError("fused calls take an object", code="invalid_params")
            try:
                return await executor.call(lambda: fn(params))
            except (FusedSessionError, DiffusionError) as exc:
                raise RpcError(str(exc), code="invalid_params") from None

        return handler

    return {
        "fused.open": guard(lambda q: book.open(q, time.monotonic())),
        "fused.step": guard(lambda q: book.step(q, time.monotonic())),
        "fused.close": guard(book.close),
    }
