"""Stable Diffusion pipeline dirs on latents: loading offline, exactness, guidance, tiles, text fields."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from peer.core.errors import BadRequest
from peer.diffusion.errors import ChainStateError, InvalidRequestError, ModelLoadError
from peer.diffusion.pipeline import (
    TextCaps,
    TextConditioning,
    check_fields_for_model,
    decode_text_share,
    embeddings_travel,
    encode_text_share,
    is_pipeline_dir,
    parse_text_fields,
    resolve_pipeline_dir,
)
from peer.diffusion.pipeline.backend import (
    EditInputs,
    PipelineBackend,
    TextChainState,
    load_pipeline_backend,
)
from peer.diffusion.pipeline.checks import check_pipeline
from peer.diffusion.pipeline.tiny import make_tiny_sd


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sd")
    return {
        "t2i": make_tiny_sd(root / "t2i"),
        "inpaint": make_tiny_sd(root / "inpaint", inpaint=True),
    }


@pytest.fixture(scope="module")
def t2i(dirs: dict[str, Path]) -> PipelineBackend:
    return load_pipeline_backend(dirs["t2i"])


@pytest.fixture(scope="module")
def inpaint(dirs: dict[str, Path]) -> PipelineBackend:
    return load_pipeline_backend(dirs["inpaint"])


COND = TextConditioning("a red house", "blurry", 7.5)


def test_tiny_layout_loads_offline(dirs: dict[str, Path], t2i: PipelineBackend) -> None:
    for name in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (dirs["t2i"] / name).exists()
    assert is_pipeline_dir(dirs["t2i"]) and not is_pipeline_dir(dirs["t2i"] / "unet")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (t2i.kind, t2i.sample_size, t2i.latent_factor, t2i.size_quantum) == (
        "text2img",
        32,
        4,
        8,
    )
    assert resolve_pipeline_dir(dirs["inpaint"]).kind == "inpaint"
    assert t2i.model_id != load_pipeline_backend(dirs["inpaint"]).model_id


def test_bad_dirs_are_refused(dirs: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(dirs["t2i"], bad)
    index = json.loads((bad / "model_index.json").read_text())
    (bad / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(ModelLoadError, match="FluxPipeline"):
        resolve_pipeline_dir(bad)
    (bad / "model_index.json").write_text(
        json.dumps({**index, "text_encoder_2": index["text_encoder"]})
    )
    with pytest.raises(ModelLoadError, match="SD-XL"):
        resolve_pipeline_dir(bad)
    (bad / "model_index.json").write_text(json.dumps(index))
    (bad / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(ModelLoadError, match=r"merges\.txt"):
        resolve_pipeline_dir(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_pipeline_dir(tmp_path / "nothing")


@pytest.mark.parametrize("which", ["t2i", "inpaint"])
def test_check_reports_exact_splits(
    which: str, t2i: PipelineBackend, inpaint: PipelineBackend
) -> None:
    be = t2i if which == "t2i" else inpaint
    out = check_pipeline(be, steps=3, images=3)
    assert out["batch_identical"] is True and out["steps_identical"] is True
    assert out["inpaint"]["tiles_identical"] is True and out["inpaint"]["known_pixels_kept"]
    assert out["inpaint"]["tiles"] > 1
    assert (out["text2img"] is None) == (which == "inpaint")


def test_batch_beyond_the_oneDNN_threshold_is_identical(t2i: PipelineBackend) -> None:
    """16+ UNet rows took another 1x1-conv kernel before SampleConv: 9 guided images = 18 rows."""
    seeds = list(range(9))
    batch = t2i.generate_text(COND, seeds, 2)
    assert all(
        np.array_equal(batch[k], t2i.generate_text(COND, [s], 2)[0]) for k, s in enumerate(seeds)
    )
    assert len({im.tobytes() for im in batch}) == len(seeds)


def test_guidance_and_prompts_change_the_image(t2i: PipelineBackend) -> None:
    base = t2i.generate_text(COND, [1], 3)[0]
    assert base.shape == (32, 32, 3) and base.dtype == np.uint8
    other = [
        TextConditioning("a red house", "blurry", 1.0),
        TextConditioning("a red house", "", 7.5),
        TextConditioning("a blue car", "blurry", 7.5),
        TextConditioning("a red house", "blurry", 3.0),
    ]
    for c in other:
        assert not np.array_equal(t2i.generate_text(c, [1], 3)[0], base), c
    assert np.array_equal(t2i.generate_text(COND, [1], 3)[0], base)


def test_mixed_prompts_in_one_batch_are_each_exact(t2i: PipelineBackend) -> None:
    a, b = COND, TextConditioning("a blue car", "", 4.0)
    sts = [t2i.start_text_chain(a, 1, 2), t2i.start_text_chain(b, 2, 2, width=32, height=32)]
    run = t2i.run_chains(sts, 2)
    assert np.array_equal(t2i.finish_chain(run[0]), t2i.generate_text(a, [1], 2)[0])
    assert np.array_equal(t2i.finish_chain(run[1]), t2i.generate_text(b, [2], 2)[0])
    with pytest.raises(InvalidRequestError, match="guided"):
        t2i.run_chains(
            [
                t2i.start_text_chain(a, 1, 2),
                t2i.start_text_chain(TextConditioning("x", "", 1.0), 1, 2),
            ],
            2,
        )


def test_sizes_other_than_native(t2i: PipelineBackend) -> None:
    img = t2i.generate_text(COND, [0], 2, width=48, height=16)
    assert img.shape == (1, 16, 48, 3)
    with pytest.raises(InvalidRequestError, match="multiple of 8"):
        t2i.generate_text(COND, [0], 2, width=36)


def test_tiled_edit_answers_the_canvas_size_and_keeps_known_pixels(
    inpaint: PipelineBackend,
) -> None:
    rng = np.random.default_rng(3)
    canvas = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    mask = np.zeros((48, 80), dtype=bool)
    mask[10:40, 20:70] = True
    out = inpaint.edit_canvas(COND, canvas, mask, seed=4, steps=2)
    assert out.shape == canvas.shape
    assert np.array_equal(out[~mask], canvas[~mask])
    assert not np.array_equal(out[mask], canvas[mask])


def test_inpaint_pipeline_refuses_plain_generation(inpaint: PipelineBackend) -> None:
    with pytest.raises(InvalidRequestError, match="image and mask"):
        inpaint.generate_text(COND, [0], 2)


def test_label_protocol_refuses_labels_and_keeps_gray(t2i: PipelineBackend) -> None:
    with pytest.raises(InvalidRequestError, match="prompt, not a label"):
        t2i.generate([3], [0], 2)
    assert t2i.generate(None, [0], 2).shape == (1, 32, 32, 3)
    gray = np.full((32, 32), 90, dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 8:24] = True
    out = t2i.repair(gray, mask, 2, 0)
    assert out.shape == (32, 32) and np.all(out[~mask] == 90)


def test_chain_wire_is_validated(t2i: PipelineBackend, inpaint: PipelineBackend) -> None:
    st = t2i.run_steps(t2i.start_text_chain(COND, 1, 3), 1)
    wire = st.to_wire(with_embeddings=True)
    assert wire["text"]["cond"] is not None
    assert TextChainState.from_wire(wire).cond.encoded
    with pytest.raises(ChainStateError, match="for model"):
        inpaint.run_steps(TextChainState.from_wire(wire), 2)
    with pytest.raises(ChainStateError):
        TextChainState.from_wire({**wire, "text": {**wire["text"], "guidance_scale": "big"}})
    bad_edit = EditInputs(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), bool)).to_wire()
    with pytest.raises(ChainStateError, match="mask"):
        EditInputs.from_wire({**bad_edit, "mask": b"\x00"})


CAPS = TextCaps(
    "tiny@abc", sample_size=32, size_quantum=8, max_side=128, max_steps=50, kind="text2img"
)


def test_parse_text_fields() -> None:
    p = parse_text_fields({"prompt": "a cat", "guidance_scale": 5, "width": 64, "seed": 3}, CAPS)
    assert (p.prompt, p.negative_prompt, p.guidance_scale, p.width, p.height, p.seed, p.steps) == (
        "a cat",
        "",
        5.0,
        64,
        32,
        3,
        20,
    )
    cases = [
        ({}, "missing_field"),
        ({"prompt": "  "}, "invalid_value"),
        ({"prompt": 3}, "invalid_type"),
        ({"prompt": "x", "width": 36}, "invalid_value"),
        ({"prompt": "x", "height": 4096}, "out_of_range"),
        ({"prompt": "x", "guidance_scale": 99}, "out_of_range"),
        ({"prompt": "x", "guidance_scale": True}, "invalid_type"),
        ({"prompt": "x", "steps": 51}, "out_of_range"),
        ({"prompt": "x" * 3000}, "out_of_range"),
    ]
    for body, code in cases:
        with pytest.raises(BadRequest) as err:
            parse_text_fields(body, CAPS)
        assert err.value.code == code, body


def test_fields_the_model_cannot_use_are_422() -> None:
    with pytest.raises(BadRequest) as err:
        check_fields_for_model({"prompt": "a cat", "label": 3}, True, "tiny@abc")
    assert (err.value.status, err.value.code) == (422, "unsupported_field")
    assert "label" in err.value.message
    with pytest.raises(BadRequest) as err:
        check_fields_for_model({"label": 3, "guidance_scale": 2.0}, False, "digits16@x")
    assert err.value.status == 422 and "guidance_scale" in err.value.message
    check_fields_for_model({"prompt": "a", "label": None}, True, "tiny@abc")
    check_fields_for_model({"label": 3, "steps": 4}, False, "digits16@x")


def test_text_share_codec_round_trips_and_validates(t2i: PipelineBackend) -> None:
    cond = t2i.encode(COND)
    wire = encode_text_share(cond, with_embeddings=True)
    back = decode_text_share(wire, (t2i.tokens, t2i.embed_dim))
    assert back.cond is not None and cond.cond is not None and back.uncond is not None
    assert np.array_equal(back.cond, cond.cond) and back.cond.dtype == np.float32
    assert decode_text_share(encode_text_share(cond, False)).cond is None
    with pytest.raises(BadRequest, match="do not fit"):
        decode_text_share(wire, (77, 768))
    broken = {**wire, "cond": {**wire["cond"], "data": wire["cond"]["data"][:-4]}}
    with pytest.raises(BadRequest, match="bytes"):
        decode_text_share(broken)
    nan = np.full(wire["cond"]["shape"], np.nan, dtype="<f4").tobytes()
    with pytest.raises(BadRequest, match="non-finite"):
        decode_text_share({**wire, "cond": {**wire["cond"], "data": nan}})
    with pytest.raises(BadRequest, match="both"):
        decode_text_share({**wire, "uncond": None})


def test_embeddings_travel_by_cost() -> None:
    emb = 2 * 77 * 768 * 4  # SD 1.5's prompt pair, 473 KB
    assert embeddings_travel(emb, rate_bytes_per_s=100e6, encode_s=0.05)  # 4.7 ms on the wire
    assert not embeddings_travel(emb, rate_bytes_per_s=1e6, encode_s=0.05)  # 0.47 s on the wire
    assert not embeddings_travel(0, 1e9, 1.0)
    assert not embeddings_travel(emb, 0.0, 1.0)
