"""``amcoedge bench rpc``: RPC round trip against a raw msgpack echo, printed as JSON."""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from peer.rpc.bench import DEFAULT_SIZES, BenchConfig, run_bench


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
    text = json.dumps(report, indent=2)
    print(text)
    if args.json not in (None, "-"):
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return 0


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
