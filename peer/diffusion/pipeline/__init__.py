"""Stable Diffusion pipelines from a local diffusers directory, on latents (see README.md).

`load_pipeline_backend(dir)` gives a `PipelineBackend` (the runtime's Backend protocol plus
text-to-image, edits, latent tiles and chains with their conditioning); `make_tiny_sd` writes a
tiny random pipeline for tests; `peer.diffusion.pipeline.text` validates text requests and
carries the conditioning in shares.
"""

from peer.diffusion.pipeline.load import is_pipeline_dir, resolve_pipeline_dir
from peer.diffusion.pipeline.text import (
    TextCaps,
    TextConditioning,
    TextParams,
    check_fields_for_model,
    decode_text_share,
    embeddings_travel,
    encode_text_share,
    parse_text_fields,
)

__all__ = [
    "TextCaps",
    "TextConditioning",
    "TextParams",
    "check_fields_for_model",
    "decode_text_share",
    "embeddings_travel",
    "encode_text_share",
    "is_pipeline_dir",
    "parse_text_fields",
    "resolve_pipeline_dir",
]
