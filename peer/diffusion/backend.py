"""The diffusion executor: the denoising loop written out, over any step range.

Randomness. Every random number comes from a CPU `torch.Generator` owned by the request:
- a generated image (a chain) has its own generator seeded with its seed; it draws the initial
  latent, then one noise tensor per stochastic step. The generator state travels with the chain,
  so a chain resumed on another backend draws exactly what it would have drawn here;
- a repair has one generator per canvas; it draws canvas-sized noise (the initial latent, then
  per step the re-noising of the known region and, for stochastic samplers, the step noise), and
  each window crops its part. A tile therefore sees the same noise as the untiled run.

Batching. Images of a batch run in one UNet forward; the model is prepared so that each sample's
output is bit-identical to running it alone (see `peer.diffusion.unet`), and every sampler step
is elementwise, so a batch share equals the images generated one by one.

Engines. The UNet forward runs on a denoiser engine (`peer.diffusion.engine`): `torch` (eager,
the reference numerics) or `onnx` (onnxruntime, `peer.diffusion.onnx_engine`), or `auto`, which
times both at load and keeps the faster. Everything around the forward (samplers, noise, chain
state) is the same torch code for both. The two engines' outputs differ in the last bits, so an
onnx backend's `model_id` carries the engine (`...+onnx-cpu`): batch and steps exactness hold
among backends with the same `model_id`, and a chain state from another engine is refused.

Threads. Calls block; run them in a worker thread. A process-wide lock serialises them (the torch
thread count is process-wide) and each call pins `torch.set_num_threads(threads)` first. The
onnx engine's session has `threads` intra-op threads of its own.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from peer.diffusion.chain import ChainState
from peer.diffusion.cost import CostModel, fit_affine
from peer.diffusion.engine import (
    AUTO_BATCHES,
    AUTO_REPEATS,
    AUTO_WARMUP,
    Denoiser,
    TorchDenoiser,
    calibration_seconds,
    check_engine,
    median_seconds,
)
from peer.diffusion.errors import ChainStateError, InvalidRequestError, ModelLoadError
from peer.diffusion.images import check_image, check_mask, image_to_tensor, tensor_to_image
from peer.diffusion.samplers import Sampler, coarse_timesteps, ddim_jump, make_sampler
from peer.diffusion.tiles import Tile, blend_tiles, plan_tiles
from peer.diffusion.unet import BATCH_QUANTUM, LoadedModel, load_model

_COMPUTE_LOCK = threading.RLock()
MAX_SEED = 2**63 - 1
MAX_BATCH = 1024
MAX_CANVAS = 1024  # pixels per side
# Rows (windows x class rows) in one UNet forward of a repair. Windows past this run in further
# groups, each over the whole step loop, so the working set of a repair stays bounded whatever
# the canvas. For the shipped model on onnx (one thread) a 128x128 unlabelled repair of 81
# masked windows (810 rows) peaked at 1.23 GiB RSS in one forward and 0.57 GiB in groups of
# 128 rows (0.47 GiB before it), at the same CPU time (5.6 s for 2 steps). Grouping leaves
# every output bit-identical (tests/peer/diffusion/test_tile_groups.py): each row of a forward
# equals that row alone (the batch invariance both engines keep), and every group redraws the
# same canvas-wide noise from the seed.
MAX_FORWARD_ROWS = 128


def resolve_device(device: str) -> torch.device:
    if not isinstance(device, str):
        raise InvalidRequestError(f"device must be a string, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidRequestError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError("CUDA was requested but is not available")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidRequestError(f"unsupported device {device!r}")
    return dev


def load_backend(
    model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    threads: int = 1,
    engine: str = "torch",
) -> Backend:
    """Load a local diffusers model directory (None: the shipped digits16) into a Backend.

    `engine`: `torch` (PyTorch eager), `onnx` (onnxruntime over the cached ONNX export; raises
    `ModelLoadError` when it cannot be built or fails its load-time checks) or `auto` (both are
    timed, the faster is kept; an onnx engine that cannot load leaves torch, with the reason in
    `engine_info()["onnx_error"]`).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidRequestError(f"threads must be an int >= 1, got {threads!r}")
    requested = check_engine(engine)
    dev = resolve_device(device)
    with _COMPUTE_LOCK:
        torch.set_num_threads(threads)
        loaded = load_model(model, dev)
        be = Backend(loaded, dev, threads)
        if requested != "torch":
            be._setup_engine(loaded, requested)
    return be


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequestError(f"{name} must be an int, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise InvalidRequestError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


class Backend:
    """One loaded model on one device with a fixed torch thread count."""

    def __init__(self, loaded: LoadedModel, device: torch.device, threads: int) -> None:
        self.max_forward_rows = MAX_FORWARD_ROWS  # see MAX_FORWARD_ROWS; tests lower it
        self._unet = loaded.unet
        self._sched_cfg = loaded.scheduler_config
        self._samplers: dict[tuple[str, int], Sampler] = {}
        cfg = self._unet.config
        self.base_model_id: str = loaded.model_id
        self.model_id: str = loaded.model_id
        self.model_dir = loaded.files.root
        self.device: str = str(device)
        self._device = device
        self.threads = threads
        self.sample_size: int = int(
            cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        )
        self.in_channels: int = int(cfg.in_channels)
        n_classes = cfg.num_class_embeds
        self.num_classes: int | None = int(n_classes) if n_classes else None
        self.downscale: int = 2 ** (len(cfg.block_out_channels) - 1)
        self.num_train_timesteps = int(self._sched_cfg.get("num_train_timesteps", 1000))
        self._torch = TorchDenoiser(self._unet, device)
        self._denoiser: Denoiser = self._torch
        self._info: dict[str, Any] = {
            "requested": "torch",
            "ms_per_step": {},
            "onnx_model": None,
            "onnx_export": None,
            "onnx_error": None,
        }

    # ---------------------------------------------------------------------------- engines
    @property
    def engine(self) -> str:
        """The engine that runs the UNet forward: `torch` or `onnx`."""
        return self._denoiser.name

    @property
    def provider(self) -> str:
        """What executes it: `torch-cpu`, `torch-cuda`, or the onnxruntime provider that runs."""
        return self._denoiser.provider

    @property
    def batch_quantum(self) -> int:
        """Forwards are padded to a multiple of this many images (the planner's cost unit).

        The torch engine pads to an even batch for batch invariance; the onnx engine needs no
        padding (see `peer.diffusion.onnx_engine`), so one image costs one row there.
        """
        return BATCH_QUANTUM if self.engine == "torch" else 1

    def _setup_engine(self, loaded: LoadedModel, requested: str) -> None:
        from peer.diffusion.onnx_engine import load_onnx_denoiser

        self._info["requested"] = requested
        try:
            got = load_onnx_denoiser(
                loaded, self._device, self.threads, self._torch, self.num_classes
            )
        except ModelLoadError as exc:
            if requested == "onnx":
                raise
            self._info["onnx_error"] = str(exc)
            return
        self._info.update(
            onnx_model=str(got.artifact.path),
            onnx_export=got.artifact.status,
            onnx_probe_max_abs_diff=got.probe_max_abs_diff,
            onnx_thread_invariant=got.thread_invariant,
        )
        if requested == "auto":
            self._enter()
            for den in (self._torch, got.denoiser):
                for b in AUTO_BATCHES:
                    self._record_ms(
                        den.name, b, self._step_seconds(den, b, AUTO_REPEATS, AUTO_WARMUP)
                    )
            ms = self._info["ms_per_step"]
            if sum(ms["onnx"].values()) >= sum(ms["torch"].values()):
                return
        self._denoiser = got.denoiser
        tag = "cpu" if self._device.type == "cpu" else "cuda"
        self.model_id = f"{self.base_model_id}+onnx-{tag}"
        if not got.thread_invariant:
            self.model_id += f"-t{self.threads}"

    def _record_ms(self, engine: str, batch: int, seconds: float) -> None:
        self._info["ms_per_step"].setdefault(engine, {})[str(batch)] = round(seconds * 1e3, 4)

    def engine_info(self) -> dict[str, Any]:
        """The engine in use and what is known of both: for `info`, `/metrics` and benchmarks.

        `ms_per_step` maps engine -> {batch size (str): ms per denoising step}: both engines as
        timed by `auto` at load, and the running engine as measured by `calibrate()`.
        """
        info = {
            "engine": self.engine,
            "provider": self.provider,
            "threads": self.threads,
            "model_id": self.model_id,
            **self._info,
        }
        info["ms_per_step"] = {k: dict(v) for k, v in self._info["ms_per_step"].items()}
        return info

    # ----------------------------------------------------------------- validation helpers
    def _sampler(self, name: str, steps: int) -> Sampler:
        key = (name, steps)
        if key not in self._samplers:
            if len(self._samplers) > 64:
                self._samplers.clear()
            self._samplers[key] = make_sampler(name, self._sched_cfg, steps)
        return self._samplers[key]

    def _check_steps(self, steps: object) -> int:
        return _check_int("steps", steps, 1, self.num_train_timesteps)

    def _check_label(self, label: object, seed: int) -> int | None:
        """A generation label; None picks one from the seed (class-conditional models)."""
        if self.num_classes is None:
            if label is not None:
                raise InvalidRequestError("this model is unconditional; label must be None")
            return None
        if label is None:
            return random.Random(seed).randrange(self.num_classes)
        return _check_int("label", label, 0, self.num_classes - 1)

    def _check_repair_label(self, label: object) -> int | None:
        if label is None:
            return None
        if self.num_classes is None:
            raise InvalidRequestError("this model is unconditional; label must be None")
        return _check_int("label", label, 0, self.num_classes - 1)

    def _check_state(self, st: object) -> ChainState:
        if not isinstance(st, ChainState):
            raise ChainStateError(f"expected a ChainState, got {type(st).__name__}")
        if st.model_id != self.model_id:
            raise ChainStateError(f"chain is for model {st.model_id}, this is {self.model_id}")
        want = (1, self.in_channels, self.sample_size, self.sample_size)
        if st.shape != want:
            raise ChainStateError(f"latent shape {st.shape} does not fit the model {want}")
        self._check_label(st.label, st.seed)
        return st

    def _check_canvas(self, canvas: object, mask: object) -> tuple[np.ndarray, np.ndarray]:
        img = check_image(canvas, self.in_channels, "image")
        h, w = img.shape[:2]
        if h > MAX_CANVAS or w > MAX_CANVAS:
            raise InvalidRequestError(f"canvas {h}x{w} exceeds {MAX_CANVAS} px per side")
        return img, check_mask(mask, (h, w))

    # ---------------------------------------------------------------------- the UNet call
    def _eps(
        self,
        x: torch.Tensor,
        t: int,
        labels: Sequence[int | None],
        denoiser: Denoiser | None = None,
    ) -> torch.Tensor:
        """Model output for a batch at timestep t; label None averages over all classes."""
        n = x.shape[0]
        if self.num_classes is None:
            rows, cls = x, None
            groups = [1] * n
        else:
            idx: list[int] = []
            cl: list[int] = []
            groups = []
            for i, lab in enumerate(labels):
                members = list(range(self.num_classes)) if lab is None else [lab]
                idx += [i] * len(members)
                cl += members
                groups.append(len(members))
            rows = x[idx] if len(idx) != n else x
            cls = torch.tensor(cl, dtype=torch.long)
        out = (denoiser or self._denoiser)(rows, int(t), cls)
        if all(g == 1 for g in groups):
            return out
        parts, k = [], 0
        for g in groups:
            parts.append(out[k : k + g].mean(dim=0, keepdim=True))
            k += g
        return torch.cat(parts)

    def _enter(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    # ------------------------------------------------------------------------- generation
    def generate(
        self,
        labels: Sequence[int | None] | None,
        seeds: Sequence[int],
        steps: int,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """Images (n, H, W) uint8, image i from (labels[i], seeds[i]); bit-identical per image."""
        if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
            raise InvalidRequestError("seeds must be a sequence of ints")
        n = len(seeds)
        if not 1 <= n <= MAX_BATCH:
            raise InvalidRequestError(f"need 1 to {MAX_BATCH} seeds, got {n}")
        labs = [None] * n if labels is None else list(labels)
        if len(labs) != n:
            raise InvalidRequestError(f"{len(labs)} labels for {n} seeds")
        states = [
            self.start_chain(lab, s, steps, scheduler) for lab, s in zip(labs, seeds, strict=True)
        ]
        group = max(1, self.max_forward_rows)
        states = [
            done
            for g in range(0, n, group)
            for done in self.run_chains(states[g : g + group], steps)
        ]
        return np.stack([self.finish_chain(st) for st in states])

    def start_chain(
        self, label: int | None, seed: int, steps: int, scheduler: str = "ddim"
    ) -> ChainState:
        """Step-0 state of one image's chain: the initial latent drawn from its generator."""
        seed = _check_int("seed", seed, 0, MAX_SEED)
        steps = self._check_steps(steps)
        lab = self._check_label(label, seed)
        self._sampler(scheduler, steps)  # validates the scheduler name
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn((1, self.in_channels, self.sample_size, self.sample_size), generator=gen)
        shape, latent = ChainState.pack_latent(x)
        return ChainState(
            model_id=self.model_id,
            scheduler=scheduler,
            total=steps,
            step=0,
            label=lab,
            seed=seed,
            shape=shape,
            latent=latent,
            rng_state=ChainState.pack_rng(gen),
        )

    def run_steps(self, st: ChainState, stop: int) -> ChainState:
        """Run steps [st.step, stop) of one chain."""
        return self.run_chains([st], stop)[0]

    def run_chains(self, states: Sequence[ChainState], stop: int) -> list[ChainState]:
        """Run steps [step, stop) of several chains in one batch (same scheduler, total, step)."""
        if not states:
            raise InvalidRequestError("run_chains needs at least one chain")
        if len(states) > MAX_BATCH:
            raise InvalidRequestError(f"at most {MAX_BATCH} chains per call")
        sts = [self._check_state(s) for s in states]
        first = sts[0]
        for s in sts[1:]:
            if (s.scheduler, s.total, s.step) != (first.scheduler, first.total, first.step):
                raise ChainStateError("chains run together must share scheduler, total and step")
        stop = _check_int("stop", stop, first.step, first.total)
        try:
            sampler = self._sampler(first.scheduler, first.total)
        except InvalidRequestError as exc:
            raise ChainStateError(str(exc)) from exc
        if stop == first.step:
            return list(sts)
        gens = [s.generator() for s in sts]
        labels = [s.label for s in sts]
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            x = torch.cat([s.latent_tensor() for s in sts]).to(self._device)
            for i in range(first.step, stop):
                eps = self._eps(x, sampler.timesteps[i], labels)
                noise = None
                if sampler.stochastic:
                    noise = torch.cat([torch.randn(first.shape, generator=g) for g in gens])
                    noise = noise.to(self._device)
                x = sampler.step(eps, i, x, noise)
            out = []
            for k, s in enumerate(sts):
                shape, latent = ChainState.pack_latent(x[k : k + 1])
                out.append(
                    ChainState(
                        model_id=s.model_id,
                        scheduler=s.scheduler,
                        total=s.total,
                        step=stop,
                        label=s.label,
                        seed=s.seed,
                        shape=shape,
                        latent=latent,
                        rng_state=ChainState.pack_rng(gens[k]),
                    )
                )
        return out

    # ------------------------------------------------------- parallel steps (Parareal)
    def with_latent(self, st: ChainState, latent: np.ndarray, step: int) -> ChainState:
        """``st`` moved to ``step`` with latent ``latent`` (1, C, H, W): a Parareal boundary.

        Only deterministic samplers carry no per-step randomness, so only they may be resumed
        from a latent that was not reached by running their steps.
        """
        st = self._check_state(st)
        if self._sampler(st.scheduler, st.total).stochastic:
            raise InvalidRequestError(f"{st.scheduler} is stochastic: parallel steps need ddim")
        step = _check_int("step", step, 0, st.total)
        arr = np.ascontiguousarray(latent, dtype=np.float32)
        if arr.shape != st.shape:
            raise ChainStateError(f"latent shape {arr.shape} is not the chain's {st.shape}")
        if not np.all(np.isfinite(arr)):
            raise ChainStateError("latent holds non-finite values")
        shape, packed = ChainState.pack_latent(torch.from_numpy(arr))
        return ChainState(
            model_id=st.model_id,
            scheduler=st.scheduler,
            total=st.total,
            step=step,
            label=st.label,
            seed=st.seed,
            shape=shape,
            latent=packed,
            rng_state=st.rng_state,
        )

    def run_latents(
        self, latents: np.ndarray, states: Sequence[ChainState], start: int, stop: int
    ) -> np.ndarray:
        """The fine solve: steps [start, stop) of the chains ``states`` from ``latents``
        (n, C, H, W), exactly as ``run_chains`` runs them; returns the latents at ``stop``."""
        if len(latents) != len(states):
            raise InvalidRequestError(f"{len(latents)} latents for {len(states)} chains")
        sts = [self.with_latent(s, latents[i : i + 1], start) for i, s in enumerate(states)]
        out = self.run_chains(sts, stop)
        return np.concatenate([s.latent_tensor().numpy() for s in out])

    def coarse_jump(
        self,
        latents: np.ndarray,
        states: Sequence[ChainState],
        start: int,
        stop: int,
        evals: int = 1,
    ) -> np.ndarray:
        """The coarse solve: fine steps [start, stop) of the chains' DDIM schedule replaced by
        ``evals`` DDIM jumps (one UNet evaluation each); returns the latents at ``stop``."""
        if not states or len(latents) != len(states):
            raise InvalidRequestError(f"{len(latents)} latents for {len(states)} chains")
        first = self._check_state(states[0])
        sampler = self._sampler(first.scheduler, first.total)
        if sampler.stochastic:
            raise InvalidRequestError(f"{first.scheduler} is stochastic: parallel steps need ddim")
        evals = _check_int("evals", evals, 1, first.total)
        ts = coarse_timesteps(sampler.timesteps, start, stop, evals)
        cfg = sampler.scheduler.config
        if sampler.prediction_type != "epsilon":
            raise InvalidRequestError("the coarse DDIM jump needs an epsilon-prediction model")
        clip = float(cfg.clip_sample_range) if cfg.clip_sample and not cfg.thresholding else None
        final = float(sampler.scheduler.final_alpha_cumprod)
        labels = [s.label for s in states]
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            x = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self._device)
            for t, t_prev in itertools.pairwise(ts):
                eps = self._eps(x, t, labels)
                a_prev = final if t_prev < 0 else sampler.alpha_bar(t_prev)
                x = ddim_jump(x, eps, sampler.alpha_bar(t), a_prev, clip)
            return np.asarray(x.to("cpu", torch.float32).numpy(), dtype=np.float32)

    def finish_chain(self, st: ChainState) -> np.ndarray:
        """The image of a finished chain: (H, W) uint8 (or (H, W, C) for colour models)."""
        st = self._check_state(st)
        if not st.done:
            raise ChainStateError(f"chain is at step {st.step} of {st.total}, not done")
        return tensor_to_image(st.latent_tensor()[0])

    # ----------------------------------------------------------------------------- repair
    def repair(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        steps: int,
        seed: int,
        label: int | None = None,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """RePaint-style repair of the whole image in one window (True in mask = regenerate).

        The model's native size is `sample_size`; other sizes (multiples of `downscale`) run
        the UNet on the whole canvas, which is out of its training distribution: larger
        canvases are meant for `repair_canvas`.
        """
        img, m = self._check_canvas(image, mask)
        h, w = img.shape[:2]
        return self._repair_windows(img, m, [Tile(0, 0, h, w)], steps, seed, label, scheduler)[0]

    def repair_tile(
        self,
        canvas: np.ndarray,
        mask: np.ndarray,
        tile: Tile,
        steps: int,
        seed: int,
        label: int | None = None,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """Repair one window of a canvas with the canvas-wide noise of `seed`."""
        return self.repair_tiles(canvas, mask, [tile], steps, seed, label, scheduler)[0]

    def repair_tiles(
        self,
        canvas: np.ndarray,
        mask: np.ndarray,
        tiles: Sequence[Tile],
        steps: int,
        seed: int,
        label: int | None = None,
        scheduler: str = "ddim",
    ) -> list[np.ndarray]:
        """Repair several windows of one canvas, batched in groups of at most
        `max_forward_rows` forward rows; each equals `repair_tile`."""
        img, m = self._check_canvas(canvas, mask)
        return self._repair_windows(img, m, list(tiles), steps, seed, label, scheduler)

    def repair_canvas(
        self,
        canvas: np.ndarray,
        mask: np.ndarray,
        steps: int,
        seed: int,
        tile: int | None = None,
        halo: int = 4,
        label: int | None = None,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """Tile repair of a canvas of any size >= the tile, all tiles here, feathered blend."""
        img, m = self._check_canvas(canvas, mask)
        size = self.sample_size if tile is None else tile
        tiles = plan_tiles(img.shape[0], img.shape[1], size, halo)
        outs = self._repair_windows(img, m, tiles, steps, seed, label, scheduler)
        return blend_tiles(img.shape, list(zip(tiles, outs, strict=True)))

    def _repair_windows(
        self,
        img: np.ndarray,
        mask: np.ndarray,
        tiles: list[Tile],
        steps: int,
        seed: int,
        label: int | None,
        scheduler: str,
    ) -> list[np.ndarray]:
        seed = _check_int("seed", seed, 0, MAX_SEED)
        steps = self._check_steps(steps)
        lab = self._check_repair_label(label)
        sampler = self._sampler(scheduler, steps)
        h, w = img.shape[:2]
        if not tiles:
            raise InvalidRequestError("no tiles to repair")
        for t in tiles:
            if not isinstance(t, Tile):
                raise InvalidRequestError(f"expected a Tile, got {type(t).__name__}")
            t.check_inside(h, w)
            if t.height % self.downscale or t.width % self.downscale:
                raise InvalidRequestError(
                    f"window {t.height}x{t.width} must be a multiple of {self.downscale} px"
                )
        results: list[np.ndarray | None] = [
            None if mask[t.y0 : t.y1, t.x0 : t.x1].any() else img[t.y0 : t.y1, t.x0 : t.x1].copy()
            for t in tiles
        ]
        todo = [k for k, r in enumerate(results) if r is None]
        if todo:
            sizes = {(tiles[k].height, tiles[k].width) for k in todo}
            if len(sizes) != 1:
                raise InvalidRequestError(f"windows repaired together must share a size: {sizes}")
            per_window = self.num_classes if lab is None and self.num_classes else 1
            group = max(1, self.max_forward_rows // per_window)
            for g in range(0, len(todo), group):
                part = todo[g : g + group]
                with _COMPUTE_LOCK, torch.inference_mode():
                    self._enter()
                    outs = self._repaint([tiles[k] for k in part], img, mask, sampler, seed, lab)
                for k, out in zip(part, outs, strict=True):
                    results[k] = out
        return [r for r in results if r is not None]

    def _repaint(
        self,
        tiles: list[Tile],
        img: np.ndarray,
        mask: np.ndarray,
        sampler: Sampler,
        seed: int,
        label: int | None,
    ) -> list[np.ndarray]:
        dev = self._device
        h, w = img.shape[:2]
        full = (1, self.in_channels, h, w)
        x0_full = image_to_tensor(img, self.in_channels).unsqueeze(0)
        m_full = torch.from_numpy(mask)[None, None]

        def crop(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[:, :, a.y0 : a.y1, a.x0 : a.x1] for a in tiles]).to(dev)

        gen = torch.Generator(device="cpu").manual_seed(seed)
        x0, m = crop(x0_full), crop(m_full)
        x_t = crop(torch.randn(full, generator=gen))
        x = torch.where(m, x_t, sampler.add_noise(x0, x_t, sampler.timesteps[0]))
        labels = [label] * len(tiles)
        for i, t in enumerate(sampler.timesteps):
            n_known = crop(torch.randn(full, generator=gen))
            n_step = crop(torch.randn(full, generator=gen)) if sampler.stochastic else None
            eps = self._eps(x, t, labels)
            x_unknown = sampler.step(eps, i, x, n_step)
            x_known = sampler.add_noise(x0, n_known, sampler.prev_timestep(i))
            x = torch.where(m, x_unknown, x_known)
        outs = []
        for k, a in enumerate(tiles):
            gen_img = tensor_to_image(x[k])
            known = img[a.y0 : a.y1, a.x0 : a.x1]
            tm = mask[a.y0 : a.y1, a.x0 : a.x1]
            outs.append(np.where(tm if known.ndim == 2 else tm[:, :, None], gen_img, known))
        return outs

    # ------------------------------------------------------------------------ calibration
    def _step_fn(self, den: Denoiser, batch: int) -> Callable[[], None]:
        """One DDIM denoising step of `batch` images on engine `den`, as a closure to time.

        Call it with the compute lock held and the thread count pinned (`_enter`).
        """
        sampler = self._sampler("ddim", min(20, self.num_train_timesteps))
        label = None if self.num_classes is None else 0
        gen = torch.Generator(device="cpu").manual_seed(batch)
        shape = (batch, self.in_channels, self.sample_size, self.sample_size)
        x = torch.randn(shape, generator=gen).to(self._device)
        t0 = sampler.timesteps[0]
        labels = [label] * batch

        def step() -> None:
            with torch.inference_mode():
                sampler.step(self._eps(x, t0, labels, den), 0, x, None)

        return step

    def _wall_clock(self) -> float:
        """Seconds by the wall clock, after the device's queued work (CUDA) has finished."""
        if self._device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def _step_seconds(self, den: Denoiser, batch: int, repeats: int, warmup: int) -> float:
        sync = self._device.type == "cuda"
        return median_seconds(self._step_fn(den, batch), repeats, warmup, sync)

    def step_timer(self, batch: int) -> Callable[[], float]:
        """A function that runs one denoising step of `batch` images and returns its seconds."""
        batch = _check_int("batch", batch, 1, MAX_BATCH)
        step = self._step_fn(self._denoiser, batch)

        def timed() -> float:
            with _COMPUTE_LOCK:
                self._enter()
                return median_seconds(step, 1, 0, self._device.type == "cuda")

        return timed

    def step_ms(
        self, batch_sizes: Sequence[int], repeats: int = 5, warmup: int = 2
    ) -> dict[int, float]:
        """Median ms per denoising step at each batch size, on the running engine."""
        if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > MAX_BATCH:
            raise InvalidRequestError(f"batch sizes must be in [1, {MAX_BATCH}]")
        repeats = _check_int("repeats", repeats, 1, 1000)
        warmup = _check_int("warmup", warmup, 0, 1000)
        with _COMPUTE_LOCK:
            self._enter()
            return {
                b: self._step_seconds(self._denoiser, b, repeats, warmup) * 1e3 for b in batch_sizes
            }

    # ------------------------------------------------------------------------ calibration
    def calibrate(
        self, batch_sizes: Sequence[int] = (1, 2, 4, 8), repeats: int = 5, warmup: int = 1
    ) -> CostModel:
        """Time one denoising step at several batch sizes on the running engine; fit `a + c * images`.

        Each size's least timing of `repeats`, taken round-robin (`calibration_seconds`), by the
        thread's CPU time where one CPU thread runs the step, else by the wall clock. The fit
        follows the engine: onnx drops most of torch's fixed per-step cost `a`. The timings are
        also recorded in `engine_info()["ms_per_step"]`.
        """
        if len(set(batch_sizes)) < 2 or min(batch_sizes) < 1 or max(batch_sizes) > MAX_BATCH:
            raise InvalidRequestError(f"need two distinct batch sizes in [1, {MAX_BATCH}]")
        repeats = _check_int("repeats", repeats, 1, 1000)
        warmup = _check_int("warmup", warmup, 0, 1000)
        cpu_thread = self._device.type == "cpu" and self.threads == 1
        with _COMPUTE_LOCK:
            self._enter()
            steps = {b: self._step_fn(self._denoiser, b) for b in dict.fromkeys(batch_sizes)}
            samples = calibration_seconds(
                steps, repeats, warmup, time.thread_time if cpu_thread else self._wall_clock
            )
        for b, seconds in samples:
            self._record_ms(self.engine, b, seconds)
        a, c = fit_affine(samples)
        return CostModel(a, c, self.sample_size * self.sample_size)

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_dir": str(self.model_dir),
            "device": self.device,
            "threads": self.threads,
            "sample_size": self.sample_size,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "num_train_timesteps": self.num_train_timesteps,
            "parameters": int(sum(p.numel() for p in self._unet.parameters())),
            "engine": self.engine,
            "provider": self.provider,
        }
