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
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from peer.diffusion.fused import Band, FusedPart, WholeState, assemble, plan_bands, warm_up
from peer.rpc.tensors import pack_tensor, unpack_tensor

log = logging.getLogger("amcoedge.fused")

MAX_SESSIONS = 16
IDLE_S = 120.0  # a session nobody stepped for this long is dropped
# a band's call may run 3x its prediction plus this before a re-plan: the floor the node gives
# a share (``overrun_deadline_s``); a first step builds the engine's session at a new window
# size, and gossip sees a silent peer die in 2-3 s anyway
DEADLINE_SLACK_S = 5.0
WATCH_PERIOD_S = 0.05  # how often a running call's holder is checked against membership
MAX_LOSSES = 3  # holders one band may lose before the run fails
DROP_TIMEOUT_S = 5.0  # a lost holder's session is closed best effort within this
SETTLE_S = 0.5  # at the end, the drops still running get this long, then are cancelled

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
        if params.get("export"):  # the window's state: a warm-up handed on, a band checkpoint
            st = s.part.checkpoint()
            out["state"] = {"step": st.step, "latent": pack_tensor(st.latent), "rng": st.rng_state}
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
    holders: list[str]  # who held each band at the end (after any replacement)
    wall_s: float
    replans: list[dict[str, Any]] = field(default_factory=list)  # holders lost and replaced
    checkpoints: int = 0  # band checkpoints taken (all bands)
    checkpoint_bytes: int = 0  # their msgpack bytes


# what may end a holder's call: the holder is lost (remote faults; a local bug propagates)
Lost = Callable[[str, bool], str | None]  # (holder, past its prediction) -> why it is lost
Replace = Callable[[int, set[str]], tuple[str, Call] | None]  # (band, avoid) -> new holder


class HolderLost(Exception):
    """A band's holder failed, was declared lost, or overran its deadline."""


def deadline_s(predicted_s: float, slack_s: float = DEADLINE_SLACK_S) -> float:
    """How long one call of a band may take before its holder is replaced: well past the
    prediction (the cost model errs) plus a floor for a loaded peer."""
    return 3.0 * max(predicted_s, 0.0) + slack_s


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


@dataclass
class _Band:
    """The origin's book on one band: who holds it, its session, and what re-opens it
    elsewhere: the last checkpoint (None: the open parameters) and every ``fused.step`` sent
    since (their strips included), replayed in order on a replacement."""

    name: str
    call: Call
    sid: str = ""
    ckpt: dict[str, Any] | None = None
    since: list[dict[str, Any]] = field(default_factory=list)
    losses: int = 0


class _Driver:
    """Carries out the rounds of one fused run, replacing lost holders (see ``run_fused``)."""

    def __init__(
        self,
        bands: list[Band],
        calls: Sequence[tuple[str, Call]],
        base: dict[str, Any],
        *,
        lost: Lost | None,
        replace: Replace | None,
        step_s: Sequence[float] | None,
        exchange_s: Sequence[float] | None,
        slack_s: float,
    ) -> None:
        self.bands = bands
        self.held = [_Band(name, call) for name, call in calls]
        self.base = base
        self.lost = lost
        self.replace = replace
        # without a prediction there is no deadline (only failures and membership end a call)
        self.predicted = step_s is not None
        self.step_s = list(step_s) if step_s is not None else [0.0] * len(bands)
        self.exchange_s = list(exchange_s) if exchange_s is not None else [0.0] * len(bands)
        self.slack_s = slack_s
        self.replans: list[dict[str, Any]] = []
        self.abandoned: list[asyncio.Future[Any]] = []

    async def _guarded(self, p: int, method: str, params: dict[str, Any], n: int) -> Any:
        """One call to band p's holder; ``HolderLost`` when it fails, when membership declares
        it lost, or past ``deadline_s`` of its predicted time."""
        from peer.rpc import RpcError

        h = self.held[p]
        predicted = n * self.step_s[p] + self.exchange_s[p]
        why = self.lost(h.name, False) if self.lost is not None else None
        if why is not None:
            raise HolderLost(why)
        t0 = time.perf_counter()
        limit = deadline_s(predicted, self.slack_s) if self.predicted else math.inf
        task = asyncio.ensure_future(h.call(method, params))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=WATCH_PERIOD_S)
                if done:
                    return task.result()
                waited = time.perf_counter() - t0
                why = self.lost(h.name, waited > predicted) if self.lost is not None else None
                if why is not None:
                    raise HolderLost(why)
                if waited >= limit:
                    raise HolderLost(
                        f"{h.name} overran {method} (predicted {predicted:.3f} s) past {limit:.1f} s"
                    )
        except (RpcError, OSError, TimeoutError) as exc:
            raise HolderLost(f"{h.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            if not task.done():
                task.cancel()

    async def open(self, p: int) -> dict[str, Any]:
        try:
            out = await self._guarded(p, "fused.open", self._open_params(p), 0)
        except HolderLost as exc:
            return await self._recover(p, str(exc))
        self.held[p].sid = str(out["session"])
        return dict(out)

    def _open_params(self, p: int) -> dict[str, Any]:
        h = self.held[p]
        start = self.base["start"] if h.ckpt is None else h.ckpt
        return {**self.base, "start": start, "band": self.bands[p].to_wire()}

    async def step(self, p: int, q: dict[str, Any]) -> dict[str, Any]:
        h = self.held[p]
        h.since.append(q)
        try:
            out = await self._guarded(p, "fused.step", {**q, "session": h.sid}, int(q["n"]))
        except HolderLost as exc:
            out = await self._recover(p, str(exc))
        self._keep(p, out)
        return dict(out)

    def _keep(self, p: int, out: dict[str, Any]) -> None:
        if out.get("state") is not None:  # a checkpoint: what came before need not replay
            self.held[p].ckpt = out["state"]
            self.held[p].since = []

    async def close(self, p: int) -> dict[str, Any]:
        try:
            out = await self._guarded(p, "fused.close", {"session": self.held[p].sid}, 0)
        except HolderLost as exc:
            await self._recover(p, str(exc))
            out = await self._guarded(p, "fused.close", {"session": self.held[p].sid}, 0)
        return dict(out)

    async def _recover(self, p: int, why: str) -> dict[str, Any]:
        """Re-open band p on a replacement from its checkpoint and replay the steps since;
        answers the last replayed step's reply (the open's when there is none)."""
        while True:
            h = self.held[p]
            h.losses += 1
            gone = {h.name, *(r["peer"] for r in self.replans)}
            log.warning("fused band %d: %s; re-opening elsewhere", p, why)
            if h.sid:  # best effort: the old session is dropped there, if it still answers
                self.abandoned.append(asyncio.ensure_future(self._drop(h.call, h.sid)))
            nxt = self.replace(p, gone) if self.replace is not None else None
            if nxt is None or h.losses > MAX_LOSSES:
                raise HolderLost(f"band {p}: {why}; no holder left to take it over")
            self.replans.append(
                {
                    "peer": h.name,
                    "band": p,
                    "to": nxt[0],
                    "from_step": None if h.ckpt is None else int(h.ckpt["step"]),
                    "replayed": len(h.since),
                    "reason": why,
                }
            )
            since = list(h.since)
            self.held[p] = _Band(nxt[0], nxt[1], "", h.ckpt, since, h.losses)
            try:
                out = await self._guarded(p, "fused.open", self._open_params(p), 0)
                self.held[p].sid = str(out["session"])
                for q in since:
                    out = await self._guarded(
                        p, "fused.step", {**q, "session": self.held[p].sid}, int(q["n"])
                    )
                return dict(out)
            except HolderLost as exc:
                why = str(exc)

    @staticmethod
    async def _drop(call: Call, sid: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call("fused.close", {"session": sid}), DROP_TIMEOUT_S)

    async def settle(self) -> None:
        """Wait briefly for the best-effort drops of abandoned sessions; cancel the rest."""
        if not self.abandoned:
            return
        _, pending = await asyncio.wait(self.abandoned, timeout=SETTLE_S)
        for t in pending:
            t.cancel()
        await asyncio.gather(*self.abandoned, return_exceptions=True)


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
    checkpoint_every: int = 0,
    lost: Lost | None = None,
    replace: Replace | None = None,
    step_s: Sequence[float] | None = None,
    exchange_s: Sequence[float] | None = None,
    slack_s: float = DEADLINE_SLACK_S,
) -> FusedRun:
    """Fused bands over ``calls`` (one per band, top to bottom: (holder name, its RPC call)).

    ``run_local`` runs blocking work here (the warm-up; default: a thread); with
    ``warm_call`` the warm-up runs as a whole-canvas session on that holder instead. The strips each
    holder answers go to its neighbours with the next ``fused.step``; ``strip_bytes`` counts
    them once, as msgpack, whoever holds the bands (the relay through the origin is not doubled).

    Losing a holder: a call that fails (an RPC fault), a holder ``lost`` names (membership), or
    a call past ``deadline_s`` of its prediction (``step_s`` per band step, ``exchange_s`` per
    call; no deadline without ``step_s``) ends that holder's part; ``replace`` names the band's next holder, which re-opens it
    from the band's last checkpoint (every ``checkpoint_every`` rounds each holder exports its
    window latent and generator state; 0: none, the band restarts from its open) and replays
    the steps sent since, strips included. The image is then bit-identical to a run without
    the loss (same engine and thread count on every holder). Without ``replace`` a loss raises
    ``HolderLost``.
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
    d = _Driver(
        bands,
        calls,
        _base(img, mask, steps, seed, label, start),
        lost=lost,
        replace=replace,
        step_s=step_s,
        exchange_s=exchange_s,
        slack_s=slack_s,
    )
    try:
        opened = await asyncio.gather(*(d.open(p) for p in range(len(bands))))
        step = int(opened[0]["step"])
        strips: list[dict[str, Any]] = [{} for _ in bands]
        exchanges = moved = rounds = ckpts = ckpt_bytes = 0
        while step < steps:
            rounds += 1
            export = checkpoint_every > 0 and rounds % checkpoint_every == 0
            params = []
            for p in range(len(bands)):
                q: dict[str, Any] = {"n": sync_every}
                if rounds > 1:
                    q["above"] = strips[p - 1].get("down") if p > 0 else None
                    q["below"] = strips[p + 1].get("up") if p + 1 < len(bands) else None
                    moved += sum(_strip_bytes(q[k]) for k in ("above", "below") if q[k] is not None)
                    exchanges += 1 if p == 0 else 0
                if export:
                    q["export"] = True
                params.append(q)
            outs = await asyncio.gather(*(d.step(p, q) for p, q in enumerate(params)))
            for o in outs:
                if o.get("state") is not None:
                    ckpts += 1
                    ckpt_bytes += _strip_bytes(o["state"])
            strips = [o["strips"] for o in outs]
            step = int(outs[0]["step"])
        cores = await asyncio.gather(*(d.close(p) for p in range(len(bands))))
    finally:
        await d.settle()
    image = assemble(img.shape, bands, [unpack_tensor(c["core"]) for c in cores])
    split = max(steps - warmup, 1)
    return FusedRun(
        image,
        exchanges,
        moved,
        moved / split,
        bands,
        [h.name for h in d.held],
        time.perf_counter() - t0,
        d.replans,
        ckpts,
        ckpt_bytes,
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
