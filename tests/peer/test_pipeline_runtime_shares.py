"""Text shares on the wire: the prompt and (when sent) its embeddings survive the codec bit for
bit, a digits share's wire form is unchanged, and malformed text shares are refused."""

from __future__ import annotations

import numpy as np
import pytest

from peer.core.errors import BadRequest
from peer.core.shares import (
    ChainShare,
    GenerateShare,
    TextSpec,
    TilesShare,
    decode_share,
    encode_share,
)
from peer.diffusion.pipeline.text import TextConditioning
from peer.diffusion.tiles import Tile
from peer.rpc import pack_tensor


def _cond(guidance: float = 7.5) -> TextConditioning:
    rng = np.random.default_rng(0)
    c = rng.standard_normal((1, 77, 32)).astype(np.float32)
    u = rng.standard_normal((1, 77, 32)).astype(np.float32) if guidance > 1 else None
    return TextConditioning("a red house", "blurry", guidance, c, u)


@pytest.mark.parametrize("embeddings", [True, False])
def test_generate_share_carries_the_prompt_and_embeddings_when_asked(embeddings: bool) -> None:
    spec = TextSpec(_cond(), 64, 32, embeddings)
    got = decode_share(encode_share(GenerateShare((0, 0), (5, 6), 4, "ddim", spec)))
    assert isinstance(got, GenerateShare) and got.text is not None
    t = got.text
    assert (t.width, t.height, t.cond.prompt, t.cond.negative_prompt) == (
        64,
        32,
        "a red house",
        "blurry",
    )
    assert t.cond.guidance_scale == 7.5 and t.embeddings is embeddings
    if embeddings:
        assert t.cond.cond is not None and t.cond.uncond is not None
        assert np.array_equal(t.cond.cond, spec.cond.cond)
        assert np.array_equal(t.cond.uncond, spec.cond.uncond)
    else:  # the collaborator encodes the prompt again
        assert t.cond.cond is None and t.cond.uncond is None


def test_digits_shares_keep_their_wire_form() -> None:
    wire = encode_share(GenerateShare((3, 4), (1, 2), 5, "ddim"))
    assert "text" not in wire
    assert decode_share(wire) == GenerateShare((3, 4), (1, 2), 5, "ddim")
    chain = encode_share(ChainShare(1, 2, 5, "ddim", 0, 2, None))
    assert "text" not in chain


def test_text_tiles_need_an_rgb_canvas() -> None:
    canvas = np.zeros((32, 48, 3), dtype=np.uint8)
    mask = np.ones((32, 48), dtype=bool)
    tiles = (Tile(0, 0, 32, 32), Tile(0, 16, 32, 48))
    spec = TextSpec(_cond(1.0), embeddings=True)
    got = decode_share(encode_share(TilesShare(canvas, mask, tiles, 3, 9, None, spec)))
    assert isinstance(got, TilesShare) and got.canvas.shape == (32, 48, 3)
    assert got.text is not None and got.text.cond.uncond is None  # unguided: one branch
    wire = encode_share(TilesShare(canvas, mask, tiles, 3, 9, None, spec))
    wire["canvas"] = pack_tensor(np.zeros((32, 48), dtype=np.uint8))
    with pytest.raises(BadRequest, match="text edit"):
        decode_share(wire)


@pytest.mark.parametrize(
    "text",
    [
        {"cond": {}, "width": 32, "height": 32},
        {"width": 32, "height": 32},
        "a prompt",
        {"cond": None, "width": -1, "height": 32},
    ],
)
def test_malformed_text_shares_are_refused(text: object) -> None:
    wire = encode_share(GenerateShare((0,), (1,), 2, "ddim"))
    wire["text"] = text
    with pytest.raises(BadRequest):
        decode_share(wire)


def test_guided_share_with_one_embedding_is_refused() -> None:
    wire = encode_share(GenerateShare((0,), (1,), 2, "ddim", TextSpec(_cond(), 32, 32, True)))
    wire["text"]["cond"]["uncond"] = None
    with pytest.raises(BadRequest, match="both embeddings or neither"):
        decode_share(wire)
