"""Parallel steps in the planner: the request's options and the predicted make-span.

Pure (no clocks, no I/O). ``peer.diffusion.parareal`` holds the solver; ``peer.runtime.parallel``
runs it over RPC. This module predicts how long that run takes for given segment bounds and
holders, by replaying the pipelined Parareal task graph on the resources it really uses:

- the origin's lane (one worker: coarse solves first, then the fine solves of the segments the
  origin holds; not pre-empted), which also runs the last step;
- one FIFO worker per remote holder, whose fine solve costs its steps plus one hop (round trip,
  latent both ways, and the fixed per-share cost measured on real peers).

With U^k_n the boundary estimates (see ``peer.diffusion.parareal``): U^k_n for n < k equals
U^{k-1}_n bit for bit and costs nothing; every other U^k_n has a coarse solve G(k, n) (n < P) and,
below the last iteration, a fine solve F(k, n). U^k_{n+1} is ready when F(k-1, n), G(k, n),
G(k-1, n) and U^k_n are (or, for n < k, when F(n, n) is). The make-span is U^K_P plus the last
step. ``best_bounds`` shortens the origin's own segment by the coarse work it does first.

How many iterations a tolerance needs is not known before the run; ``assumed_iterations`` takes
it from measured convergence on the shipped model (50 DDIM steps, 2 coarse evaluations, 4
segments: the first iteration changes the image by 33 dB PSNR and lands 42 dB from the serial
image; a second lands at 50 dB), so a tolerance up to 30 dB assumes 1 iteration, up to 40 dB 2,
and beyond that, or ``exact``, all P.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peer.core.errors import BadRequest

MAX_SEGMENTS = 16  # a forced segment count above this makes the prediction itself slow
DEFAULT_TOL_DB = 25.0  # stop when an iteration changes the image by less than this (PSNR)
DEFAULT_COARSE_EVALS = 2
SHARE_OVERHEAD_S = 0.004  # per remote fine solve beyond the round trip: msgpack, executor, state
PARALLEL_KEYS = {"segments", "tolerance_db", "exact", "coarse_evals"}


@dataclass(frozen=True)
class ParallelOptions:
    """What a request may say about parallel steps (all optional)."""

    segments: int | None = None  # force this many segments (None: the planner picks)
    tolerance_db: float = DEFAULT_TOL_DB  # stop when an iteration changes the image less
    exact: bool = False  # run all P iterations: bit-identical to one peer
    coarse_evals: int = DEFAULT_COARSE_EVALS

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": self.segments,
            "tolerance_db": None if self.exact else self.tolerance_db,
            "exact": self.exact,
            "coarse_evals": self.coarse_evals,
        }


def parse_parallel(value: Any, steps: int) -> ParallelOptions | None:
    """The request's ``parallel`` object -> options, or ``BadRequest`` (codes as in requests)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadRequest("invalid_type", f"parallel must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - PARALLEL_KEYS)
    if unknown:
        raise BadRequest(
            "unknown_field",
            f"unknown parallel field(s): {unknown}; allowed: {sorted(PARALLEL_KEYS)}",
        )
    segments = value.get("segments")
    if segments is not None:
        if isinstance(segments, bool) or not isinstance(segments, int):
            raise BadRequest("invalid_type", "parallel.segments must be an integer")
        hi = max(1, min(MAX_SEGMENTS, steps - 1))
        if not 1 <= segments <= hi:
            raise BadRequest(
                "out_of_range", f"parallel.segments must be in [1, {hi}] at {steps} steps"
            )
    tol = value.get("tolerance_db")
    exact = value.get("exact", False)
    if not isinstance(exact, bool):
        raise BadRequest("invalid_type", "parallel.exact must be true or false")
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, int | float):
            raise BadRequest("invalid_type", "parallel.tolerance_db must be a number")
        if not (math.isfinite(tol) and 0 < tol <= 200):
            raise BadRequest(
                "out_of_range", f"parallel.tolerance_db must be in (0, 200], got {tol}"
            )
        if exact:
            raise BadRequest(
                "invalid_value", "parallel: give tolerance_db or exact: true, not both"
            )
    ce = value.get("coarse_evals", DEFAULT_COARSE_EVALS)
    if isinstance(ce, bool) or not isinstance(ce, int):
        raise BadRequest("invalid_type", "parallel.coarse_evals must be an integer")
    if not 1 <= ce <= 8:
        raise BadRequest("out_of_range", f"parallel.coarse_evals must be in [1, 8], got {ce}")
    return ParallelOptions(segments, DEFAULT_TOL_DB if tol is None else float(tol), exact, ce)


def assumed_iterations(opts: ParallelOptions, segments: int) -> int:
    """Iterations the prediction assumes (see the module header for where the rule comes from)."""
    if opts.exact or segments <= 1:
        return max(segments, 1)
    k = 1 if opts.tolerance_db <= 30.0 else 2 if opts.tolerance_db <= 40.0 else segments
    return min(k, segments)


@dataclass(frozen=True)
class Costs:
    """Seconds per fine step and per hop for each holder; the origin is holder 0."""

    step_s: Sequence[float]  # per holder (holder 0 = the origin)
    hop_s: Sequence[float]  # per holder (0 for the origin)
    coarse_s: float  # one coarse solve at the origin (coarse_evals evaluations)
    last_s: float  # the last step at the origin
    wait_s: Sequence[float] = ()  # per holder: backlog before it can start (default 0)


def simulate(bounds: Sequence[int], holder: Sequence[int], costs: Costs, iterations: int) -> float:
    """Make-span of pipelined Parareal over ``bounds`` (segment n held by ``holder[n]``)."""
    P = len(bounds) - 1
    K = max(1, min(iterations, P))
    free = [costs.wait_s[h] if costs.wait_s else 0.0 for h in range(len(costs.step_s))]
    if P == 1:  # one fine solve; the last step waits for the origin's own backlog too
        h = holder[0]
        end = free[h] + costs.hop_s[h] + bounds[1] * costs.step_s[h]
        return max(end, free[0]) + costs.last_s
    U: dict[tuple[int, int], float] = {(k, 0): 0.0 for k in range(K + 1)}
    endF: dict[tuple[int, int], float] = {}
    endG: dict[tuple[int, int], float] = {}
    # tasks: (kind, k, n); kind 0 = coarse, 1 = fine
    queued: set[tuple[int, int, int]] = set()
    ready: list[tuple[float, int, int, int, int]] = []  # (t_ready, kind, seq, k, n)
    seq = 0

    def add_ready() -> None:
        nonlocal seq
        for (k, n), t in list(U.items()):
            if n >= P or n < k:
                continue
            for kind in (0, 1):
                if kind == 1 and k >= K:
                    continue
                if (kind, k, n) not in queued:
                    queued.add((kind, k, n))
                    ready.append((t, kind, seq, k, n))
                    seq += 1

    def form() -> None:
        changed = True
        while changed:
            changed = False
            for k in range(K + 1):
                for n in range(P):
                    if (k, n + 1) in U or (k, n) not in U:
                        continue
                    if k == 0:
                        t = endG.get((0, n))
                    elif n < k:
                        t = endF.get((n, n))
                    else:
                        parts = [endF.get((k - 1, n)), endG.get((k, n)), endG.get((k - 1, n))]
                        t = None if any(p is None for p in parts) else max(U[(k, n)], *parts)  # type: ignore[type-var]
                    if t is not None:
                        U[(k, n + 1)] = t
                        changed = True

    add_ready()
    while (K, P) not in U:
        if not ready:
            raise ValueError("parallel schedule stalled")  # a bug, not a request error
        # the task that starts first on its resource (origin: coarse before fine when both wait)
        best: tuple[float, int, float, int] | None = None
        for i, (t, kind, s, _k, n) in enumerate(ready):
            h = 0 if kind == 0 else holder[n]
            start = max(t, free[h])
            key = (start, 0 if h == 0 and kind == 0 else 1, float(s), i)
            if best is None or key < best:
                best = key
        assert best is not None
        start, _, _, i = best
        t, kind, _s, k, n = ready.pop(i)
        if kind == 0:
            end = start + costs.coarse_s
            free[0] = end
            endG[(k, n)] = end
        else:
            h = holder[n]
            end = start + costs.hop_s[h] + (bounds[n + 1] - bounds[n]) * costs.step_s[h]
            free[h] = end
            endF[(k, n)] = end
        form()
        add_ready()
    return max(U[(K, P)], free[0]) + costs.last_s


def even_bounds(total: int, segments: int, first: int | None = None) -> tuple[int, ...]:
    """Bounds 0 < ... < total of ``segments`` segments; ``first`` fixes the first one's length,
    the rest near-equal (earlier ones longer)."""
    if first is None:
        base, extra = divmod(total, segments)
        lens = [base + (1 if n < extra else 0) for n in range(segments)]
    else:
        base, extra = divmod(total - first, segments - 1)
        lens = [first] + [base + (1 if n < extra else 0) for n in range(segments - 1)]
    out = [0]
    for ln in lens:
        out.append(out[-1] + ln)
    return tuple(out)


def best_bounds(
    total: int, holder: Sequence[int], costs: Costs, iterations: int
) -> tuple[tuple[int, ...], float]:
    """The bounds (the first segment, which starts first and, at the origin, after the coarse
    pass, made shorter or longer as far as it helps) and their make-span."""
    P = len(holder)
    cands = [even_bounds(total, P)]
    if P > 1:
        top = min(2 * total // P, total - (P - 1))
        cands += [even_bounds(total, P, f) for f in range(1, top + 1)]
    scored = [(simulate(b, holder, costs, iterations), b) for b in cands]
    t, b = min(scored, key=lambda x: (x[0], x[1]))
    return b, t
