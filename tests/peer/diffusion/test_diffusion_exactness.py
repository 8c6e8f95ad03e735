"""The exactness contracts: chain splits and batch shares are bit-identical; tiles blend alike.

Every contract runs on both denoiser engines (`engine` fixture: torch and onnx).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import numpy as np
import pytest

from peer.diffusion import Backend, ChainState, blend_tiles, load_backend, plan_tiles
from peer.diffusion.checks import centre_mask, chain_split, digit_canvas


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
@pytest.mark.parametrize("split", [1, 7, 13])
def test_chain_split_across_backends_is_bit_identical(
    tiny_dir: Path, scheduler: str, split: int, engine: str
) -> None:
    report = chain_split(
        lambda: load_backend(tiny_dir, device="cpu", threads=1, engine=engine),
        scheduler,
        14,
        split,
        3,
        11,
    )
    assert report["latent_bit_identical"], report
    assert report["image_identical"]
    assert report["max_abs_diff"] == 0.0


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_chain_in_three_hops_equals_generate(tiny_dir: Path, scheduler: str, engine: str) -> None:
    backends = [load_backend(tiny_dir, device="cpu", threads=1, engine=engine) for _ in range(3)]
    st = backends[0].start_chain(label=5, seed=99, steps=12, scheduler=scheduler)
    for be, stop in zip(backends, (4, 9, 12), strict=True):
        st = ChainState.from_wire(msgpack.unpackb(msgpack.packb(be.run_steps(st, stop).to_wire())))
    assert st.done
    img = backends[2].finish_chain(st)
    assert np.array_equal(img, backends[1].generate([5], [99], 12, scheduler)[0])


def test_ddpm_chain_without_generator_state_differs(tiny_be: Backend) -> None:
    """The generator state matters: resuming DDPM with a fresh generator changes the image."""
    st = tiny_be.run_steps(tiny_be.start_chain(2, 7, 10, "ddpm"), 5)
    fresh = tiny_be.start_chain(2, 8, 10, "ddpm")
    tampered = ChainState(**{**st.__dict__, "rng_state": fresh.rng_state})
    a = tiny_be.finish_chain(tiny_be.run_steps(st, 10))
    b = tiny_be.finish_chain(tiny_be.run_steps(tampered, 10))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_batch_share_equals_images_alone(tiny_be: Backend, scheduler: str) -> None:
    labels: list[int | None] = [3, 3, 7, 0, 9]
    seeds = [11, 12, 13, 14, 15]
    batch = tiny_be.generate(labels, seeds, 8, scheduler)
    assert batch.shape == (5, 16, 16) and batch.dtype == np.uint8
    for i in range(5):
        alone = tiny_be.generate([labels[i]], [seeds[i]], 8, scheduler)[0]
        assert np.array_equal(batch[i], alone), i
    # any sub-share of the batch, at any offset, agrees too
    share = tiny_be.generate(labels[1:4], seeds[1:4], 8, scheduler)
    assert np.array_equal(share, batch[1:4])


def test_batched_chains_equal_single_chains(tiny_be: Backend) -> None:
    states = [tiny_be.start_chain(c, 40 + c, 10, "ddpm") for c in range(4)]
    mid = tiny_be.run_chains(states, 6)
    for k, st in enumerate(states):
        assert tiny_be.run_steps(st, 6).latent == mid[k].latent
        assert tiny_be.run_steps(st, 6).rng_state == mid[k].rng_state


def test_worker_thread_result_equals_caller_thread(tiny_be: Backend) -> None:
    here = tiny_be.generate([1, 2], [5, 6], 6, "ddpm")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futs = [pool.submit(tiny_be.generate, [1, 2], [5, 6], 6, "ddpm") for _ in range(2)]
        there = [f.result() for f in futs]
    for arr in there:
        assert np.array_equal(here, arr)


def test_distinct_seeds_give_distinct_images(tiny_be: Backend) -> None:
    imgs = tiny_be.generate([4, 4], [1, 2], 6, "ddpm")
    assert not np.array_equal(imgs[0], imgs[1])


@pytest.mark.parametrize("side", [32, 48])
def test_repair_canvas_equals_tiles_repaired_one_by_one(tiny_be: Backend, side: int) -> None:
    canvas = digit_canvas(side // 16)
    mask = centre_mask(side)
    tiles = plan_tiles(side, side, 16, 4)
    pieces = [(t, tiny_be.repair_tile(canvas, mask, t, 6, 5, label=3)) for t in tiles]
    full = tiny_be.repair_canvas(canvas, mask, 6, 5, tile=16, halo=4, label=3)
    assert np.array_equal(blend_tiles(canvas.shape, pieces), full)
    assert np.array_equal(full[~mask], canvas[~mask])
    # the order in which pieces arrive does not matter
    assert np.array_equal(blend_tiles(canvas.shape, pieces[::-1]), full)


def test_tile_sees_the_canvas_noise(tiny_be: Backend) -> None:
    """A window covering the whole canvas is the untiled repair, bit for bit."""
    canvas = digit_canvas(2)
    mask = centre_mask(32)
    from peer.diffusion import Tile

    whole = tiny_be.repair_tile(canvas, mask, Tile(0, 0, 32, 32), 6, 9, label=1, scheduler="ddpm")
    assert np.array_equal(whole, tiny_be.repair(canvas, mask, 6, 9, label=1, scheduler="ddpm"))


def test_two_thread_backend_keeps_batch_and_chain_exactness(tiny_dir: Path, engine: str) -> None:
    be = load_backend(tiny_dir, device="cpu", threads=2, engine=engine)
    labels: list[int | None] = [1, 4, 4]
    seeds = [21, 22, 23]
    batch = be.generate(labels, seeds, 6, "ddpm")
    for i in range(3):
        assert np.array_equal(batch[i], be.generate([labels[i]], [seeds[i]], 6, "ddpm")[0])
    report = chain_split(
        lambda: load_backend(tiny_dir, device="cpu", threads=2, engine=engine), "ddpm", 6, 3, 4, 22
    )
    assert report["latent_bit_identical"]
