"""``amcoedge bench rpc`` (RPC round trip against a raw msgpack echo) and ``amcoedge bench
rpc-flood`` (idle connections from one address, then a client from another), as JSON."""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from amcoedge.output import emit_json
from peer.rpc.bench import DEFAULT_SIZES, BenchConfig, run_bench
from peer.rpc.flood import idle_flood
from peer.rpc.limits import Limits
from peer.rpc.server import RpcServer


def _sizes(text: str) -> tuple[int, ...]:
    units = {"k": 1024, "m": 1024 * 1024}
    out = []
    for part in text.split(","):
        part = part.strip().lower().removesuffix("b").removesuffix("i")
        mult = units.get(part[-1:], 1)
        digits = part[:-1] if part[-1:] in units else part
        try:
            value = int(digits) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {part!r} (e.g. 100,64KiB,1MiB)") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"size must be positive: {part!r}")
        out.append(value)
    return tuple(out)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _bench_rpc(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        sizes=args.sizes,
        n=args.n,
        n_large=args.n_large,
        warmup=args.warmup,
        block=args.block,
        use_uvloop=args.loop == "uvloop",
        retain_heap=not args.no_retain_heap,
        progress=not args.no_progress,
        profile_path=args.profile,
        secret=secrets.token_bytes(32) if args.secret else None,
    )
    report: dict[str, Any] = run_bench(cfg)
    return 0 if emit_json(report, args.json) else 2


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


async def _flood(args: argparse.Namespace) -> dict[str, Any]:
    secret: bytes | None = None
    if args.secret_file is not None:
        with open(args.secret_file, "rb") as fh:
            secret = fh.read().strip()
        if not secret:
            raise SystemExit(f"error: {args.secret_file} is empty")
    server: RpcServer | None = None
    target = args.target
    limits = Limits()
    if target is None:  # a local server with the default limits, or a shorter idle timeout
        limits = Limits(idle_timeout=args.idle_timeout)
        server = RpcServer(limits=limits, secret=secret)
        await server.start("127.0.0.1", 0)
        target = ("127.0.0.1", server.port)
    try:
        report = await idle_flood(
            target[0],
            target[1],
            args.connections,
            source=args.source,
            probe_source=args.probe_source,
            secret=secret,
            wait_s=args.wait,
            limits=limits,
        )
        out: dict[str, Any] = {"bench": "rpc-flood", "target": f"{target[0]}:{target[1]}"}
        if server is not None:
            out["server"] = {
                "idle_timeout_s": limits.idle_timeout,
                "max_connections": limits.max_connections,
                "max_connections_per_source": limits.max_connections_per_source,
                "stats": dict(server.stats),
            }
        out.update(report.as_dict())
        return out
    finally:
        if server is not None:
            await server.close()


def _bench_flood(args: argparse.Namespace) -> int:
    import asyncio

    report = asyncio.run(_flood(args))
    emit_json(report)
    ok = report["probe_ok"] and report["still_open"] == 0
    return 0 if ok else 1


def register(groups: dict[str, Any]) -> None:
    p = groups["bench"].add_parser(
        "rpc",
        help="RPC round trip vs a raw msgpack echo (100 B, 64 KiB, 1 MiB), JSON",
        description=(
            "Sequential round trips to an echo server in a separate process over loopback TCP: "
            "the RPC layer against a raw msgpack echo with the same bytes on the wire, in "
            "alternating blocks. Prints JSON (median/p99 in microseconds, ratios, MB/s at 1 MiB)."
        ),
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also write the JSON report to PATH (without PATH: stdout only)",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=DEFAULT_SIZES,
        help="comma-separated payload sizes (default 100,64KiB,1MiB)",
    )
    p.add_argument("--n", type=_positive, default=2000, help="measured calls per path (<1 MiB)")
    p.add_argument("--n-large", type=_positive, default=500, help="measured calls at >=1 MiB")
    p.add_argument("--warmup", type=int, default=200, help="warm-up calls per path and size")
    p.add_argument("--block", type=_positive, default=50, help="calls per alternating block")
    p.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (both sides)"
    )
    p.add_argument(
        "--no-retain-heap",
        action="store_true",
        help="leave glibc's heap trimming on (see peer.rpc.tuning)",
    )
    p.add_argument("--profile", metavar="PATH", help="write a cProfile of the RPC client calls")
    p.add_argument(
        "--secret",
        action="store_true",
        help="authenticate the RPC connection with a fresh random key: every frame is tagged",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_bench_rpc)

    f = groups["bench"].add_parser(
        "rpc-flood",
        help="idle RPC connections from one address; is a client from another still served?",
        description=(
            "Opens CONNECTIONS connections from --source that each send one ping and then stay "
            "idle, connects from --probe-source and calls ping, then waits up to --wait seconds "
            "for the server to close the idle ones. Without --target it floods a local server "
            "with the default limits (idle timeout --idle-timeout). Prints JSON; exits 1 if the "
            "probe failed or connections were still open after --wait."
        ),
    )
    f.add_argument("--target", type=_address, help="HOST:PORT of a running peer's RPC port")
    f.add_argument("--connections", type=_positive, default=1000, help="default 1000")
    f.add_argument("--source", default="127.0.0.1", help="flood source address")
    f.add_argument("--probe-source", default="127.0.0.2", help="the probe's source address")
    f.add_argument("--secret-file", help="the cluster key file (for a peer that needs one)")
    f.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=2.0,
        help="idle timeout of the local server (seconds, default 2)",
    )
    f.add_argument(
        "--wait",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for idle connections to be closed (default 10)",
    )
    f.set_defaults(func=_bench_flood)
