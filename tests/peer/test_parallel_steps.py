"""Parallel steps over RPC: three in-process peers on the shipped model (onnx), Parareal to a
tolerance and to exactness, and a peer lost mid-way whose segment moves to another."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from peer.core.config import PeerConfig, ephemeral_config
from peer.core.parallel_plan import ParallelOptions
from peer.core.planner import Cand, PeerState, Planner, Work, parallel_layout, parallel_makespan
from peer.core.recruit import Recruiters
from peer.core.requests import GenerateRequest
from peer.diffusion import Backend, ModelLoadError, decode_png, load_backend
from peer.diffusion.images import psnr
from peer.runtime.node import Node

pytestmark = pytest.mark.timeout(600)


class FailingSteps:
    """A backend whose chain steps fail (a peer whose model breaks mid-request)."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def run_steps(self, st: Any, stop: int) -> Any:
        self.failures += 1
        raise ModelLoadError("this peer's model broke")


def cfg(name: str, join: tuple[tuple[str, int], ...] = ()) -> PeerConfig:
    return ephemeral_config(name, join, share_timeout_s=120.0)


@pytest.fixture(scope="module")
def shipped() -> Backend:
    return load_backend(device="cpu", threads=1, engine="onnx")


async def cluster(backends: list[Any]) -> list[Node]:
    nodes = [Node(cfg("a"), backend=backends[0])]
    await nodes[0].start()
    for k, be in enumerate(backends[1:]):
        n = Node(cfg("bcd"[k], (("127.0.0.1", nodes[0].rpc_port),)), backend=be)
        await n.start()
        nodes.append(n)
    for _ in range(300):
        if nodes[0].gossip is not None and len(nodes[0].gossip.view().alive()) == len(nodes):
            return nodes
        await asyncio.sleep(0.02)
    raise AssertionError("peers did not see each other")


@pytest.fixture
async def three(shipped: Backend) -> AsyncIterator[list[Node]]:
    nodes = await cluster([shipped, shipped, shipped])
    try:
        yield nodes
    finally:
        for n in reversed(nodes):
            await n.stop()


def request(steps: int = 30) -> GenerateRequest:
    return GenerateRequest(
        count=1, label=4, steps=steps, seed=21, mode="parallel", policy="equal", scheduler="ddim"
    )


def image_of(result: dict[str, Any]) -> np.ndarray:
    return decode_png(base64.b64decode(result["images"][0]))


@pytest.mark.slow
async def test_parallel_steps_over_three_peers_meet_the_tolerance(
    three: list[Node], shipped: Backend
) -> None:
    a = three[0]
    job = a.submit_generate(request())
    await a.wait_job(job)
    assert job.state == "done", job.error
    res = job.result
    assert res is not None
    assert res["plan"]["mode"] == "parallel"
    peers = [s["peer"] for s in res["plan"]["shares"]]
    assert len(peers) >= 2 and peers[0] == "a" and len(set(peers)) == len(peers)
    assert res["plan"]["detail"]["segments"] == len(peers)
    assert res["parallel"]["iterations"] >= 1
    # every segment's timing is relative to the job and ends after it starts, within it
    span = res["timing"]["makespan_s"]
    for t in res["timing"]["peers"]:
        assert 0.0 <= t["start_s"] <= t["end_s"] <= span + 0.05, t
    serial = shipped.generate([4], [21], 30)[0]
    assert psnr(serial, image_of(res)) >= 35.0


@pytest.mark.slow
async def test_losing_a_peer_moves_its_segment_and_keeps_the_tolerance(
    shipped: Backend,
) -> None:
    broken = FailingSteps(shipped)
    nodes = await cluster([shipped, shipped, broken])
    try:
        a = nodes[0]
        job = a.submit_generate(request())
        await a.wait_job(job)
        assert job.state == "done", job.error
        res = job.result
        assert res is not None
        assert broken.failures >= 1
        assert res["replans"] and res["replans"][0]["peer"] == "c"
        assert res["replans"][0]["to"] in ("a", "b")
        serial = shipped.generate([4], [21], 30)[0]
        assert psnr(serial, image_of(res)) >= 35.0
    finally:
        for n in reversed(nodes):
            await n.stop()


async def test_chain_and_parallel_take_several_images(shipped: Backend) -> None:
    """``count > 1`` in the relay (asked by both its names) and in parallel steps, run to
    exactness; each image equals one peer's serial run; the parallel run feeds the tracker."""
    a = Node(cfg("a"), backend=shipped)
    await a.start()
    try:
        serial = shipped.generate([4, 4], [21, 22], 8, scheduler="ddim")
        for mode in ("chain", "steps"):
            req = GenerateRequest(
                count=2, label=4, steps=8, seed=21, mode=mode, policy="equal", scheduler="ddim"
            )
            job = a.submit_generate(req)
            await a.wait_job(job)
            assert job.state == "done", job.error
            assert job.result is not None and job.result["plan"]["mode"] == "chain"
            got = [decode_png(base64.b64decode(x)) for x in job.result["images"]]
            assert all(np.array_equal(g, s) for g, s in zip(got, serial, strict=True))
        req = GenerateRequest(
            count=2,
            label=4,
            steps=8,
            seed=21,
            mode="parallel",
            policy="equal",
            scheduler="ddim",
            parallel=ParallelOptions(segments=2, exact=True),
        )
        job = a.submit_generate(req)
        await a.wait_job(job)
        assert job.state == "done", job.error
        res = job.result
        assert res is not None and res["parallel"]["exact"] and res["parallel"]["segments"] == 2
        got = [decode_png(base64.b64decode(x)) for x in res["images"]]
        assert all(np.array_equal(g, s) for g, s in zip(got, serial, strict=True))
        snap = a.parallel_measured()
        assert snap.runs == 1 and snap.step_s["a"] > 0 and snap.last_s is not None
        assert snap.iterations == {}  # a run to exactness teaches no tolerance
    finally:
        await a.stop()


def _cand(name: str, is_self: bool, a_s: float, rtt: float = 0.001) -> Cand:
    p = PeerState(name, is_self, ("h", 1), 0.0, 0.0, a_s, 0.0, 0.0 if is_self else rtt)
    return Cand(p, 0.0, 0.0, 0.0, 0.0)


def test_parallel_prediction_and_auto() -> None:
    work = Work("generate", 1, 50, deterministic=True)
    me = _cand("a", True, 0.05)
    others = [_cand(n, False, 0.05) for n in "bcd"]
    serial = 50 * 0.05
    four = parallel_makespan(me, others, work, 4, 1)
    # bounds (0, 7, 21, 35, 49): the origin's lane runs G(0,0..3) (8 evals), its own 7 steps,
    # then the sweep G(1,1..3) (6 evals; each remote 14-step solve ended earlier), the last step
    assert four == pytest.approx(0.05 * (8 + 7 + 6 + 1))
    layout = parallel_layout(me, others, work, 4)
    assert layout[0] == (0, 7, 21, 35, 49) and layout[2] == 1
    assert four < serial
    assert (
        parallel_makespan(me, others, Work("generate", 1, 50, deterministic=True, exact=True), 4, 4)
        > serial  # to exactness: all 4 iterations, the last ones barely overlapped
    )
    peers = [me.peer] + [o.peer for o in others]
    plan = Planner(Recruiters(seed=0)).plan(peers, work, mode="auto", policy="greedy")
    assert "parallel" in plan.alternatives
    slow_links = [
        PeerState(n, False, ("h", 1), 0.0, 0.0, 0.05, 0.0, 5.0) for n in "bcd"
    ]  # 5 s round trips: parallel loses, auto must not pick it
    plan2 = Planner(Recruiters(seed=0)).plan(
        [me.peer, *slow_links], work, mode="auto", policy="greedy"
    )
    assert plan2.mode != "parallel"
