"""The diffusion executor: the embedded digits model, the denoising loop, repair and tiling."""

from peer.diffusion.backend import Backend, load_backend
from peer.diffusion.chain import ChainState
from peer.diffusion.cost import CostModel
from peer.diffusion.engine import ENGINE_CHOICES
from peer.diffusion.errors import (
    ChainStateError,
    DiffusionError,
    InvalidRequestError,
    ModelLoadError,
    TrainingError,
)
from peer.diffusion.images import decode_png, encode_png
from peer.diffusion.samplers import scheduler_names
from peer.diffusion.tiles import Tile, blend_tiles, plan_tiles

__all__ = [
    "ENGINE_CHOICES",
    "Backend",
    "ChainState",
    "ChainStateError",
    "CostModel",
    "DiffusionError",
    "InvalidRequestError",
    "ModelLoadError",
    "Tile",
    "TrainingError",
    "blend_tiles",
    "decode_png",
    "encode_png",
    "load_backend",
    "plan_tiles",
    "scheduler_names",
]
