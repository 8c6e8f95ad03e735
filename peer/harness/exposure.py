"""``amcoedge bench exposure``: does a peer stay open to its cluster under a connection flood?

One peer starts; ``--idle`` TCP connections to its RPC port (each sends one ``ping``, then
nothing) and ``--slowloris`` HTTP connections (a request line and half a header, never finished)
are opened from one address (127.0.0.3); then a second peer starts and joins the first. The report says how
long the join took (both peers list each other alive), how many flood connections the first peer
refused at once or held, and when it closed the ones it held: the RPC server's idle and handshake
timeouts, the HTTP guard's header timeout. Loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from amcoedge.output import emit_json
from amcoedge.stats import percentile
from peer.harness.cluster import free_ports, http_json
from peer.rpc.flood import raise_fd_limit

_PING = msgpack.packb([0, 1, "ping", []])
FLOOD_SOURCE = "127.0.0.3"  # the flood's own address; the peers talk from 127.0.0.1
_PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: "


def _start_peer(
    name: str, port: int, http: int, join: int | None, log: Path
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "peer",
        "peer",
        "--name",
        name,
        "--listen",
        f"127.0.0.1:{port}",
        "--http",
        f"127.0.0.1:{http}",
        "--gossip",
        "local",
    ]
    if join is not None:
        argv += ["--join", f"127.0.0.1:{join}"]
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)


def _sees(http: int, other: str) -> bool:
    try:
        status, body = http_json(f"http://127.0.0.1:{http}/v1/cluster", timeout=1.0)
    except (OSError, ValueError):
        return False
    peers = (body or {}).get("peers", []) if status == 200 else []
    return any(p.get("name") == other and p.get("status") == "alive" for p in peers)


async def _hold(kind: str, port: int, first: bytes, t0: float, out: dict[str, Any]) -> None:
    """One flood connection: send ``first``, then read until the server closes it."""
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_SOURCE, 0)), 10
        )
    except (OSError, TimeoutError):
        out["connect_errors"] += 1
        return
    try:
        writer.write(first)
        await writer.drain()
        opened = loop.time()
        got = b""
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(out["wait_s"]):
                while chunk := await reader.read(65536):
                    got += chunk[:4096]
        closed = loop.time()
        if closed - opened >= out["wait_s"] - 0.5:
            out["still_open"] += 1
        elif kind == "rpc" and b"busy" in got:
            out["refused_at_once"] += 1  # over the per-source cap: answered busy and closed
        else:
            out["held_then_closed_s"].append(closed - t0)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _flood(rpc: int, http: int, idle: int, slow: int, wait_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reports: dict[str, dict[str, Any]] = {
        kind: {
            "connections": n,
            "connect_errors": 0,
            "refused_at_once": 0,
            "still_open": 0,
            "held_then_closed_s": [],
            "wait_s": wait_s,
        }
        for kind, n in (("rpc", idle), ("http", slow))
    }
    tasks = [asyncio.create_task(_hold("rpc", rpc, _PING, t0, reports["rpc"])) for _ in range(idle)]
    tasks += [
        asyncio.create_task(_hold("http", http, _PARTIAL, t0, reports["http"])) for _ in range(slow)
    ]
    await asyncio.gather(*tasks)
    for r in reports.values():
        closes: list[float] = r.pop("held_then_closed_s")
        r["held_then_closed"] = len(closes)
        r["closed_after_s"] = {"p50": percentile(closes, 50), "max": max(closes, default=None)}
        del r["wait_s"]
    return reports


def run(idle: int, slow: int, wait_s: float) -> dict[str, Any]:
    raise_fd_limit(idle + slow + 256)
    logs = Path(tempfile.mkdtemp(prefix="amcoedge-exposure-"))
    a_rpc, b_rpc = free_ports(2)
    a_http, b_http = free_ports(2)
    procs = [_start_peer("a", a_rpc, a_http, None, logs / "a.log")]
    try:
        deadline = time.monotonic() + 180
        while not _sees(a_http, "a"):
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"peer a did not start; see {logs / 'a.log'}")
            time.sleep(0.25)

        async def main() -> tuple[dict[str, Any], dict[str, float | None]]:
            flood = asyncio.create_task(_flood(a_rpc, a_http, idle, slow, wait_s))
            await asyncio.sleep(2.0)  # the flood is in place
            t_join = time.monotonic()
            procs.append(_start_peer("b", b_rpc, b_http, a_rpc, logs / "b.log"))
            joined = up = None
            while time.monotonic() - t_join < 180:
                if up is None and await asyncio.to_thread(lambda: _sees(b_http, "b")):
                    up = time.monotonic()  # b serves HTTP: loaded, about to join
                if up is not None and await asyncio.to_thread(
                    lambda: _sees(a_http, "b") and _sees(b_http, "a")
                ):
                    joined = time.monotonic()
                    break
                await asyncio.sleep(0.1)
            times = {
                "start_s": None if up is None else up - t_join,
                "join_s": None if up is None or joined is None else joined - up,
            }
            return await flood, times

        flood, times = asyncio.run(main())
        return {
            "idle_rpc": idle,
            "slowloris_http": slow,
            **times,
            "note": "start_s: the second peer's process start to its HTTP answering (imports, "
            "model load, ONNX session); join_s: from then to both peers listing each other alive",
            "rpc": flood["rpc"],
            "http": flood["http"],
            "logs": str(logs),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=20)


def _cmd(args: argparse.Namespace) -> int:
    report = run(args.idle, args.slowloris, args.wait)
    return 0 if emit_json(report, args.json) else 2


def register(groups: dict[str, Any]) -> None:
    p = groups["bench"].add_parser(
        "exposure", help="a peer under an idle-RPC and slowloris-HTTP flood: join time, closes"
    )
    p.add_argument("--idle", type=int, default=1000, help="idle RPC connections (default 1000)")
    p.add_argument("--slowloris", type=int, default=1000, help="partial HTTP requests (1000)")
    p.add_argument("--wait", type=float, default=150.0, help="longest wait for a close, s")
    p.add_argument("--json", help="write the report here as well")
    p.set_defaults(func=_cmd)
