"""Parallel denoising steps: Parareal over segments of one DDIM trajectory (SRDS-style, pipelined).

The serial sampler is a chain x_0 -> x_1 -> ... -> x_S of S deterministic DDIM steps (eta = 0).
Cut it at boundaries b_0 = 0 < b_1 < ... < b_P = S into P segments. Two solvers move a latent
from boundary n to boundary n+1:

- F, the *fine* solver: the b_{n+1} - b_n real steps, exactly as the serial sampler runs them (a
  ``ChainShare`` over ``[b_n, b_{n+1})`` on any peer with the same ``model_id``);
- G, the *coarse* solver: ``coarse_evals`` DDIM jumps between timesteps of the same schedule
  (one UNet evaluation each; cheap, run at the origin).

Parareal iterates, with U^k_n the estimate of x_{b_n} after iteration k and U^k_0 = x_0:

    U^0_{n+1} = G(U^0_n)
    U^k_{n+1} = F(U^{k-1}_n) + (G(U^k_n) - G(U^{k-1}_n))

The F solves of one iteration are independent: they run on P peers at once. After iteration k the
first k+1 boundaries are exact, so iteration P reproduces the serial latent; because the sum is
written ``F + (G_new - G_old)`` and a boundary whose input did not change takes ``F`` as it is
(no arithmetic), the result at iteration P is *bit-identical* to the serial chain on the same
engine. Usually far fewer iterations reach a stated tolerance: iteration k stops when the image
changed by less than ``tol_db`` (PSNR between the images of U^k_P and U^{k-1}_P).

Pipelining (SRDS): nothing waits for an iteration barrier. A fine solve F(U^k_n) starts the moment
U^k_n is known, and U^k_{n+1} is formed the moment its three inputs are; so iteration k+1 of
segment n overlaps iteration k of segment n+1, and two iterations over P segments take about
``2 * S / P`` fine steps plus a few coarse evaluations of wall time instead of ``S``.

``PararealCore`` is the pure bookkeeping: it returns effects (``RunFine``, ``RunCoarse``,
``Finished``) and takes results; ``solve_in_process`` drives it on one backend (tests, the
prototype figures, the local fallback) and ``peer.runtime.parallel`` drives it over RPC.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from peer.diffusion.errors import InvalidRequestError

if TYPE_CHECKING:
    from peer.diffusion.backend import Backend


def split_steps(total: int, segments: int) -> tuple[int, ...]:
    """Boundaries b_0 = 0 < ... < b_P = total of P near-equal segments (earlier ones longer)."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise InvalidRequestError(f"total steps must be an int >= 1, got {total!r}")
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= total:
        raise InvalidRequestError(f"segments must be an int in [1, {total}], got {segments!r}")
    base, extra = divmod(total, segments)
    out = [0]
    for n in range(segments):
        out.append(out[-1] + base + (1 if n < extra else 0))
    return tuple(out)


def image_psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between the images two latents decode to (clip to [-1, 1], scale to 0..255)."""
    ia = (np.clip(np.asarray(a, np.float64), -1.0, 1.0) + 1.0) * 127.5
    ib = (np.clip(np.asarray(b, np.float64), -1.0, 1.0) + 1.0) * 127.5
    mse = float(np.mean((ia - ib) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


# -- the pure core -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFine:
    """Run the real steps of segment ``segment`` from ``latent`` (iteration ``iteration``)."""

    iteration: int
    segment: int
    start: int
    stop: int
    latent: np.ndarray


@dataclass(frozen=True)
class RunCoarse:
    iteration: int
    segment: int
    start: int
    stop: int
    latent: np.ndarray


@dataclass(frozen=True)
class Finished:
    latent: np.ndarray
    iterations: int  # Parareal iterations used (P: the exact serial result)
    exact: bool  # bit-identical to the serial chain by construction
    change_db: float  # PSNR between the last two iterates' images (inf when equal)


Effect = RunFine | RunCoarse | Finished


@dataclass
class PararealCore:
    """Bookkeeping of one pipelined Parareal solve (no clocks, no I/O; see the module header).

    ``tol_db`` None runs to exactness (iteration P); otherwise the solve stops at the first
    iteration whose final image changed by less than ``tol_db`` from the previous iteration's,
    or at ``max_iterations``. ``x0`` may hold a batch of latents (n, C, H, W): they move together.
    """

    bounds: tuple[int, ...]
    x0: np.ndarray
    tol_db: float | None = 35.0
    max_iterations: int | None = None
    # fine solves F(k, n) for k >= fine_cap are held back (not sent) until iteration fine_cap
    # ends without meeting the tolerance: a stop expected at iteration K wastes no fine solve
    # on iteration K + 1. None: every fine solve goes out at once (full pipelining).
    fine_cap: int | None = None
    held: list[RunFine] = field(default_factory=list)
    U: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    F: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    G: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    same: set[tuple[int, int]] = field(default_factory=set)  # U^k_n is U^{k-1}_n, bit for bit
    result: Finished | None = None
    fine_solves: int = 0
    coarse_solves: int = 0

    def __post_init__(self) -> None:
        b = self.bounds
        if len(b) < 2 or b[0] != 0 or any(y <= x for x, y in itertools.pairwise(b)):
            raise InvalidRequestError(f"segment bounds must rise from 0, got {b}")
        if self.tol_db is not None and not (math.isfinite(self.tol_db) and self.tol_db > 0):
            raise InvalidRequestError(
                f"tol_db must be a positive number or None, got {self.tol_db}"
            )
        if self.fine_cap is not None and (
            isinstance(self.fine_cap, bool)
            or not isinstance(self.fine_cap, int)
            or self.fine_cap < 1
        ):
            raise InvalidRequestError(f"fine_cap must be an int >= 1 or None, got {self.fine_cap}")
        cap = self.segments if self.max_iterations is None else self.max_iterations
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= self.segments:
            raise InvalidRequestError(f"max_iterations must be in [1, {self.segments}], got {cap}")
        self.max_iterations = cap
        self.x0 = np.ascontiguousarray(self.x0, dtype=np.float32)

    @property
    def segments(self) -> int:
        return len(self.bounds) - 1

    def _seg(self, n: int) -> tuple[int, int]:
        return self.bounds[n], self.bounds[n + 1]

    def start(self) -> list[Effect]:
        cap = self.max_iterations or 0
        if self.segments == 1:  # one segment: the fine solve is the serial chain
            self.U[(0, 0)] = self.x0
            return [RunFine(0, 0, *self._seg(0), self.x0)]
        out = self._set(0, 0, self.x0, same=False)
        for k in range(1, cap + 1):
            self._set(k, 0, self.x0, same=True)
        return out + self._sweep()

    # -- results in ----------------------------------------------------------------------

    def on_fine(self, k: int, n: int, latent: np.ndarray) -> list[Effect]:
        if self.result is not None or (k, n) in self.F:
            return []
        self.fine_solves += 1
        self.F[(k, n)] = np.ascontiguousarray(latent, dtype=np.float32)
        if self.segments == 1:
            return self._finish(self.F[(k, n)], 1, exact=True, change=math.inf)
        return self._sweep()

    def on_coarse(self, k: int, n: int, latent: np.ndarray) -> list[Effect]:
        if self.result is not None or (k, n) in self.G:
            return []
        self.coarse_solves += 1
        self.G[(k, n)] = np.ascontiguousarray(latent, dtype=np.float32)
        out: list[Effect] = []
        if k == 0:
            out += self._set(0, n + 1, self.G[(0, n)], same=False)
        return out + self._sweep()

    # -- the recurrences ----------------------------------------------------------------

    def _g(self, k: int, n: int) -> np.ndarray | None:
        while (k, n) in self.same:  # G of an unchanged input is the earlier G
            k -= 1
        return self.G.get((k, n))

    def _f(self, k: int, n: int) -> np.ndarray | None:
        while (k, n) in self.same:
            k -= 1
        return self.F.get((k, n))

    def _sweep(self) -> list[Effect]:
        """Form every U^k_{n+1} whose inputs are known, until nothing more can be formed."""
        out: list[Effect] = []
        cap = self.max_iterations or 0
        changed = True
        while changed and self.result is None:
            changed = False
            for k in range(1, cap + 1):
                for n in range(self.segments):
                    got = self._advance(k, n)
                    if got is not None:
                        out += got
                        changed = True
        return out

    def _advance(self, k: int, n: int) -> list[Effect] | None:
        """Form U^k_{n+1} if its inputs are known and it is not yet (None: nothing formed)."""
        if (k, n + 1) in self.U or (k, n) not in self.U or self.result is not None:
            return None
        if n + 1 == self.segments and (k - 1, n + 1) not in self.U:
            return None  # iteration k ends after iteration k - 1 (its change is measured)
        f = self._f(k - 1, n)
        if f is None:
            return None
        if (k, n) in self.same:  # unchanged input: the fine result as it is, bit for bit
            return self._set(k, n + 1, f, same=self._is_same(k, n + 1, f))
        g_new, g_old = self._g(k, n), self._g(k - 1, n)
        if g_new is None or g_old is None:
            return None
        u = f + (g_new - g_old)
        return self._set(k, n + 1, u, same=self._is_same(k, n + 1, u))

    def _is_same(self, k: int, n: int, u: np.ndarray) -> bool:
        prev = self.U.get((k - 1, n))
        return prev is not None and np.array_equal(prev, u)

    def _set(self, k: int, n: int, u: np.ndarray, *, same: bool) -> list[Effect]:
        self.U[(k, n)] = u
        if same:
            self.same.add((k, n))
        if n == self.segments:
            return self._done_iteration(k)
        out: list[Effect] = []
        if not same:
            if k < (self.max_iterations or 0):  # F(U^k_n) feeds U^{k+1}_{n+1}
                fine = RunFine(k, n, *self._seg(n), u)
                if self.fine_cap is not None and k >= self.fine_cap:
                    self.held.append(fine)
                else:
                    out.append(fine)
            out.append(RunCoarse(k, n, *self._seg(n), u))  # G(U^k_n) feeds U^k_{n+1}, U^{k+1}_{n+1}
        return out

    def _done_iteration(self, k: int) -> list[Effect]:
        if k == 0:
            return []
        u, prev = self.U[(k, self.segments)], self.U[(k - 1, self.segments)]
        change = image_psnr_db(u, prev)
        exact = k >= self.segments or all((k, n) in self.same for n in range(self.segments))
        stop = exact or k >= (self.max_iterations or 0)
        if not stop and self.tol_db is not None and change >= self.tol_db:
            stop = True
        if stop:
            return self._finish(u, k, exact=exact, change=change)
        if self.fine_cap is not None and k >= self.fine_cap:  # the expected stop was missed
            self.fine_cap = None
            out: list[Effect] = list(self.held)
            self.held.clear()
            return out
        return []

    def _finish(self, u: np.ndarray, k: int, *, exact: bool, change: float) -> list[Effect]:
        if self.result is None:
            self.result = Finished(u, k, exact, change)
            return [self.result]
        return []


# -- in-process driver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParallelStepsResult:
    images: np.ndarray  # (n, H, W) uint8
    iterations: int
    exact: bool
    change_db: float
    fine_solves: int
    coarse_solves: int
    critical_path_steps: float  # pipelined wall time in fine-step units (P workers, see below)


def solve_in_process(
    be: Backend,
    labels: Sequence[int | None],
    seeds: Sequence[int],
    steps: int,
    segments: int,
    *,
    tol_db: float | None = 35.0,
    max_iterations: int | None = None,
    coarse_evals: int = 1,
    fine_cap: int | None = None,
) -> ParallelStepsResult:
    """Parareal on one backend, effects run one by one (numbers and tests; no parallelism).

    ``critical_path_steps`` replays the effects on an ideal pipeline (one worker per segment,
    coarse solves at an origin, each coarse evaluation costing one fine step) and reports its
    length in fine steps: what P peers would take, without links or queues.
    """
    states = [be.start_chain(lab, s, steps, "ddim") for lab, s in zip(labels, seeds, strict=True)]
    x0 = np.concatenate([st.latent_tensor().numpy() for st in states])
    core = PararealCore(split_steps(steps, segments), x0, tol_db, max_iterations, fine_cap)
    ready: dict[tuple[str, int, int], float] = {}
    worker_free = [0.0] * core.segments
    origin_free = 0.0
    avail: dict[tuple[int, int], float] = {}
    heap: list[tuple[float, int, Effect]] = []
    seq = 0

    def push(effects: list[Effect]) -> None:
        nonlocal seq
        _note_avail(core, avail, ready)
        for eff in effects:
            t = 0.0 if isinstance(eff, Finished) else avail.get((eff.iteration, eff.segment), 0.0)
            heapq.heappush(heap, (t, seq, eff))
            seq += 1

    push(core.start())
    finished: Finished | None = None
    while heap:
        t_in, _, eff = heapq.heappop(heap)
        if isinstance(eff, Finished):
            finished = eff
            break
        if isinstance(eff, RunFine):
            out = be.run_latents(eff.latent, states, eff.start, eff.stop)
            t = max(t_in, worker_free[eff.segment]) + (eff.stop - eff.start)
            worker_free[eff.segment] = t
            ready[("F", eff.iteration, eff.segment)] = t
            push(core.on_fine(eff.iteration, eff.segment, out))
        else:
            out = be.coarse_jump(eff.latent, states, eff.start, eff.stop, coarse_evals)
            t = max(t_in, origin_free) + min(coarse_evals, eff.stop - eff.start)
            origin_free = t
            ready[("G", eff.iteration, eff.segment)] = t
            push(core.on_coarse(eff.iteration, eff.segment, out))
    if finished is None:
        raise InvalidRequestError("the parareal solve ended without a result")
    done = [be.with_latent(st, finished.latent[i : i + 1], steps) for i, st in enumerate(states)]
    images = np.stack([be.finish_chain(st) for st in done])
    return ParallelStepsResult(
        images,
        finished.iterations,
        finished.exact,
        finished.change_db,
        core.fine_solves,
        core.coarse_solves,
        max([*ready.values(), 0.0]),
    )


def _note_avail(
    core: PararealCore,
    avail: dict[tuple[int, int], float],
    ready: dict[tuple[str, int, int], float],
) -> None:
    """When each known U^k_n became available on the ideal pipeline (from its inputs' times)."""
    for k, n in sorted(core.U):
        if (k, n) in avail:
            continue
        if n == 0:
            avail[(k, n)] = 0.0
            continue
        if k == 0:
            avail[(k, n)] = ready.get(("G", 0, n - 1), 0.0)
            continue
        kf = k - 1
        while (kf, n - 1) in core.same:
            kf -= 1
        t = ready.get(("F", kf, n - 1), 0.0)
        if (k, n - 1) not in core.same:
            t = max(t, ready.get(("G", k, n - 1), 0.0), avail.get((k, n - 1), 0.0))
        avail[(k, n)] = t
