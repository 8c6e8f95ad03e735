"""Losing peers: a share whose holder gossip declares lost is re-planned at once; a dead
origin's queued shares are dropped; a request retried with its idempotency key runs once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from peer.core.config import PeerConfig, ephemeral_config
from peer.core.jobs import Job
from peer.core.requests import GenerateRequest
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node


class GatedBackend(NullBackend):
    """NullBackend whose generate blocks until ``gate`` is set; counts its calls."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def generate(
        self, labels: list[int], seeds: list[int], steps: int, scheduler: str = "ddim"
    ) -> np.ndarray:
        self.calls += 1
        self.gate.wait(30.0)
        return super().generate(labels, seeds, steps, scheduler)


def cfg(name: str, join: tuple[tuple[str, int], ...] = ()) -> PeerConfig:
    return ephemeral_config(name, join, share_timeout_s=60.0)


def req(count: int = 4, policy: str = "equal") -> GenerateRequest:
    return GenerateRequest(
        count=count, label=1, steps=2, seed=10, mode="batch", policy=policy, scheduler="ddim"
    )


async def joined(a: Node, n: int) -> None:
    for _ in range(300):
        if a.gossip is not None and len(a.gossip.view().alive()) == n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("peers did not see each other")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node, GatedBackend]]:
    a = Node(cfg("a"), backend=NullBackend())
    await a.start()
    gated = GatedBackend()
    b = Node(cfg("b", (("127.0.0.1", a.rpc_port),)), backend=gated)
    await b.start()
    await joined(a, 2)
    try:
        yield a, b, gated
    finally:
        gated.gate.set()
        await b.stop()
        await a.stop()


async def test_a_share_on_a_peer_gossip_declares_lost_is_replanned_at_once(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    a, b, gated = pair
    job = a.submit_generate(req())
    for _ in range(200):  # b holds its share (blocked in its backend)
        if gated.calls:
            break
        await asyncio.sleep(0.02)
    assert gated.calls == 1
    assert b.gossip is not None
    await b.gossip.stop()  # b falls silent: no leave, no reset of the RPC connection
    await asyncio.wait_for(a.wait_job(job), 20)  # long before the 60 s share timeout
    assert job.state == "done", job.error
    assert job.result is not None
    [replan] = job.result["replans"]
    assert replan["peer"] == "b" and "declared" in replan["reason"]
    assert a.rpc_stats["share_abandoned"] == 1
    assert len(job.result["images"]) == 4


async def held_by_b(a: Node, gated: GatedBackend) -> Job:
    """A request submitted at ``a`` once ``b`` holds its share (blocked in its backend)."""
    job = a.submit_generate(req())
    for _ in range(200):
        if gated.calls:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("b never took its share")


def _seen_as(node: Node, peer: str, status: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``node``'s gossip view reports ``peer`` with ``status`` from now on."""
    from dataclasses import replace

    from gossip.view import View

    assert node.gossip is not None
    real = node.gossip.view

    def view() -> View:
        v = real()
        peers = dict(v.peers)
        peers[peer] = replace(peers[peer], status=status)  # type: ignore[arg-type]
        return View.build(v.local, peers, v.taken_at)

    monkeypatch.setattr(node.gossip, "view", view)


async def test_a_suspect_holder_that_answers_a_ping_keeps_its_late_share(
    pair: tuple[Node, Node, GatedBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    # suspicion rides on UDP probes a saturated slow link delays; the holder is up and working
    a, _b, gated = pair
    job = await held_by_b(a, gated)
    _seen_as(a, "b", "suspect", monkeypatch)
    await asyncio.sleep(3 * 0.05 + 0.5)  # late already (NullBackend predicts milliseconds)
    assert job.state == "running" and a.rpc_stats["suspect_vouched"] >= 1
    gated.gate.set()
    await asyncio.wait_for(a.wait_job(job), 20)
    assert job.state == "done", job.error
    assert job.result is not None and job.result["replans"] == []
    assert a.rpc_stats["share_abandoned"] == 0


async def test_a_suspect_holder_that_does_not_answer_is_replanned(
    pair: tuple[Node, Node, GatedBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    from peer.runtime import node as node_mod

    a, _b, gated = pair
    job = await held_by_b(a, gated)

    async def silent(self: Node, addr: tuple[str, int]) -> bool:
        return False  # as a ping lost on a link that went down

    monkeypatch.setattr(node_mod.Node, "_answers", silent)
    _seen_as(a, "b", "suspect", monkeypatch)
    await asyncio.wait_for(a.wait_job(job), 20)
    assert job.state == "done", job.error
    assert job.result is not None
    [replan] = job.result["replans"]
    assert "did not answer a ping" in replan["reason"]


async def test_a_dead_origins_queued_shares_are_dropped(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    a, b, gated = pair
    blocker = asyncio.ensure_future(b.executor.run(lambda: gated.gate.wait(30.0), 1.0, "x"))
    queued = asyncio.ensure_future(b.executor.run(lambda: 1, 1.0, "job-of-a"))
    await asyncio.sleep(0)
    b._serving["a"] = {"job-of-a": 1}
    assert b.gossip is not None
    view = b.gossip.view()
    b._on_view(view)  # a is alive: nothing happens
    assert not queued.done()
    await a.stop()  # a leaves the cluster
    for _ in range(300):
        if "a" not in b._serving:
            break
        await asyncio.sleep(0.02)
    assert b.rpc_stats["orphans_cancelled"] == 1
    with pytest.raises(asyncio.CancelledError):
        await queued
    gated.gate.set()
    await blocker


async def test_the_same_idempotency_key_gets_the_same_job(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    a, _, _ = pair
    first = a.submit_generate(req(policy="local"), key="k-1")
    again = a.submit_generate(req(policy="local"), key="k-1")
    other = a.submit_generate(req(policy="local"), key="k-2")
    assert again is first and other is not first
    await a.wait_job(first)
    assert a.submit_generate(req(policy="local"), key="k-1") is first


async def test_a_retry_follows_the_first_origin_when_it_survives(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    a, b, gated = pair
    first = b.submit_generate(req(policy="local"), key="same")  # b runs it (gated)
    for _ in range(200):
        if gated.calls:
            break
        await asyncio.sleep(0.02)
    b_url = f"http://127.0.0.1:{b.http_port}"
    retry = a.submit_generate(req(policy="local"), key="same", retry_of=b_url)
    await asyncio.sleep(0.5)
    gated.gate.set()
    await asyncio.wait_for(a.wait_job(retry), 20)
    assert retry.state == "done" and retry.result is not None
    assert retry.result["followed"]["job"] == first.id
    assert gated.calls == 1  # ran once, on the first origin
    assert a.rpc_stats["retries_followed"] == 1


async def test_a_retry_runs_here_when_the_first_origin_never_took_it(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    a, b, gated = pair
    gated.gate.set()
    retry = a.submit_generate(
        req(policy="local"), key="fresh", retry_of=f"http://127.0.0.1:{b.http_port}"
    )
    await asyncio.wait_for(a.wait_job(retry), 20)
    result: Any = retry.result
    assert retry.state == "done" and "followed" not in result
    assert a.rpc_stats["retries_run"] == 1 and gated.calls == 0


async def test_the_client_retries_on_another_peer_when_the_origin_is_gone(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    from peer.harness.client import Client, decode_images
    from peer.harness.cluster import free_ports

    a, _, _ = pair
    [dead] = free_ports(1)  # nothing listens there: the connection is refused
    live = f"http://127.0.0.1:{a.http_port}"
    client = Client(f"http://127.0.0.1:{dead}", timeout=30, fallbacks=(live,))
    body = {"count": 2, "label": 1, "steps": 2, "seed": 5, "mode": "local"}
    res, _ = await asyncio.to_thread(client.generate, **body)
    assert res["state"] == "done" and len(decode_images(res["result"])) == 2
    [hop] = client.retries
    assert hop["to"] == live


async def test_a_decision_uses_freshly_refreshed_load_and_reports_its_prediction(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    a, _, gated = pair
    gated.gate.set()
    await asyncio.sleep(1.0)  # the load gossip holds of b ages
    job = a.submit_generate(req(policy="greedy"))
    await asyncio.wait_for(a.wait_job(job), 20)
    assert job.result is not None
    timing = job.result["timing"]
    assert timing["load_age_s"]["b"] < 0.5  # refreshed by one round trip just before planning
    assert timing["predicted_s"] == pytest.approx(job.result["plan"]["predicted_makespan_s"])
    assert timing["actual_over_predicted"] == pytest.approx(
        timing["makespan_s"] / timing["predicted_s"], rel=1e-3
    )


async def test_cancel_names_one_share_and_the_jobs_other_share_there_finishes(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    from peer.core.shares import GenerateShare, encode_share
    from peer.rpc import RpcError

    a, b, gated = pair
    assert a.pool is not None
    addr = ("127.0.0.1", b.rpc_port)
    blocker = asyncio.ensure_future(b.executor.run(lambda: gated.gate.wait(30.0), 1.0, "x"))
    work = encode_share(GenerateShare((1,), (7,), 2, "ddim"))

    def run(share_id: str) -> Any:
        payload = {"job": "j", "origin": "a", "share": work, "share_id": share_id}
        return asyncio.ensure_future(a.pool.call(addr, "run_share", payload, timeout=30.0))

    first, second = run("s1"), run("s2")
    for _ in range(300):  # both queued behind the blocker over there
        if b.executor.active == 3:
            break
        await asyncio.sleep(0.02)
    assert b.executor.active == 3
    res = await a.pool.call(addr, "cancel", {"job": "j", "share": "s1"}, timeout=10.0)
    assert res == {"cancelled": 1}
    gated.gate.set()
    await blocker
    with pytest.raises(RpcError) as err:
        await first
    assert err.value.code == "cancelled"
    reply = await second  # the job's other share on b was kept and ran to completion
    assert reply["peer"] == "b"


async def test_cancel_and_run_share_refuse_a_malformed_share_id(
    pair: tuple[Node, Node, GatedBackend],
) -> None:
    from peer.rpc import RpcError

    a, b, _ = pair
    assert a.pool is not None
    addr = ("127.0.0.1", b.rpc_port)
    bad: list[Any] = [
        {"share": "s1"},  # no job
        {"job": 5, "share": "s1"},
        {"job": "j", "share": 3},
        {"job": "j", "share": None},
        {"job": "j", "share": ""},
        {"job": "j", "share": "x" * 65},
        {"job": "j", "share": ["s1"]},
        ["j", "s1"],
    ]
    for params in bad:
        with pytest.raises(RpcError) as err:
            await a.pool.call(addr, "cancel", params, timeout=10.0)
        assert err.value.code == "invalid_params", params
        assert "share" in str(err.value)
    assert await a.pool.call(addr, "cancel", {"job": "j"}, timeout=10.0) == {"cancelled": 0}
    assert await a.pool.call(addr, "cancel", {"job": "j", "share": "s1"}, timeout=10.0) == {
        "cancelled": 0
    }
    with pytest.raises(RpcError) as err:
        payload = {"job": "j", "share": {"kind": "generate"}, "share_id": 12}
        await a.pool.call(addr, "run_share", payload, timeout=10.0)
    assert err.value.code == "invalid_params"
    for waited in (-1.0, 3601.0, float("nan"), float("inf"), "5", True, None):
        with pytest.raises(RpcError) as err:
            payload = {"job": "j", "share": {"kind": "generate"}, "waited_s": waited}
            await a.pool.call(addr, "run_share", payload, timeout=10.0)
        assert err.value.code == "invalid_params", waited
        assert "waited_s" in str(err.value)
