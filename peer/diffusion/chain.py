"""The state of one image's denoising chain, as it is handed from peer to peer.

A chain is fully described by the model, the sampler and its step count (which fix the timestep
list), the step reached, the latent, and the image's generator state; DDPM and DDIM carry no other
scheduler history. `to_wire` gives a msgpack-safe dict (bytes, ints, str and a list of ints);
`from_wire` validates everything it reads and raises `ChainStateError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from peer.diffusion.errors import ChainStateError

WIRE_VERSION = 1
NO_LABEL = -1  # the wire's encoding of "no class label"
MAX_LATENT_BYTES = 64 << 20


@dataclass(frozen=True)
class ChainState:
    model_id: str
    scheduler: str
    total: int  # steps of the whole chain
    step: int  # steps already run; the next step to run has this index
    label: int | None
    seed: int
    shape: tuple[int, ...]  # latent shape, (1, C, H, W)
    latent: bytes  # float32, little-endian, C order
    rng_state: bytes  # torch CPU generator state after the steps already run

    @property
    def done(self) -> bool:
        return self.step >= self.total

    def latent_tensor(self) -> torch.Tensor:
        arr = np.frombuffer(self.latent, dtype="<f4").reshape(self.shape)
        return torch.from_numpy(arr.astype(np.float32, copy=True))

    def generator(self) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        try:
            gen.set_state(torch.frombuffer(bytearray(self.rng_state), dtype=torch.uint8))
        except (RuntimeError, ValueError) as exc:
            raise ChainStateError(f"invalid generator state: {exc}") from exc
        return gen

    @staticmethod
    def pack_latent(x: torch.Tensor) -> tuple[tuple[int, ...], bytes]:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
        return tuple(int(s) for s in arr.shape), arr.tobytes()

    @staticmethod
    def pack_rng(gen: torch.Generator) -> bytes:
        return bytes(gen.get_state().numpy().tobytes())

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "model_id": self.model_id,
            "scheduler": self.scheduler,
            "total": self.total,
            "step": self.step,
            "label": NO_LABEL if self.label is None else self.label,
            "seed": self.seed,
            "dtype": "float32",
            "shape": list(self.shape),
            "latent": self.latent,
            "rng_state": self.rng_state,
        }

    @classmethod
    def from_wire(cls, data: object) -> ChainState:
        if not isinstance(data, dict):
            raise ChainStateError(f"chain state must be a dict, got {type(data).__name__}")

        def get(key: str, typ: type | tuple[type, ...]) -> Any:
            if key not in data:
                raise ChainStateError(f"chain state lacks {key!r}")
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, typ):
                raise ChainStateError(f"chain state field {key!r} has type {type(value).__name__}")
            return value

        if get("v", int) != WIRE_VERSION:
            raise ChainStateError(f"chain state version {data['v']} is not {WIRE_VERSION}")
        if get("dtype", str) != "float32":
            raise ChainStateError(f"unsupported latent dtype {data['dtype']!r}")
        shape_raw = get("shape", (list, tuple))
        if len(shape_raw) != 4 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 16 for s in shape_raw
        ):
            raise ChainStateError(f"latent shape must be four positive ints, got {shape_raw!r}")
        shape = tuple(int(s) for s in shape_raw)
        if shape[0] != 1:
            raise ChainStateError(f"a chain carries one latent, got batch {shape[0]}")
        latent = get("latent", (bytes, bytearray))
        expected = 4 * int(np.prod(shape))
        if expected > MAX_LATENT_BYTES or len(latent) != expected:
            raise ChainStateError(f"latent has {len(latent)} bytes, shape {shape} needs {expected}")
        label = get("label", int)
        total, step, seed = get("total", int), get("step", int), get("seed", int)
        if total < 1 or not 0 <= step <= total:
            raise ChainStateError(f"step {step} of {total} is out of range")
        if label < NO_LABEL:
            raise ChainStateError(f"invalid label {label}")
        if not 0 <= seed < 2**63:
            raise ChainStateError(f"seed {seed} is out of range")
        state = cls(
            model_id=get("model_id", str),
            scheduler=get("scheduler", str),
            total=total,
            step=step,
            label=None if label == NO_LABEL else label,
            seed=seed,
            shape=shape,
            latent=bytes(latent),
            rng_state=bytes(get("rng_state", (bytes, bytearray))),
        )
        state.generator()  # validates the generator state
        if not np.all(np.isfinite(np.frombuffer(state.latent, dtype="<f4"))):
            raise ChainStateError("latent holds non-finite values")
        return state
