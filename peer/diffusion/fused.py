"""Fused tiles: one repair canvas split into bands held by different peers, fused every step.

The untiled repair runs the UNet on the whole canvas. Here the canvas is cut into P horizontal
bands; part p *owns* the core rows [c0, c1) and denoises a window that adds ``halo`` rows of its
neighbours' territory on each interior side. After each step (or every ``sync_every`` steps) the
neighbours exchange their boundary rows: part p sends its first and last ``halo`` core rows, and
overwrites its halo rows with what the neighbours sent. So each window sees its surroundings as
they are *now*, not as they were at the start (the blend-at-the-end tile mode), and the bands
stay one picture: only ``2 * halo * width`` latent values per interior seam cross the wire per
exchange (kilobytes), never feature maps.

Randomness is canvas-wide, as in ``Backend.repair``: every part replays the canvas generator and
crops its window, so a band sees exactly the noise the untiled run draws. With ``warmup`` steps
the origin first runs the whole canvas (bit-identical to the untiled repair so far) and hands its
latent and generator state to the parts: global content such as a large hole is settled before
the split (DistriFusion and AsyncDiff warm up the same way).

``FusedPart`` is one band's state and step function (a peer keeps one per session);
``repair_fused`` runs all parts in one process (tests, prototype figures, the one-peer baseline).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from peer.diffusion.errors import InvalidRequestError
from peer.diffusion.images import image_to_tensor, tensor_to_image

if TYPE_CHECKING:
    from peer.diffusion.backend import Backend


@dataclass(frozen=True)
class Band:
    """Part of a canvas: owned rows [core0, core1), denoised over window rows [win0, win1)."""

    core0: int
    core1: int
    win0: int
    win1: int

    def to_wire(self) -> list[int]:
        return [self.core0, self.core1, self.win0, self.win1]

    @classmethod
    def from_wire(cls, data: object, height: int) -> Band:
        if (
            not isinstance(data, list | tuple)
            or len(data) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in data)
        ):
            raise InvalidRequestError(f"a band is four ints [core0, core1, win0, win1], got {data}")
        b = cls(*data)
        if not 0 <= b.win0 <= b.core0 < b.core1 <= b.win1 <= height:
            raise InvalidRequestError(f"band {data} does not fit a canvas of {height} rows")
        return b


def plan_bands(height: int, parts: int, halo: int, quantum: int = 4) -> list[Band]:
    """P bands of near-equal height (multiples of ``quantum`` rows), each with ``halo`` rows of
    context on interior sides."""
    for name, v in (("height", height), ("parts", parts), ("halo", halo), ("quantum", quantum)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRequestError(f"{name} must be an int, got {v!r}")
    if quantum < 1 or height % quantum:
        raise InvalidRequestError(f"height {height} must be a multiple of {quantum}")
    if halo < 0 or halo % quantum:
        raise InvalidRequestError(f"halo must be a non-negative multiple of {quantum}, got {halo}")
    rows = height // quantum
    if not 1 <= parts <= rows:
        raise InvalidRequestError(f"parts must be in [1, {rows}] for {height} rows, got {parts}")
    base, extra = divmod(rows, parts)
    cuts = [0]
    for p in range(parts):
        cuts.append(cuts[-1] + (base + (1 if p < extra else 0)) * quantum)
    out = []
    for c0, c1 in itertools.pairwise(cuts):
        out.append(Band(c0, c1, max(c0 - halo, 0), min(c1 + halo, height)))
    for b, nxt in itertools.pairwise(out):
        if b.win1 > nxt.core1 or nxt.win0 < b.core0:
            raise InvalidRequestError(f"halo {halo} is wider than a neighbouring band")
    return out


def seam_bytes(bands: Sequence[Band], width: int, channels: int = 1) -> int:
    """Bytes one exchange moves (float32 rows, both directions over every interior seam)."""
    total = 0
    for b, nxt in itertools.pairwise(bands):
        total += (b.win1 - b.core1) + (nxt.core0 - nxt.win0)
    return 4 * channels * width * total


@dataclass
class WholeState:
    """The whole canvas after ``step`` steps: latent (1, C, H, W) float32 and generator state."""

    step: int
    latent: np.ndarray
    rng_state: bytes


class FusedPart:
    """One band of a fused repair (create, then ``run`` steps and ``put`` neighbour rows).

    Without ``start`` the part begins at step 0 exactly as the untiled repair does; with one
    (a ``WholeState`` from ``warm_up``) it resumes from the whole canvas after the warm-up; a
    ``WholeState`` whose latent holds only this band's window rows (``checkpoint``) resumes the
    band exactly where that checkpoint was taken (a lost holder's band, re-opened elsewhere).
    """

    def __init__(
        self,
        be: Backend,
        canvas: np.ndarray,
        mask: np.ndarray,
        band: Band,
        steps: int,
        seed: int,
        label: int | None = None,
        scheduler: str = "ddim",
        start: WholeState | None = None,
    ) -> None:
        img, m = be._check_canvas(canvas, mask)
        self.be = be
        self.band = band
        h, w = img.shape[:2]
        if not 0 <= band.win0 <= band.core0 < band.core1 <= band.win1 <= h:
            raise InvalidRequestError(f"band {band.to_wire()} does not fit {h} rows")
        if (band.win1 - band.win0) % be.downscale or w % be.downscale:
            raise InvalidRequestError(f"windows must be multiples of {be.downscale} px")
        self.steps = be._check_steps(steps)
        self.sampler = be._sampler(scheduler, self.steps)
        self.label = be._check_repair_label(label)
        self.full = (1, be.in_channels, h, w)
        self.img, self.mask = img, m
        rows = slice(band.win0, band.win1)
        self.x0 = image_to_tensor(img, be.in_channels).unsqueeze(0)[:, :, rows]
        self.m = torch.from_numpy(m)[None, None][:, :, rows]
        self.gen = torch.Generator(device="cpu")
        if start is None:
            self.gen.manual_seed(int(seed))
            x_t = torch.randn(self.full, generator=self.gen)[:, :, rows]
            t0 = self.sampler.timesteps[0]
            self.x = torch.where(self.m, x_t, self.sampler.add_noise(self.x0, x_t, t0))
            self.i = 0
        else:
            window = (*self.full[:2], band.win1 - band.win0, w)
            if start.latent.shape not in (self.full, window) or not 0 <= start.step <= self.steps:
                raise InvalidRequestError("the start state does not fit this canvas or band")
            self.gen.set_state(torch.frombuffer(bytearray(start.rng_state), dtype=torch.uint8))
            # the whole canvas (after a warm-up) or this band's window (a band checkpoint)
            lat = start.latent if start.latent.shape == window else start.latent[:, :, rows]
            self.x = torch.from_numpy(np.array(lat, dtype=np.float32))
            self.i = int(start.step)

    @property
    def done(self) -> bool:
        return self.i >= self.steps

    def run(self, n: int) -> dict[str, np.ndarray]:
        """Run up to ``n`` steps; returns the core rows the neighbours need (``up``: for the
        band above, ``down``: for the band below; absent at the canvas edges)."""
        from peer.diffusion.backend import _COMPUTE_LOCK

        be, s, band = self.be, self.sampler, self.band
        rows = slice(band.win0, band.win1)
        stop = min(self.i + max(int(n), 0), self.steps)
        with _COMPUTE_LOCK, torch.inference_mode():
            be._enter()
            for i in range(self.i, stop):
                n_known = torch.randn(self.full, generator=self.gen)[:, :, rows]
                n_step = (
                    torch.randn(self.full, generator=self.gen)[:, :, rows] if s.stochastic else None
                )
                eps = be._eps(self.x, s.timesteps[i], [self.label])
                x_unknown = s.step(eps, i, self.x, n_step)
                x_known = s.add_noise(self.x0, n_known, s.prev_timestep(i))
                self.x = torch.where(self.m, x_unknown, x_known)
        self.i = stop
        return self.strips()

    def checkpoint(self) -> WholeState:
        """This band's state now: its window latent and the canvas generator's state."""
        lat = np.ascontiguousarray(self.x.numpy()).copy()
        return WholeState(self.i, lat, bytes(self.gen.get_state().numpy()))

    def strips(self) -> dict[str, np.ndarray]:
        b = self.band
        x = self.x.numpy()
        out: dict[str, np.ndarray] = {}
        if b.core0 > 0:
            out["up"] = np.ascontiguousarray(
                x[:, :, b.core0 - b.win0 : b.core0 - b.win0 + self._h_up]
            )
        if b.core1 < self.full[2]:
            lo = b.core1 - b.win0 - self._h_down
            out["down"] = np.ascontiguousarray(x[:, :, lo : b.core1 - b.win0])
        return out

    # the neighbours' halos reach as far into this band as this band's own halo reaches into
    # theirs (plan_bands makes every interior halo the same width)
    @property
    def _h_up(self) -> int:
        return self.band.core0 - self.band.win0

    @property
    def _h_down(self) -> int:
        return self.band.win1 - self.band.core1

    def put(self, above: np.ndarray | None, below: np.ndarray | None) -> None:
        """Overwrite the halo rows with the neighbours' current core rows."""
        with torch.inference_mode():
            self._put(above, below)

    def _put(self, above: np.ndarray | None, below: np.ndarray | None) -> None:
        b = self.band
        if above is not None:
            k = b.core0 - b.win0
            self.x[:, :, :k] = torch.from_numpy(
                _fit(above, (*self.x.shape[:2], k, self.x.shape[3]))
            )
        if below is not None:
            k = b.win1 - b.core1
            y = self.x.shape[2]
            self.x[:, :, y - k :] = torch.from_numpy(
                _fit(below, (*self.x.shape[:2], k, self.x.shape[3]))
            )

    def core_latent(self) -> np.ndarray:
        b = self.band
        return np.ascontiguousarray(self.x[:, :, b.core0 - b.win0 : b.core1 - b.win0].numpy())

    def core_image(self) -> np.ndarray:
        """The finished band's core rows as uint8 (known pixels kept exactly)."""
        if not self.done:
            raise InvalidRequestError(f"band is at step {self.i} of {self.steps}, not done")
        b = self.band
        gen = tensor_to_image(self.x[0])[b.core0 - b.win0 : b.core1 - b.win0]
        known = self.img[b.core0 : b.core1]
        tm = self.mask[b.core0 : b.core1]
        return np.where(tm if known.ndim == 2 else tm[:, :, None], gen, known)


def _fit(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    if a.shape != shape:
        raise InvalidRequestError(f"halo rows of shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidRequestError("halo rows hold non-finite values")
    return a


def warm_up(
    be: Backend,
    canvas: np.ndarray,
    mask: np.ndarray,
    steps: int,
    seed: int,
    warmup: int,
    label: int | None = None,
    scheduler: str = "ddim",
) -> WholeState:
    """The first ``warmup`` steps on the whole canvas (as the untiled repair runs them)."""
    h = np.asarray(canvas).shape[0]
    whole = FusedPart(be, canvas, mask, Band(0, h, 0, h), steps, seed, label, scheduler)
    whole.run(warmup)
    return WholeState(whole.i, whole.x.numpy().copy(), bytes(whole.gen.get_state().numpy()))


def exchange(parts: Sequence[FusedPart], strips: Sequence[dict[str, np.ndarray]]) -> None:
    """Hand every band its neighbours' rows (``parts`` in band order, top to bottom)."""
    for p, part in enumerate(parts):
        above = strips[p - 1].get("down") if p > 0 else None
        below = strips[p + 1].get("up") if p + 1 < len(parts) else None
        part.put(above, below)


def assemble(
    shape: tuple[int, ...], bands: Sequence[Band], cores: Sequence[np.ndarray]
) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    for b, img in zip(bands, cores, strict=True):
        out[b.core0 : b.core1] = img
    return out


@dataclass(frozen=True)
class FusedResult:
    image: np.ndarray
    exchanges: int
    bytes_per_step: float


def repair_fused(
    be: Backend,
    canvas: np.ndarray,
    mask: np.ndarray,
    steps: int,
    seed: int,
    *,
    parts: int = 4,
    halo: int = 8,
    sync_every: int = 1,
    warmup: int = 0,
    label: int | None = None,
    scheduler: str = "ddim",
) -> FusedResult:
    """A fused-band repair with every part in this process (same numbers as over peers)."""
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise InvalidRequestError(f"sync_every must be an int >= 1, got {sync_every!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= steps:
        raise InvalidRequestError(f"warmup must be an int in [0, {steps}], got {warmup!r}")
    img = np.asarray(canvas)
    bands = plan_bands(img.shape[0], parts, halo, be.downscale)
    start = warm_up(be, img, mask, steps, seed, warmup, label, scheduler) if warmup else None
    ps = [FusedPart(be, img, mask, b, steps, seed, label, scheduler, start) for b in bands]
    exchanges = 0
    while not ps[0].done:
        strips = [p.run(sync_every) for p in ps]
        if not ps[0].done:
            exchange(ps, strips)
            exchanges += 1
    image = assemble(img.shape, bands, [p.core_image() for p in ps])
    split_steps = steps - warmup
    per = seam_bytes(bands, img.shape[1], be.in_channels) * exchanges / max(split_steps, 1)
    return FusedResult(image, exchanges, per)


def describe(bands: Sequence[Band]) -> list[dict[str, Any]]:
    return [{"core": [b.core0, b.core1], "window": [b.win0, b.win1]} for b in bands]
