"""Re-planning: a share whose peer stops answering RPC is re-run elsewhere; nothing is dropped.
Plumbing only: two in-process nodes with a do-nothing backend (images encode their seed)."""

from __future__ import annotations

import asyncio
from typing import Any

from peer.core.config import PeerConfig, ephemeral_config
from peer.harness.client import decode_images
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node


def cfg(name: str, join: tuple[tuple[str, int], ...] = ()) -> PeerConfig:
    return ephemeral_config(name, join, share_timeout_s=5.0)


async def test_share_on_a_dead_rpc_peer_is_replanned() -> None:
    a = Node(cfg("a"), backend=NullBackend())
    await a.start()
    b = Node(cfg("b", (("127.0.0.1", a.rpc_port),)), backend=NullBackend())
    await b.start()
    try:
        for _ in range(100):
            if len(a.gossip.view().alive()) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(a.gossip.view().alive()) == 2
        await b.server.close()  # b's gossip still says alive; its RPC is gone
        from peer.core.requests import GenerateRequest

        req = GenerateRequest(
            count=6, label=1, steps=2, seed=100, mode="batch", policy="equal", scheduler="ddim"
        )
        job = a.submit_generate(req)
        await asyncio.wait_for(a.wait_job(job), 20)
        assert job.state == "done", job.error
        assert job.result is not None
        result = job.result
        assert "b" in result["plan"]["peers"]
        assert [r["peer"] for r in result["replans"]] == ["b"]
        imgs = decode_images(result)
        assert [int(im[0, 0]) for im in imgs] == [100 + i for i in range(6)]
        assert any(ev.kind == "replan" for ev in job.events)
    finally:
        await b.stop()
        await a.stop()


async def test_shared_secret_cluster(tmp_path: Any) -> None:
    import dataclasses

    secret = tmp_path / "secret"
    secret.write_text("correct horse battery staple\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("a different secret entirely\n")
    a = Node(dataclasses.replace(cfg("a"), secret_file=str(secret)), backend=NullBackend())
    await a.start()
    join = (("127.0.0.1", a.rpc_port),)
    b = Node(dataclasses.replace(cfg("b", join), secret_file=str(secret)), backend=NullBackend())
    c = Node(dataclasses.replace(cfg("c", join), secret_file=str(wrong)), backend=NullBackend())
    await b.start()
    await c.start()
    try:
        # wait for b to be in and for c's wrongly keyed datagrams to have been refused
        def refused() -> int:  # c's gossip datagrams and its push-pull RPC, both refused
            assert a.gossip is not None and a.server is not None
            return int(a.gossip.stats.get("dropped_auth", 0) + a.server.stats["auth_failures"])

        for _ in range(400):
            if len(a.gossip.view().alive()) >= 2 and refused() > 0:
                break
            await asyncio.sleep(0.025)
        assert refused() > 0
        assert sorted(p.name for p in a.gossip.view().alive()) == ["a", "b"]
        from peer.core.requests import GenerateRequest

        req = GenerateRequest(
            count=4, label=1, steps=2, seed=7, mode="batch", policy="equal", scheduler="ddim"
        )
        job = a.submit_generate(req)
        await asyncio.wait_for(a.wait_job(job), 20)
        assert job.state == "done" and job.result is not None
        assert sorted(job.result["plan"]["peers"]) == ["a", "b"]
        assert job.result["replans"] == []
    finally:
        await c.stop()
        await b.stop()
        await a.stop()
