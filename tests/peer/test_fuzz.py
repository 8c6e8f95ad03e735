"""The fuzzer (`amcoedge bench fuzz`): seeded, bounded inputs; and runs against a peer.

The in-process runs use a real Node (gossip, RPC, aiohttp) with a do-nothing backend; the slow
test starts real peer processes through the CLI. Where a run finds a defect that another area
has still to fix, the test is marked xfail(strict=True) with the finding as its reason, so that
it fails (XPASS) as soon as the fix lands and the marker must go.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from peer.core.config import Limits, ephemeral_config
from peer.harness import fuzz
from peer.runtime.backend import NullBackend
from peer.runtime.node import Node


def test_cases_are_seeded_and_bounded() -> None:
    def draw(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        pngs = [fuzz._png16(rng)]
        out = [fuzz.http_case(rng, pngs).raw for _ in range(200)]
        out += [fuzz.rpc_frame(rng, i)[0] for i in range(200)]
        seeds = fuzz.gossip_seeds(rng, "p0")
        out += [fuzz.gossip_case(rng, seeds) for _ in range(200)]
        return out

    a, b = draw(1), draw(1)
    assert a == b and a != draw(2)
    assert all(len(x) <= 6 * 1024 * 1024 for x in a)
    assert all(0 < len(x) <= 70_000 for x in a[400:])  # gossip: one UDP datagram each
    heads = [x.split(b"\r\n", 1)[0] for x in a[:200]]
    assert sum(h.endswith(b" HTTP/1.1") for h in heads) >= 190  # most request lines are sane


def test_rpc_frames_say_when_an_answer_is_owed() -> None:
    rng = random.Random(0)
    for i in range(1, 500):
        frame, owed = fuzz.rpc_frame(rng, i)
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        is_request = (
            isinstance(obj, list)
            and len(obj) == 4
            and obj[0] == 0
            and obj[1] == i
            and isinstance(obj[2], str)
            and isinstance(obj[3], list)
        )
        if is_request:
            assert owed, obj
        if not isinstance(obj, list) or obj[:1] == [2]:
            assert not owed


def test_only_loopback_targets() -> None:
    fuzz.require_loopback("127.0.0.1")
    fuzz.require_loopback("localhost")
    with pytest.raises(fuzz.FuzzError):
        fuzz.require_loopback("8.8.8.8")


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    cfg = ephemeral_config("solo", limits=Limits(max_body_bytes=64 * 1024))
    n = Node(cfg, backend=NullBackend())
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def target(node: Node) -> fuzz.Target:
    return fuzz.Target("solo", ("127.0.0.1", node.http_port), ("127.0.0.1", node.rpc_port))


async def test_http_fuzz_in_process_no_5xx_and_still_serving(node: Node) -> None:
    out = await fuzz.fuzz_surface("http", [target(node)], 300, seed=3, concurrency=4)
    assert out["cases"] == 300
    assert out["server_errors"] == 0, out["server_error_samples"]
    assert out["no_answer"] == 0, out["outcomes"]
    codes = out["outcomes"]
    assert codes.get("400", 0) > 50 and codes.get("200", 0) > 0  # refused and served both
    assert out["healthy_after"], out["peers"]


async def test_rpc_fuzz_in_process_no_internal_errors(node: Node) -> None:
    out = await fuzz.fuzz_surface("rpc", [target(node)], 300, seed=3, concurrency=4)
    assert out["cases"] >= 300
    assert out["healthy_after"], out["peers"]
    assert out["server_errors"] == 0, out["server_error_samples"]


async def test_gossip_fuzz_in_process_loop_survives(node: Node) -> None:
    out = await fuzz.fuzz_surface("gossip", [target(node)], 600, seed=3)
    assert out["cases"] == 600
    assert out["bursts_unacked"] == 0
    assert out["healthy_after"], out["peers"]


@pytest.mark.slow
@pytest.mark.timeout(400)  # two real peers (about 60 s to start here) and 3 x 300 cases
def test_bench_fuzz_cli_real_peers(tmp_path: Path) -> None:
    from peer.cli import main

    out = tmp_path / "fuzz.json"
    rc = main(["bench", "fuzz", "--cases", "300", "--log-dir", str(tmp_path), "--json", str(out)])
    report: dict[str, Any] = json.loads(out.read_text())
    for name, s in report["surfaces"].items():
        assert s["cases"] >= 300, name
        assert s["crashes"] == 0, name
        assert s["server_errors"] == 0, (name, s["server_error_samples"])
        assert s["tracebacks"] == 0, name
        assert s["healthy_after"], (name, s["peers"])
    assert rc == 0
