"""Memory a request needs, and a budget that admits requests before any work starts.

A peer's resident memory is its baseline (the interpreter, torch, onnxruntime and the model,
measured once after load) plus what its requests hold. Requests hold two kinds of memory:

- **held** bytes, for as long as the request is in flight: its input (a repair canvas and
  mask), its canvas-wide noise and blending buffers, its results (images, PNG, base64 JSON).
  These add up over every request in flight.
- **compute** bytes, the working set of one UNet forward (activations). Forwards run one at a
  time (one executor thread, one process-wide compute lock), so only the largest of the
  requests in flight counts, not their sum.

One forward row is one window of ``P`` pixels (one image, or one repair window for one class;
an unlabelled repair averages every class, so a window is ``classes`` rows). Its working set is
``row_fixed + row_linear * P + row_quadratic * P**2``: the quadratic term is self-attention over
the window's pixels, which dominates a whole-canvas repair. Forwards are capped at
``forward_rows`` rows (``Backend.max_forward_rows``): generations and tile repairs run in
groups, a whole-canvas window cannot be split.

The coefficients are measured for the shipped digits model on the onnx engine (one thread;
peak RSS over the baseline): 120 native rows ~0.1 GiB; one unlabelled (10-row) window of 32, 64
and 128 px: 53 MiB, 0.69 GiB and 10.6 GiB; a labelled 128 px window 1.05 GiB. The fit below
gives 54 MiB, 0.69 GiB, 10.6 GiB and 1.06 GiB. Other models scale the linear terms with their
widest channel count and native pixels (an extrapolation, not a measurement).

``MemoryBook`` is the admission rule: a request whose estimate cannot fit under the budget even
on an idle peer is refused for good (413), one that cannot fit now beside the requests in flight
is refused for now (503 with Retry-After). Pure: no clock, no /proc; the node measures its
baseline at start and calls ``admit``/``release``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MIB = 1 << 20
SHIPPED_WIDEST = 64  # widest UNet channel count of the shipped digits model
SHIPPED_NATIVE = 16  # its native side, pixels

Kind = Literal["generate", "repair"]


@dataclass(frozen=True)
class MemoryModel:
    """What the estimator knows of the loaded model and how it runs forwards."""

    native: int = SHIPPED_NATIVE  # the model's native side, pixels
    channels: int = 1  # image channels
    classes: int | None = 10  # class rows of an unlabelled repair window (None: unconditional)
    forward_rows: int = 128  # rows per UNet forward (Backend.max_forward_rows)
    row_fixed: float = 0.45 * MIB  # per row, whatever its size
    row_linear: float = 800.0  # per row, per pixel (convolution activations)
    row_quadratic: float = 4.2  # per row, per pixel squared (self-attention)
    request_fixed: float = 1.0 * MIB  # per request: job record, events, plan, buffers

    @classmethod
    def for_model(
        cls, native: int, channels: int, classes: int | None, widest: int, forward_rows: int
    ) -> MemoryModel:
        """Coefficients scaled from the shipped model by widest channel count."""
        scale = max(widest, 1) / SHIPPED_WIDEST
        base = cls()
        return cls(
            native=native,
            channels=channels,
            classes=classes,
            forward_rows=max(1, forward_rows),
            row_fixed=base.row_fixed * scale,
            row_linear=base.row_linear * scale,
            row_quadratic=base.row_quadratic * scale,
        )

    def row_bytes(self, pixels: int) -> float:
        """Working set of one forward row over a window of ``pixels`` pixels."""
        return self.row_fixed + self.row_linear * pixels + self.row_quadratic * pixels * pixels


@dataclass(frozen=True)
class Estimate:
    """Bytes a request holds while in flight, and the working set of its largest forward."""

    held: int
    compute: int

    @property
    def total(self) -> int:
        return self.held + self.compute


def estimate(
    model: MemoryModel,
    kind: Kind,
    *,
    count: int = 1,
    height: int = 0,
    width: int = 0,
    labelled: bool = True,
    mode: str = "auto",
    tiled: bool = True,
    windows: int = 1,
) -> Estimate:
    """Memory of one request, as this peer (its origin) would run it in the worst case.

    ``generate``: ``count`` images at the native size (steps do not change the working set:
    each step reuses it). ``repair``: a ``height`` x ``width`` canvas; ``windows`` masked tile
    windows when it is tiled; ``mode`` ``local`` (or ``auto`` with ``tiled`` false) runs the
    whole canvas as one window, which cannot be split into groups.
    """
    native_px = model.native * model.native
    if kind == "generate":
        n = max(1, count)
        rows = min(n, model.forward_rows)
        compute = rows * model.row_bytes(native_px)
        # per image: latent and noise (float32), the uint8 image, its PNG and base64 (~4 x 1 B)
        held = model.request_fixed + n * native_px * model.channels * (3 * 4 + 4)
        return Estimate(int(held), int(compute))
    px = max(1, height) * max(1, width)
    per_window = model.classes if (not labelled and model.classes) else 1
    # fused bands: the warm-up runs the whole canvas here, and a band's window can be most of it
    whole = (
        mode in ("local", "fused")
        or (mode == "auto" and not tiled)
        or max(height, width) <= model.native
    )
    if whole:
        compute = per_window * model.row_bytes(px)
    else:
        group = max(1, model.forward_rows // per_window)  # whole windows per forward
        compute = per_window * min(max(1, windows), group) * model.row_bytes(native_px)
    # canvas and mask in and out, PNG/base64 (~8 B), noise tensors (3 x float32), the blend's
    # float64 accumulator and weights (16 B)
    held = model.request_fixed + px * model.channels * (8 + 12 + 16)
    return Estimate(int(held), int(compute))


class MemoryRefused(Exception):
    """Why a request does not fit; ``now`` is True when it would fit on an idle peer."""

    def __init__(self, message: str, now: bool) -> None:
        super().__init__(message)
        self.now = now


@dataclass
class MemoryBook:
    """Requests in flight and their estimates, against a budget of ``budget`` bytes of RSS.

    ``baseline`` is the peer's resident memory with no request in flight. ``budget`` 0 turns
    the check off (every request is admitted, and still counted).
    """

    budget: int
    baseline: int = 0
    _held: dict[str, Estimate] = field(default_factory=dict)

    def in_flight(self) -> int:
        """Bytes the requests in flight are estimated to need: held ones summed, the largest
        forward once."""
        if not self._held:
            return 0
        return sum(e.held for e in self._held.values()) + max(
            e.compute for e in self._held.values()
        )

    def need(self, est: Estimate) -> int:
        """Estimated RSS with ``est`` admitted beside the requests in flight."""
        held = sum(e.held for e in self._held.values()) + est.held
        compute = max([est.compute, *(e.compute for e in self._held.values())])
        return self.baseline + held + compute

    def check(self, est: Estimate) -> None:
        """Raise ``MemoryRefused`` when ``est`` does not fit (``now``: only beside the others)."""
        if self.budget <= 0:
            return
        alone = self.baseline + est.total
        if alone > self.budget:
            raise MemoryRefused(
                f"this request needs about {_mib(est.total)} MiB on top of the peer's "
                f"{_mib(self.baseline)} MiB, over its memory budget of {_mib(self.budget)} MiB "
                "(--memory-budget-mib); ask for less (fewer images, a smaller canvas, a label, "
                "or mode 'tile')",
                now=False,
            )
        if self.need(est) > self.budget:
            raise MemoryRefused(
                f"this request needs about {_mib(est.total)} MiB and the requests in flight "
                f"hold about {_mib(self.in_flight())} MiB of the {_mib(self.budget)} MiB budget",
                now=True,
            )

    def admit(self, key: str, est: Estimate) -> None:
        """Check ``est`` and hold it under ``key`` until ``release(key)``."""
        self.check(est)
        self._held[key] = est

    def release(self, key: str) -> Estimate | None:
        return self._held.pop(key, None)

    def fits_alone(self, est: Estimate) -> bool:
        return self.budget <= 0 or self.baseline + est.total <= self.budget

    def __len__(self) -> int:
        return len(self._held)


def _mib(n: float) -> int:
    return round(n / MIB)


DEFAULT_BUDGET_MIB = 1024
HEADROOM_MIB = 512


def budget_bytes(configured_mib: int | None, baseline: int) -> int:
    """The budget in bytes: ``None`` is the default, 1 GiB or the baseline plus 512 MiB,
    whichever is larger (the shipped model's peer idles at ~0.5 GiB; a larger model still gets
    room for requests); 0 turns the check off; any other value is taken as it is."""
    if configured_mib is None:
        return max(DEFAULT_BUDGET_MIB * MIB, baseline + HEADROOM_MIB * MIB)
    return max(0, configured_mib) * MIB


def tile_windows(height: int, width: int, tile: int, halo: int = 4) -> int:
    """How many windows ``peer.diffusion.tiles.plan_tiles`` cuts a canvas into."""

    def per_axis(length: int) -> int:
        stride = max(1, tile - 2 * halo)
        if length <= tile:
            return 1
        n = (length - tile) // stride + 1
        return n + (1 if (n - 1) * stride != length - tile else 0)

    return per_axis(height) * per_axis(width)


def for_generate(model: MemoryModel, count: int) -> Estimate:
    return estimate(model, "generate", count=count)


def for_repair(model: MemoryModel, height: int, width: int, labelled: bool, mode: str) -> Estimate:
    """A repair run as ``mode`` says: ``local`` (and ``fused``, held as its whole-canvas
    warm-up) is one whole-canvas window, ``tile`` (and ``auto``, which the node steers to
    ``tile`` when the whole canvas does not fit) is tiled."""
    windows = tile_windows(height, width, model.native)
    return estimate(
        model,
        "repair",
        height=height,
        width=width,
        labelled=labelled,
        mode=mode,
        tiled=mode not in ("local", "fused"),
        windows=windows,
    )
