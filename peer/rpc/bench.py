"""RPC round-trip benchmark: ``RpcClient``/``RpcServer`` against a raw msgpack echo.

Both paths put the same bytes on the wire (``[0, id, "echo", [payload]]`` out,
``[1, id, nil, payload]`` back) over one TCP connection on loopback to a server in a separate
process; the raw path has no RPC layer (no validation, registry, futures table, tasks or
timeouts). Calls are sequential, in rotating blocks of raw and RPC calls so that load from
other processes affects all alike. Both processes call ``tuning.retain_heap()`` unless told not
to (it affects the raw and RPC paths alike; the report says whether it was on). With
``secret`` the RPC connection authenticates and every frame carries its tag (``peer.rpc.auth``);
the raw path stays plain, so the ratio is the whole price of the RPC layer with authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import multiprocessing as mp
import os
import platform
import pstats
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import msgpack

from peer.rpc.auth import FrameMac
from peer.rpc.client import RpcClient
from peer.rpc.connection import set_socket_buffers
from peer.rpc.limits import Limits
from peer.rpc.server import RpcServer
from peer.rpc.tuning import DEFAULT_MMAP_THRESHOLD, DEFAULT_TOP_PAD, retain_heap

KiB = 1024
MiB = 1024 * KiB
DEFAULT_SIZES = (100, 64 * KiB, 1 * MiB)
SMALL_RATIO_TARGET = 2.0
MB_PER_S_TARGET = 300.0


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[int, ...] = DEFAULT_SIZES
    n: int = 2000  # measured calls per path for payloads under 1 MiB
    n_large: int = 500  # measured calls per path for payloads of 1 MiB and more
    warmup: int = 200
    block: int = 50  # calls per alternating block
    use_uvloop: bool = True
    retain_heap: bool = True  # peer.rpc.tuning.retain_heap() in both processes
    progress: bool = True
    profile_path: str | None = None
    secret: bytes | None = None  # authenticate and seal the RPC connection with this key


def _new_loop_factory(use_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop, "uvloop"
        except ImportError:
            pass
    return asyncio.new_event_loop, "asyncio"


def _run(coro: Coroutine[Any, Any, Any], use_uvloop: bool) -> Any:
    factory, _ = _new_loop_factory(use_uvloop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    """The same socket settings the RPC connections use (``Limits.bulk()``)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_socket_buffers(sock, Limits.bulk().socket_buffer_bytes)


class _RawEchoServer(asyncio.Protocol):
    """Answers each request array with a response array carrying params[0]; nothing else."""

    def __init__(self, max_frame: int) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_frame)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        assert self._transport is not None
        for obj in self._unpacker:
            self._transport.write(self._packer.pack([1, obj[1], None, obj[3][0]]))


class _RawClient(asyncio.Protocol):
    def __init__(self, max_frame: int) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_frame)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._msgid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for obj in self._unpacker:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(obj[3])

    async def echo(self, payload: bytes) -> Any:
        assert self._transport is not None
        self._msgid += 1
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(self._packer.pack([0, self._msgid, "echo", [payload]]))
        return await self._waiter


async def _echo(payload: Any) -> Any:
    return payload


def _echo_sync(payload: Any) -> Any:
    return payload


async def _serve(conn: Connection, max_frame: int, secret: bytes | None) -> None:
    loop = asyncio.get_running_loop()
    raw = await loop.create_server(lambda: _RawEchoServer(max_frame), "127.0.0.1", 0)
    rpc = RpcServer(
        handlers={"echo": _echo, "echo_sync": _echo_sync}, limits=Limits.bulk(), secret=secret
    )
    await rpc.start("127.0.0.1", 0)
    done = loop.create_future()

    def _control() -> None:
        # "cpu": report this process's CPU seconds; anything else (or EOF): stop.
        try:
            msg = conn.recv()
        except EOFError:
            msg = "stop"
        if msg == "cpu":
            conn.send(_usage())
        elif not done.done():
            done.set_result(None)

    loop.add_reader(conn.fileno(), _control)
    conn.send((raw.sockets[0].getsockname()[1], rpc.port))
    await done
    loop.remove_reader(conn.fileno())
    raw.close()
    await rpc.close()


def _usage() -> tuple[float, int]:
    """CPU seconds (user + system) and minor page faults of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_minflt


def _server_main(
    conn: Connection, use_uvloop: bool, max_frame: int, keep_heap: bool, secret: bytes | None
) -> None:
    if keep_heap:
        retain_heap()
    _run(_serve(conn, max_frame, secret), use_uvloop)


def _summary(samples_ns: Sequence[int]) -> dict[str, float]:
    us = sorted(s / 1000.0 for s in samples_ns)
    p99 = us[min(len(us) - 1, round(0.99 * (len(us) - 1)))]
    return {
        "median": round(statistics.median(us), 2),
        "p99": round(p99, 2),
        "mean": round(statistics.fmean(us), 2),
        "min": round(us[0], 2),
    }


async def _measure(
    cfg: BenchConfig,
    raw_port: int,
    rpc_port: int,
    control: Connection,
    profiler: cProfile.Profile | None,
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    limits = Limits.bulk()
    _, raw = await loop.create_connection(
        lambda: _RawClient(limits.max_frame_bytes), "127.0.0.1", raw_port
    )
    rpc = await RpcClient.connect("127.0.0.1", rpc_port, limits=limits, secret=cfg.secret)
    if (cfg.secret is not None) != rpc.sealed:
        raise RuntimeError("the RPC connection is not sealed as configured")
    clock = time.perf_counter_ns

    def server_usage() -> tuple[float, int]:
        control.send("cpu")
        cpu_s, faults = control.recv()
        return float(cpu_s), int(faults)

    rows: list[dict[str, Any]] = []
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        total = sum(3 * (cfg.n_large if s >= MiB else cfg.n) for s in cfg.sizes)
        bar = tqdm(total=total, desc="bench rpc", unit="call", file=sys.stderr)
    paths = ("raw", "echo", "echo_sync")
    try:
        for size in cfg.sizes:
            payload = os.urandom(size)
            n = cfg.n_large if size >= MiB else cfg.n
            for _ in range(cfg.warmup):
                if await raw.echo(payload) != payload:
                    raise RuntimeError("raw echo returned a different payload")
                for method in ("echo", "echo_sync"):
                    if await rpc.call(method, payload) != payload:
                        raise RuntimeError(f"rpc {method} returned a different payload")
            samples: dict[str, list[int]] = {p: [] for p in paths}
            # per path: client CPU s, server CPU s, client minor faults, server minor faults
            cpu = {p: [0.0, 0.0, 0.0, 0.0] for p in paths}
            order = list(paths)
            done = 0
            while done < n:
                k = min(cfg.block, n - done)
                for which in order:
                    out = samples[which]
                    (c0, cf0), (s0, sf0) = _usage(), server_usage()
                    if which == "raw":
                        for _ in range(k):
                            t0 = clock()
                            await raw.echo(payload)
                            out.append(clock() - t0)
                    else:
                        if profiler is not None and which == "echo":
                            profiler.enable()
                        for _ in range(k):
                            t0 = clock()
                            await rpc.call(which, payload)
                            out.append(clock() - t0)
                        if profiler is not None:
                            profiler.disable()
                    (c1, cf1), (s1, sf1) = _usage(), server_usage()
                    acc = cpu[which]
                    acc[0] += c1 - c0
                    acc[1] += s1 - s0
                    acc[2] += cf1 - cf0
                    acc[3] += sf1 - sf0
                order.append(order.pop(0))  # rotate who goes first
                done += k
                if bar is not None:
                    bar.update(3 * k)
            raw_s, rpc_s = _summary(samples["raw"]), _summary(samples["echo"])
            sync_s = _summary(samples["echo_sync"])
            rows.append(
                {
                    "payload_bytes": size,
                    "n": n,
                    "raw_us": raw_s,
                    "rpc_us": rpc_s,
                    "rpc_sync_handler_us": sync_s,
                    "ratio_median": round(rpc_s["median"] / raw_s["median"], 3),
                    "ratio_p99": round(rpc_s["p99"] / raw_s["p99"], 3),
                    "ratio_sync_handler_median": round(sync_s["median"] / raw_s["median"], 3),
                    "rpc_overhead_us_median": round(rpc_s["median"] - raw_s["median"], 2),
                    # CPU seconds (user + system) per call in each process: less
                    # sensitive than wall time to other load on the machine.
                    "cpu_us_per_call": {
                        {"raw": "raw", "echo": "rpc", "echo_sync": "rpc_sync_handler"}[p]: {
                            "client": round(cpu[p][0] / n * 1e6, 2),
                            "server": round(cpu[p][1] / n * 1e6, 2),
                            "client_minor_faults": round(cpu[p][2] / n, 1),
                            "server_minor_faults": round(cpu[p][3] / n, 1),
                        }
                        for p in paths
                    },
                }
            )
    finally:
        if bar is not None:
            bar.close()
        await rpc.close()
        if raw._transport is not None:
            raw._transport.close()
    return rows


def mac_us_per_mib(repeats: int = 20) -> float:
    """Median microseconds to tag 1 MiB in this process: the floor of what sealing adds per
    MiB and per side (each side tags what it sends and checks what it receives)."""
    mac = FrameMac(b"k" * 32)
    data = os.urandom(MiB)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        mac.tag(data)
        times.append(time.perf_counter_ns() - t0)
    return round(statistics.median(times) / 1000.0, 1)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Start the echo server process, measure, and return the JSON-able report."""
    _, loop_name = _new_loop_factory(cfg.use_uvloop)
    heap_kept = retain_heap() if cfg.retain_heap else False
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_server_main,
        args=(child, cfg.use_uvloop, Limits.bulk().max_frame_bytes, cfg.retain_heap, cfg.secret),
        daemon=True,
    )
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("bench server process did not start within 60 s")
        raw_port, rpc_port = parent.recv()
        profiler = cProfile.Profile() if cfg.profile_path else None
        load_before = os.getloadavg()
        rows = _run(_measure(cfg, raw_port, rpc_port, parent, profiler), cfg.use_uvloop)
        load_after = os.getloadavg()
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    if profiler is not None and cfg.profile_path:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        with open(cfg.profile_path, "w") as fh:
            fh.write(out.getvalue())
    report: dict[str, Any] = {
        "bench": "rpc",
        "loop": loop_name,
        "malloc_tuning": (
            {"top_pad": DEFAULT_TOP_PAD, "mmap_threshold": DEFAULT_MMAP_THRESHOLD}
            if heap_kept
            else None
        ),
        "transport": "tcp loopback 127.0.0.1, one connection, server in a separate process",
        "rpc_auth": (
            "secret: HMAC-SHA256 handshake, every frame tagged (HMAC-SHA256/128 + sequence)"
            if cfg.secret is not None
            else "none (no secret)"
        ),
        "python": platform.python_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "cpus": os.cpu_count(),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "mac_us_per_mib": mac_us_per_mib() if cfg.secret is not None else None,
        "warmup": cfg.warmup,
        "profiled": profiler is not None,
        "cpu_note": "cpu_us_per_call: user+system CPU microseconds and minor page faults per call",
        "sizes": rows,
    }
    small = [r for r in rows if r["payload_bytes"] <= 1024]
    large = [r for r in rows if r["payload_bytes"] == MiB]
    targets: dict[str, Any] = {}
    if small:
        ratio = max(r["ratio_median"] for r in small)
        targets["small_ratio_median"] = ratio
        targets["small_ratio_max"] = SMALL_RATIO_TARGET
        targets["small_ratio_ok"] = ratio <= SMALL_RATIO_TARGET
    if large:
        row = large[0]
        rpc_mbps = MiB / (row["rpc_us"]["median"] * 1e-6) / 1e6
        raw_mbps = MiB / (row["raw_us"]["median"] * 1e-6) / 1e6
        report["throughput_1mib"] = {
            "definition": "1 MiB payload each way / median round trip, MB = 1e6 bytes",
            "rpc_mb_per_s": round(rpc_mbps, 1),
            "raw_mb_per_s": round(raw_mbps, 1),
        }
        targets["mb_per_s"] = round(rpc_mbps, 1)
        targets["mb_per_s_min"] = MB_PER_S_TARGET
        targets["mb_per_s_ok"] = rpc_mbps >= MB_PER_S_TARGET
    report["targets"] = targets
    return report
