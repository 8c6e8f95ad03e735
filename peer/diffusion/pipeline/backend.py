"""`PipelineBackend`: a Stable Diffusion pipeline behind the runtime's Backend protocol.

Everything runs on latents: a chain is (latent, generator state, conditioning), the shares of
every split mode carry latents or pixel tiles, and the VAE decodes each image (or tile) on its
own. Exactness comes from three rules:

1. Per-row independence of the UNet forward: the UNet is prepared like the digits model
   (`peer.diffusion.unet`: 2-D linears row by row, channels-last, forwards padded to an even
   row count), so a row's output does not depend on the rows beside it.
2. Classifier-free guidance as rows: a batch of n guided images runs 2n rows, the negative
   branch then the positive one, each row with its own embeddings; `eps = eu + g * (ec - eu)`
   is elementwise with `g` as an (n, 1, 1, 1) tensor, the same op at any n. So an image's
   guided output is the same alone, in a batch, or resumed on another peer.
3. Text encoder and VAE run one prompt / one latent at a time: batch 1, always.

Randomness follows `peer.diffusion.backend`: an image's chain owns a CPU generator seeded with
its seed (the initial latent, then per step the RePaint re-noise of the known region and, for
stochastic samplers, the step noise); a tiled edit draws canvas-sized latent noise from one
generator and each window crops its part.

Edits. An inpainting pipeline (9-channel UNet) conditions every step on the latent mask and the
VAE-encoded masked image (the encoder's mean: no randomness), as diffusers'
`StableDiffusionInpaintPipeline` at strength 1. A text-to-image pipeline edits RePaint-style on
latents: after each step the known region is replaced by the encoded image noised to the next
level. The latent mask marks a latent cell unknown when any of its pixels is masked; the final
image keeps every known pixel of the input.

The protocol's label-based calls (`generate`, `start_chain`, `repair`, `repair_tiles`) run the
empty prompt without guidance; a label is refused (the model takes prompts).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from peer.diffusion.chain import ChainState
from peer.diffusion.cost import CostModel, fit_affine
from peer.diffusion.errors import ChainStateError, InvalidRequestError
from peer.diffusion.pipeline.load import LoadedPipeline, load_pipeline
from peer.diffusion.pipeline.text import TextCaps, TextConditioning, TextParams
from peer.diffusion.samplers import Sampler, make_sampler
from peer.diffusion.tiles import Tile, blend_tiles, plan_tiles
from peer.diffusion.unet import padded_size

_COMPUTE_LOCK = threading.RLock()
MAX_SEED = 2**63 - 1
MAX_BATCH = 64
MAX_SIDE = 2048
EDIT_WIRE_VERSION = 1


def load_pipeline_backend(
    model: str | os.PathLike[str],
    device: str = "cpu",
    threads: int = 1,
    dtype: str = "float32",
) -> PipelineBackend:
    """Load a pipeline directory into a `PipelineBackend` (`dtype` float16 needs CUDA)."""
    from peer.diffusion.backend import resolve_device

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidRequestError(f"threads must be an int >= 1, got {threads!r}")
    dev = resolve_device(device)
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise InvalidRequestError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    if dt == torch.float16 and dev.type != "cuda":
        raise InvalidRequestError("float16 runs on CUDA only")
    with _COMPUTE_LOCK:
        torch.set_num_threads(threads)
        loaded = load_pipeline(model, dev, dt)
    return PipelineBackend(loaded, dev, threads, dt)


def load_peer_backend(
    model: str | os.PathLike[str] | None,
    device: str = "auto",
    threads: int = 1,
    engine: str = "torch",
) -> Any:
    """What a peer serves for ``--model``: a pipeline directory (``is_pipeline_dir``) loads a
    `PipelineBackend` on PyTorch (``engine`` does not apply; see the README), anything else
    (None: the shipped digits model) `peer.diffusion.load_backend`. Offline either way."""
    from peer.diffusion.pipeline.load import is_pipeline_dir

    if model is not None and is_pipeline_dir(model):
        return load_pipeline_backend(model, device=device, threads=threads)
    from peer.diffusion import load_backend

    return load_backend(model=model, device=device, threads=threads, engine=engine)


@dataclass(frozen=True)
class EditInputs:
    """The canvas of an edit: uint8 (H, W, 3) and its mask (H, W), True = regenerate."""

    image: np.ndarray
    mask: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        h, w = self.mask.shape
        return {
            "v": EDIT_WIRE_VERSION,
            "height": h,
            "width": w,
            "image": np.ascontiguousarray(self.image).tobytes(),
            "mask": np.packbits(self.mask).tobytes(),
        }

    @classmethod
    def from_wire(cls, data: object) -> EditInputs:
        if not isinstance(data, dict) or data.get("v") != EDIT_WIRE_VERSION:
            raise ChainStateError("edit inputs must be a dict of version 1")
        h, w = data.get("height"), data.get("width")
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in (h, w)
        ):
            raise ChainStateError(f"edit size {h}x{w} is out of range")
        assert isinstance(h, int) and isinstance(w, int)
        img, m = data.get("image"), data.get("mask")
        if not isinstance(img, bytes | bytearray) or len(img) != h * w * 3:
            raise ChainStateError(f"edit image needs {h * w * 3} bytes")
        if not isinstance(m, bytes | bytearray) or len(m) != (h * w + 7) // 8:
            raise ChainStateError(f"edit mask needs {(h * w + 7) // 8} bytes")
        image = np.frombuffer(bytes(img), dtype=np.uint8).reshape(h, w, 3).copy()
        mask = np.unpackbits(np.frombuffer(bytes(m), dtype=np.uint8))[: h * w].reshape(h, w)
        return cls(image, mask.astype(bool))


@dataclass(frozen=True)
class TextChainState:
    """One image's chain on a text pipeline: the latent chain, its conditioning, its edit."""

    chain: ChainState
    cond: TextConditioning
    edit: EditInputs | None = None

    @property
    def step(self) -> int:
        return self.chain.step

    @property
    def total(self) -> int:
        return self.chain.total

    @property
    def done(self) -> bool:
        return self.chain.done

    def to_wire(self, with_embeddings: bool = True) -> dict[str, Any]:
        from peer.diffusion.pipeline.text import encode_text_share

        return {
            "chain": self.chain.to_wire(),
            "text": encode_text_share(self.cond, with_embeddings and self.cond.encoded),
            "edit": None if self.edit is None else self.edit.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: object) -> TextChainState:
        from peer.core.errors import BadRequest
        from peer.diffusion.pipeline.text import decode_text_share

        if not isinstance(data, dict) or set(data) != {"chain", "text", "edit"}:
            raise ChainStateError("a text chain is {chain, text, edit}")
        try:
            cond = decode_text_share(data["text"])
        except BadRequest as exc:
            raise ChainStateError(exc.message) from exc
        edit = None if data["edit"] is None else EditInputs.from_wire(data["edit"])
        return cls(ChainState.from_wire(data["chain"]), cond, edit)


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequestError(f"{name} must be an int, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise InvalidRequestError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    arr = ((x.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return np.ascontiguousarray(arr.to(torch.uint8).numpy().transpose(1, 2, 0))


def _luma(img: np.ndarray) -> np.ndarray:
    """RGB uint8 -> L uint8 with PIL's ITU-R 601 weights (the gray path of the protocol)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img, mode="RGB").convert("L"), dtype=np.uint8)


class PipelineBackend:
    """One loaded Stable Diffusion pipeline on one device with a fixed torch thread count."""

    num_classes: int | None = None
    takes_prompt = True

    def __init__(
        self, loaded: LoadedPipeline, device: torch.device, threads: int, dtype: torch.dtype
    ) -> None:
        self._p = loaded
        self._device = device
        self._dtype = dtype
        self.threads = threads
        self.device = str(device)
        self.model_id = loaded.model_id
        self.model_dir = loaded.files.root
        self.kind = loaded.files.kind
        ucfg, vcfg = loaded.unet.config, loaded.vae.config
        self.latent_factor = 2 ** (len(vcfg.block_out_channels) - 1)
        self.latent_channels = int(vcfg.latent_channels)
        self.vae_scale = float(getattr(vcfg, "scaling_factor", 0.18215))
        self.unet_down = 2 ** (len(ucfg.block_out_channels) - 1)
        latent = ucfg.sample_size if isinstance(ucfg.sample_size, int) else ucfg.sample_size[0]
        self.sample_size = int(latent) * self.latent_factor
        self.size_quantum = self.latent_factor * self.unet_down
        self.max_side = min(MAX_SIDE, 4 * self.sample_size)
        self.tokens = int(loaded.tokenizer.model_max_length)
        self.embed_dim = int(loaded.text_encoder.config.hidden_size)
        self._sched_cfg = loaded.files.scheduler_config
        self.num_train_timesteps = int(self._sched_cfg.get("num_train_timesteps", 1000))
        self._samplers: dict[tuple[str, int], Sampler] = {}
        self._embeds: OrderedDict[str, np.ndarray] = OrderedDict()
        self._info: dict[str, Any] = {}

    # ------------------------------------------------------------------------- protocol
    @property
    def batch_quantum(self) -> int:
        """Guided images are two rows each, an even count: no padding per image."""
        return 1

    def text_caps(self, max_steps: int = 1000) -> TextCaps:
        return TextCaps(
            model_id=self.model_id,
            sample_size=self.sample_size,
            size_quantum=self.size_quantum,
            max_side=self.max_side,
            max_steps=min(max_steps, self.num_train_timesteps),
            kind=self.kind,
        )

    def engine_info(self) -> dict[str, Any]:
        return {
            "engine": "torch",
            "provider": f"torch-{self._device.type}",
            "threads": self.threads,
            "model_id": self.model_id,
            "pipeline": self._p.files.class_name,
            "kind": self.kind,
            "dtype": str(self._dtype).removeprefix("torch."),
            "sample_size": self.sample_size,
            "latent_factor": self.latent_factor,
            **self._info,
        }

    def _enter(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _sampler(self, name: str, steps: int) -> Sampler:
        key = (name, steps)
        if key not in self._samplers:
            if len(self._samplers) > 64:
                self._samplers.clear()
            self._samplers[key] = make_sampler(name, self._sched_cfg, steps)
        return self._samplers[key]

    # ---------------------------------------------------------------------- text encoder
    def _embed(self, text: str) -> np.ndarray:
        """(1, tokens, dim) float32 embeddings of one prompt, always at batch 1 (cached)."""
        if text in self._embeds:
            self._embeds.move_to_end(text)
            return self._embeds[text]
        tok = self._p.tokenizer(
            text,
            padding="max_length",
            max_length=self.tokens,
            truncation=True,
            return_tensors="pt",
        )
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            out = self._p.text_encoder(tok.input_ids.to(self._device))[0]
            arr = out.to("cpu", torch.float32).numpy().copy()
        self._embeds[text] = arr
        while len(self._embeds) > 32:
            self._embeds.popitem(last=False)
        return arr

    def encode(self, cond: TextConditioning) -> TextConditioning:
        """`cond` with its embeddings (kept as they are when it already carries them)."""
        if cond.encoded:
            for a in (cond.cond, cond.uncond):
                if a is not None and a.shape != (1, self.tokens, self.embed_dim):
                    raise ChainStateError(
                        f"embeddings {a.shape} do not fit the model's {(1, self.tokens, self.embed_dim)}"
                    )
            return cond
        c = self._embed(cond.prompt)
        u = self._embed(cond.negative_prompt) if cond.guided else None
        return replace(cond, cond=c, uncond=u)

    def conditioning(self, params: TextParams) -> TextConditioning:
        return self.encode(
            TextConditioning(params.prompt, params.negative_prompt, params.guidance_scale)
        )

    # ---------------------------------------------------------------------- VAE
    def _decode(self, z: torch.Tensor) -> np.ndarray:
        """One latent (1, 4, h, w) -> uint8 (h*f, w*f, 3)."""
        img = self._p.vae.decode(z.to(self._device, self._dtype) / self.vae_scale).sample
        return _to_uint8(img[0])

    def _encode_image(self, img: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> its latent (1, 4, H/f, W/f), float32 (the encoder's mean)."""
        x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        dist = self._p.vae.encode(x.to(self._device, self._dtype)).latent_dist
        return (dist.mode() * self.vae_scale).to(torch.float32)

    def _latent_mask(self, mask: np.ndarray) -> torch.Tensor:
        """(H, W) bool -> (1, 1, H/f, W/f) bool: a cell is unknown when any pixel is masked."""
        f = self.latent_factor
        h, w = mask.shape
        m = mask.reshape(h // f, f, w // f, f).any(axis=(1, 3))
        return torch.from_numpy(np.ascontiguousarray(m))[None, None]

    # ---------------------------------------------------------------------- checks
    def _check_side(self, name: str, v: object) -> int:
        v = _check_int(name, v, self.size_quantum, self.max_side)
        if v % self.size_quantum:
            raise InvalidRequestError(f"{name} must be a multiple of {self.size_quantum}, got {v}")
        return v

    def _check_edit(self, image: object, mask: object) -> EditInputs:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise InvalidRequestError("image must be a uint8 numpy array")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidRequestError(f"image must be (H, W) or (H, W, 3), got {image.shape}")
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise InvalidRequestError("mask must be a bool numpy array")
        if mask.shape != image.shape[:2]:
            raise InvalidRequestError(f"mask {mask.shape} does not match image {image.shape[:2]}")
        self._check_side("height", image.shape[0])
        self._check_side("width", image.shape[1])
        return EditInputs(np.ascontiguousarray(image), np.ascontiguousarray(mask))

    def _check_state(self, st: object) -> TextChainState:
        if not isinstance(st, TextChainState):
            raise ChainStateError(f"expected a TextChainState, got {type(st).__name__}")
        ch = st.chain
        if ch.model_id != self.model_id:
            raise ChainStateError(f"chain is for model {ch.model_id}, this is {self.model_id}")
        if ch.label is not None:
            raise ChainStateError("a text pipeline's chain carries no label")
        c, h, w = ch.shape[1], ch.shape[2] * self.latent_factor, ch.shape[3] * self.latent_factor
        if c != self.latent_channels:
            raise ChainStateError(f"latent has {c} channels, the model {self.latent_channels}")
        self._check_side("height", h)
        self._check_side("width", w)
        if st.edit is not None and st.edit.mask.shape != (h, w):
            raise ChainStateError(f"edit canvas {st.edit.mask.shape} does not fit the latent")
        if self.kind == "inpaint" and st.edit is None:
            raise ChainStateError("an inpainting pipeline's chain needs its image and mask")
        return replace(st, cond=self.encode(st.cond))

    # ---------------------------------------------------------------------- the UNet call
    def _eps(
        self,
        x: torch.Tensor,
        t: int,
        conds: Sequence[TextConditioning],
        extra: torch.Tensor | None,
    ) -> torch.Tensor:
        """Guided model output for n latents; `extra` (n, 5, h, w): inpainting's mask + image."""
        n = x.shape[0]
        guided = conds[0].guided
        if any(c.guided != guided for c in conds):
            raise InvalidRequestError("images run together must all be guided or all unguided")
        cond = torch.from_numpy(np.concatenate([c.cond for c in conds]))
        if guided:
            unc = torch.from_numpy(np.concatenate([c.uncond for c in conds]))
            emb = torch.cat([unc, cond])
            rows = torch.cat([x, x])
            ext = None if extra is None else torch.cat([extra, extra])
        else:
            emb, rows, ext = cond, x, extra
        if ext is not None:
            rows = torch.cat([rows, ext], dim=1)
        r = rows.shape[0]
        p = padded_size(r)
        if p != r:
            rows = torch.cat([rows, rows[-1:].expand(p - r, *rows.shape[1:])])
            emb = torch.cat([emb, emb[-1:].expand(p - r, *emb.shape[1:])])
        rows = rows.to(self._device, self._dtype).contiguous(memory_format=torch.channels_last)
        tt = torch.full((p,), int(t), dtype=torch.long, device=self._device)
        out = self._p.unet(rows, tt, encoder_hidden_states=emb.to(self._device, self._dtype))
        eps = out.sample[:r].to(torch.float32)
        if not guided:
            return eps
        eu, ec = eps[:n], eps[n:]
        g = torch.tensor([c.guidance_scale for c in conds], dtype=torch.float32)
        g = g.to(eps.device).view(n, 1, 1, 1)
        return eu + g * (ec - eu)

    # ---------------------------------------------------------------------- chains
    def start_text_chain(
        self,
        cond: TextConditioning,
        seed: int,
        steps: int,
        width: int | None = None,
        height: int | None = None,
        scheduler: str = "ddim",
        edit: EditInputs | None = None,
    ) -> TextChainState:
        """Step-0 state of one image: the initial latent drawn from its own generator."""
        seed = _check_int("seed", seed, 0, MAX_SEED)
        steps = _check_int("steps", steps, 1, self.num_train_timesteps)
        self._sampler(scheduler, steps)
        if edit is not None:
            edit = self._check_edit(edit.image, edit.mask)
            h, w = edit.mask.shape
            if (width, height) not in ((None, None), (w, h)):
                raise InvalidRequestError(f"an edit's size is its image's, {w}x{h}")
        else:
            if self.kind == "inpaint":
                raise InvalidRequestError("an inpainting pipeline edits: it needs image and mask")
            h = self._check_side("height", self.sample_size if height is None else height)
            w = self._check_side("width", self.sample_size if width is None else width)
        cond = self.encode(cond)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        f = self.latent_factor
        x = torch.randn((1, self.latent_channels, h // f, w // f), generator=gen)
        if edit is not None and self.kind == "text2img":
            sampler = self._sampler(scheduler, steps)
            with _COMPUTE_LOCK, torch.inference_mode():
                self._enter()
                x0 = self._encode_image(edit.image).cpu()
            m = self._latent_mask(edit.mask)
            x = torch.where(m, x, sampler.add_noise(x0, x, sampler.timesteps[0]))
        shape, latent = ChainState.pack_latent(x)
        chain = ChainState(
            self.model_id, scheduler, steps, 0, None, seed, shape, latent, ChainState.pack_rng(gen)
        )
        return TextChainState(chain, cond, edit)

    def run_steps(self, st: TextChainState, stop: int) -> TextChainState:
        return self.run_chains([st], stop)[0]

    def run_chains(self, states: Sequence[TextChainState], stop: int) -> list[TextChainState]:
        """Steps [step, stop) of chains that share scheduler, total, step, size and edit kind."""
        if not states or len(states) > MAX_BATCH:
            raise InvalidRequestError(f"run_chains takes 1 to {MAX_BATCH} chains")
        sts = [self._check_state(s) for s in states]
        first = sts[0].chain
        for s in sts[1:]:
            c = s.chain
            if (c.scheduler, c.total, c.step, c.shape) != (
                first.scheduler,
                first.total,
                first.step,
                first.shape,
            ):
                raise ChainStateError("chains run together must share scheduler, total, step, size")
            if (s.edit is None) != (sts[0].edit is None):
                raise ChainStateError("edits and generations run apart")
        stop = _check_int("stop", stop, first.step, first.total)
        if stop == first.step:
            return list(sts)
        sampler = self._sampler(first.scheduler, first.total)
        gens = [s.chain.generator() for s in sts]
        conds = [s.cond for s in sts]
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            x = torch.cat([s.chain.latent_tensor() for s in sts])
            known, masks, extra = self._edit_inputs(sts)
            for i in range(first.step, stop):
                n_known = None
                if known is not None:
                    n_known = torch.cat([torch.randn(first.shape, generator=g) for g in gens])
                noise = None
                if sampler.stochastic:
                    noise = torch.cat([torch.randn(first.shape, generator=g) for g in gens])
                eps = self._eps(x, sampler.timesteps[i], conds, extra).cpu()
                x = sampler.step(eps, i, x, noise)
                if known is not None and masks is not None and n_known is not None:
                    x_known = sampler.add_noise(known, n_known, sampler.prev_timestep(i))
                    x = torch.where(masks, x, x_known)
        out = []
        for k, s in enumerate(sts):
            shape, latent = ChainState.pack_latent(x[k : k + 1])
            ch = replace(
                s.chain,
                step=stop,
                shape=shape,
                latent=latent,
                rng_state=ChainState.pack_rng(gens[k]),
            )
            out.append(replace(s, chain=ch))
        return out

    def _edit_inputs(
        self, sts: Sequence[TextChainState]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(known latents, latent masks) for RePaint edits, or inpainting's extra channels."""
        if sts[0].edit is None:
            return None, None, None
        edits = [s.edit for s in sts if s.edit is not None]
        masks = torch.cat([self._latent_mask(e.mask) for e in edits])
        if self.kind == "text2img":
            known = torch.cat([self._encode_image(e.image).cpu() for e in edits])
            return known, masks, None
        extra = []
        for e in edits:
            masked = np.where(e.mask[:, :, None], np.uint8(128), e.image)  # 128 ~ 0.0 in [-1, 1]
            m = self._latent_mask(e.mask).to(torch.float32)
            extra.append(torch.cat([m, self._encode_image(masked).cpu()], dim=1))
        return None, None, torch.cat(extra)

    def finish_chain(self, st: TextChainState) -> np.ndarray:
        """The image of a finished chain: uint8 (H, W, 3); an edit keeps its known pixels."""
        st = self._check_state(st)
        if not st.done:
            raise ChainStateError(f"chain is at step {st.step} of {st.total}, not done")
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            img = self._decode(st.chain.latent_tensor())
        if st.edit is not None:
            img = np.where(st.edit.mask[:, :, None], img, st.edit.image)
        return img

    # ---------------------------------------------------------------------- requests
    def generate_text(
        self,
        cond: TextConditioning,
        seeds: Sequence[int],
        steps: int,
        width: int | None = None,
        height: int | None = None,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """Images (n, H, W, 3) uint8, image i from seeds[i]; bit-identical per image."""
        if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
            raise InvalidRequestError("seeds must be a sequence of ints")
        if not 1 <= len(seeds) <= MAX_BATCH:
            raise InvalidRequestError(f"need 1 to {MAX_BATCH} seeds, got {len(seeds)}")
        cond = self.encode(cond)
        sts = [self.start_text_chain(cond, s, steps, width, height, scheduler) for s in seeds]
        sts = self.run_chains(sts, steps)
        return np.stack([self.finish_chain(s) for s in sts])

    def generate_params(
        self, params: TextParams, count: int, scheduler: str = "ddim"
    ) -> np.ndarray:
        """`count` images of a request; image k uses seed `params.seed + k`."""
        seeds = [params.seed + k for k in range(_check_int("count", count, 1, MAX_BATCH))]
        return self.generate_text(
            self.conditioning(params), seeds, params.steps, params.width, params.height, scheduler
        )

    def edit_text(
        self,
        cond: TextConditioning,
        image: np.ndarray,
        mask: np.ndarray,
        seed: int,
        steps: int,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """One edit of the whole canvas in one window: uint8 (H, W, 3)."""
        edit = self._check_edit(image, mask)
        st = self.start_text_chain(cond, seed, steps, scheduler=scheduler, edit=edit)
        return self.finish_chain(self.run_steps(st, steps))

    def plan_edit_tiles(self, height: int, width: int, halo: int | None = None) -> list[Tile]:
        """Native-size windows over a canvas; the halo (pixels) is a multiple of the latent
        factor, a quarter of the tile by default."""
        tile = self.sample_size
        if halo is None:
            halo = (tile // 4) // self.latent_factor * self.latent_factor
        if halo % self.latent_factor:
            raise InvalidRequestError(
                f"halo must be a multiple of {self.latent_factor}, got {halo}"
            )
        self._check_side("height", height)
        self._check_side("width", width)
        return plan_tiles(height, width, tile, halo)

    def edit_tiles(
        self,
        cond: TextConditioning,
        canvas: np.ndarray,
        mask: np.ndarray,
        tiles: Sequence[Tile],
        seed: int,
        steps: int,
        scheduler: str = "ddim",
    ) -> list[np.ndarray]:
        """Edit windows of one canvas as latent tiles, each decoded on its own (tiled VAE
        decode): uint8 (h, w, 3) per window, the canvas-wide noise of `seed` cropped."""
        edit = self._check_edit(canvas, mask)
        seed = _check_int("seed", seed, 0, MAX_SEED)
        steps = _check_int("steps", steps, 1, self.num_train_timesteps)
        sampler = self._sampler(scheduler, steps)
        cond = self.encode(cond)
        h, w = edit.mask.shape
        f = self.latent_factor
        tiles = list(tiles)
        if not tiles:
            raise InvalidRequestError("no tiles to edit")
        for t in tiles:
            if not isinstance(t, Tile):
                raise InvalidRequestError(f"expected a Tile, got {type(t).__name__}")
            t.check_inside(h, w)
            if (
                any(v % f for v in (t.y0, t.x0, t.y1, t.x1))
                or t.height % self.size_quantum
                or t.width % self.size_quantum
            ):
                raise InvalidRequestError(f"tile {t.to_wire()} is not on the latent grid")
        results: list[np.ndarray | None] = [
            None
            if edit.mask[t.y0 : t.y1, t.x0 : t.x1].any()
            else edit.image[t.y0 : t.y1, t.x0 : t.x1].copy()
            for t in tiles
        ]
        todo = [k for k, r in enumerate(results) if r is None]
        if todo:
            if len({(tiles[k].height, tiles[k].width) for k in todo}) != 1:
                raise InvalidRequestError("windows edited together must share a size")
            win = [tiles[k] for k in todo]
            edits = [
                EditInputs(
                    edit.image[t.y0 : t.y1, t.x0 : t.x1], edit.mask[t.y0 : t.y1, t.x0 : t.x1]
                )
                for t in win
            ]
            full = (1, self.latent_channels, h // f, w // f)

            def crop(z: torch.Tensor) -> torch.Tensor:
                return torch.cat(
                    [z[:, :, t.y0 // f : t.y1 // f, t.x0 // f : t.x1 // f] for t in win]
                )

            gen = torch.Generator(device="cpu").manual_seed(seed)
            with _COMPUTE_LOCK, torch.inference_mode():
                self._enter()
                fake = [
                    TextChainState(
                        ChainState(
                            self.model_id, scheduler, steps, 0, None, seed, (1, 1, 1, 1), b"", b""
                        ),
                        cond,
                        e,
                    )
                    for e in edits
                ]
                known, masks, extra = self._edit_inputs(fake)
                x = crop(torch.randn(full, generator=gen))
                if known is not None and masks is not None:
                    x = torch.where(masks, x, sampler.add_noise(known, x, sampler.timesteps[0]))
                conds = [cond] * len(win)
                for i in range(steps):
                    n_known = crop(torch.randn(full, generator=gen)) if known is not None else None
                    noise = crop(torch.randn(full, generator=gen)) if sampler.stochastic else None
                    eps = self._eps(x, sampler.timesteps[i], conds, extra).cpu()
                    x = sampler.step(eps, i, x, noise)
                    if known is not None and masks is not None and n_known is not None:
                        x = torch.where(
                            masks, x, sampler.add_noise(known, n_known, sampler.prev_timestep(i))
                        )
                for k, e, j in zip(todo, edits, range(len(win)), strict=True):
                    img = self._decode(x[j : j + 1])
                    results[k] = np.where(e.mask[:, :, None], img, e.image)
        return [r for r in results if r is not None]

    def edit_canvas(
        self,
        cond: TextConditioning,
        canvas: np.ndarray,
        mask: np.ndarray,
        seed: int,
        steps: int,
        halo: int | None = None,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """A tiled edit with every tile here, feathered blend (the one-peer reference)."""
        edit = self._check_edit(canvas, mask)
        h, w = edit.mask.shape
        tiles = self.plan_edit_tiles(h, w, halo=halo)
        outs = self.edit_tiles(cond, edit.image, edit.mask, tiles, seed, steps, scheduler)
        return blend_tiles(edit.image.shape, list(zip(tiles, outs, strict=True)))

    # ------------------------------------------------- the label-based Backend protocol
    def _no_label(self, label: object) -> TextConditioning:
        if label is not None:
            raise InvalidRequestError(
                f"model {self.model_id} is a text pipeline: it takes a prompt, not a label"
            )
        return TextConditioning("", "", 1.0)

    def generate(
        self,
        labels: Sequence[int | None] | None,
        seeds: Sequence[int],
        steps: int,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        for lab in labels or []:
            self._no_label(lab)
        return self.generate_text(self._no_label(None), seeds, steps, scheduler=scheduler)

    def start_chain(
        self, label: int | None, seed: int, steps: int, scheduler: str = "ddim"
    ) -> TextChainState:
        return self.start_text_chain(self._no_label(label), seed, steps, scheduler=scheduler)

    def repair(
        self, image: np.ndarray, mask: np.ndarray, steps: int, seed: int, label: int | None = None
    ) -> np.ndarray:
        out = self.edit_text(self._no_label(label), image, mask, seed, steps)
        return _luma(out) if np.asarray(image).ndim == 2 else out

    def repair_tiles(
        self,
        canvas: np.ndarray,
        mask: np.ndarray,
        tiles: Sequence[Tile],
        steps: int,
        seed: int,
        label: int | None = None,
    ) -> list[np.ndarray]:
        outs = self.edit_tiles(self._no_label(label), canvas, mask, tiles, seed, steps)
        return [_luma(o) for o in outs] if np.asarray(canvas).ndim == 2 else outs

    # ---------------------------------------------------------------------- costs
    def time_step(self, images: int, guided: bool = True, repeats: int = 1) -> float:
        """Median seconds of one DDIM step of `images` native-size images (guided: 2 rows each)."""
        cond = self.encode(TextConditioning("a photo", "", 7.5 if guided else 1.0))
        f = self.latent_factor
        shape = (images, self.latent_channels, self.sample_size // f, self.sample_size // f)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(images))
        extra = None
        if self.kind == "inpaint":
            extra = torch.zeros((images, 1 + self.latent_channels, *shape[2:]))
        times = []
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            for _ in range(repeats):
                t0 = time.perf_counter()
                self._eps(x, 500, [cond] * images, extra)
                if self._device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def time_encode(self, repeats: int = 1) -> float:
        times = []
        for k in range(repeats):
            self._embeds.clear()
            t0 = time.perf_counter()
            self._embed(f"a photo of a red house {k}")
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def time_decode(self, repeats: int = 1) -> float:
        f = self.latent_factor
        z = torch.randn((1, self.latent_channels, self.sample_size // f, self.sample_size // f))
        times = []
        with _COMPUTE_LOCK, torch.inference_mode():
            self._enter()
            for _ in range(repeats):
                t0 = time.perf_counter()
                self._decode(z)
                if self._device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def calibrate(self, batches: Sequence[int] = (1, 2), repeats: int = 1) -> CostModel:
        """`a + c * images` seconds per guided step at the native size (after one warm-up)."""
        self.time_step(1)
        samples = [(b, self.time_step(b, repeats=repeats)) for b in batches]
        a, c = fit_affine(samples)
        self._info["step_s"] = {str(b): round(s, 6) for b, s in samples}
        self._info["encode_s"] = round(self.time_encode(), 6)
        self._info["decode_s"] = round(self.time_decode(), 6)
        return CostModel(a_s=a, c_s=c, pixels=self.sample_size * self.sample_size)
