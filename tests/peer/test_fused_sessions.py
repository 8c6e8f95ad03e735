"""Fused tiles over peers: band sessions (open / step / close) driven by the origin's
``run_fused`` give the same image as ``repair_fused`` in one process, over msgpack and over real
RPC between two in-process peers; strips are the only per-step traffic."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import numpy as np
import pytest

from peer.core.config import ephemeral_config
from peer.diffusion import Backend, load_backend
from peer.diffusion.checks import centre_mask
from peer.diffusion.fused import repair_fused, seam_bytes
from peer.harness.bench_shares import canvas_of_digits
from peer.runtime.fused_sessions import FusedSessionError, FusedSessions, run_fused
from peer.runtime.node import Node

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def shipped() -> Backend:
    return load_backend(device="cpu", threads=1, engine="onnx")


def _wire(book: FusedSessions) -> Any:
    async def call(method: str, params: dict[str, Any]) -> Any:
        q = msgpack.unpackb(msgpack.packb(params, use_bin_type=True), raw=False)
        if method == "fused.open":
            out = book.open(q, 0.0)
        elif method == "fused.step":
            out = book.step(q, 0.0)
        else:
            out = book.close(q)
        return msgpack.unpackb(msgpack.packb(out, use_bin_type=True), raw=False)

    return call


@pytest.mark.parametrize("warmup", [0, 2])
async def test_sessions_give_the_in_process_fused_image(shipped: Backend, warmup: int) -> None:
    canvas = canvas_of_digits(64)
    mask = centre_mask(64, 0.5)
    books = [FusedSessions(shipped) for _ in range(3)]
    got = await run_fused(
        shipped,
        canvas,
        mask,
        5,
        7,
        [(f"p{i}", _wire(b)) for i, b in enumerate(books)],
        halo=8,
        warmup=warmup,
        label=3,
    )
    want = repair_fused(shipped, canvas, mask, 5, 7, parts=3, halo=8, warmup=warmup, label=3)
    assert np.array_equal(got.image, want.image)
    assert got.exchanges == want.exchanges == 5 - warmup - 1
    per_exchange = seam_bytes(got.bands, 64, shipped.in_channels)
    # the strips' float32 payload plus a small msgpack envelope per strip
    assert per_exchange <= got.strip_bytes / got.exchanges <= per_exchange + 4 * 200
    assert all(not b.sessions for b in books)  # closed
    if warmup:  # the warm-up as a whole-canvas session on the first holder: the same image
        on_peer = await run_fused(
            shipped,
            canvas,
            mask,
            5,
            7,
            [(f"p{i}", _wire(b)) for i, b in enumerate(books)],
            halo=8,
            warmup=warmup,
            label=3,
            warm_call=_wire(books[0]),
        )
        assert np.array_equal(on_peer.image, want.image)
        assert all(not b.sessions for b in books)


def test_sessions_refuse_unknown_and_too_many(shipped: Backend) -> None:
    book = FusedSessions(shipped, limit=0)
    with pytest.raises(FusedSessionError):
        book.step({"session": "nope"}, 0.0)
    with pytest.raises(FusedSessionError):
        book.open({}, 0.0)


async def test_fused_over_rpc_between_two_peers(shipped: Backend) -> None:
    a = Node(ephemeral_config("a", (), share_timeout_s=120.0), backend=shipped)
    await a.start()
    b = Node(ephemeral_config("b", (("127.0.0.1", a.rpc_port),)), backend=shipped)
    await b.start()
    try:
        _, pool = a._started()
        addr_b = ("127.0.0.1", b.rpc_port)
        addr_a = ("127.0.0.1", a.rpc_port)

        def via(addr: tuple[str, int]) -> Any:
            async def call(method: str, params: dict[str, Any]) -> Any:
                return await pool.call(addr, method, params, timeout=60.0)

            return call

        canvas = canvas_of_digits(64)
        mask = centre_mask(64, 0.5)
        got = await run_fused(
            shipped, canvas, mask, 4, 3, [("a", via(addr_a)), ("b", via(addr_b))], label=3
        )
        want = repair_fused(shipped, canvas, mask, 4, 3, parts=2, halo=8, label=3)
        assert np.array_equal(got.image, want.image)
        assert got.holders == ["a", "b"] and got.exchanges == 3
        await asyncio.sleep(0)
    finally:
        await b.stop()
        await a.stop()
