"""``amcoedge bench fuzz``: fuzz running peers' HTTP, RPC and gossip surfaces (see
``peer.harness.fuzz``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from amcoedge.output import emit_json
from peer.harness.cluster import ClusterError, ClusterSpec, LocalCluster, http_json
from peer.harness.fuzz import SURFACES, FuzzError, Target, require_loopback, run_fuzz


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def target_from_url(url: str, log: str | None = None) -> Target:
    """A running peer from its HTTP URL; its RPC/gossip address comes from ``/v1/cluster``."""
    parts = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
    if not parts.hostname or not parts.port:
        raise FuzzError(f"--target needs http://HOST:PORT, got {url!r}")
    require_loopback(parts.hostname)
    try:
        status, body = http_json(f"http://{parts.hostname}:{parts.port}/v1/cluster", timeout=5.0)
    except OSError as exc:
        raise FuzzError(f"{url}: {exc}") from None
    me = [p for p in (body or {}).get("peers", []) if p.get("self")] if status == 200 else []
    if not me:
        raise FuzzError(f"{url} does not list itself in /v1/cluster ({status})")
    rpc = me[0]["addresses"]["rpc"]
    return Target(
        name=str(me[0]["name"]),
        http=(parts.hostname, parts.port),
        rpc=(parts.hostname, int(rpc[1])),
        log_path=Path(log) if log else None,
    )


def _run(args: argparse.Namespace) -> int:
    surfaces = SURFACES if args.surface == "all" else (args.surface,)
    kw: dict[str, Any] = dict(
        cases=args.cases,
        surfaces=surfaces,
        seed=args.seed,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )
    try:
        if args.target:
            logs = list(args.log or [])
            targets = [
                target_from_url(u, logs[i] if i < len(logs) else None)
                for i, u in enumerate(args.target)
            ]
            report = asyncio.run(run_fuzz(targets, **kw))
        else:
            report = _with_cluster(args, kw)
    except (FuzzError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = emit_json(report, args.json)
    return 0 if report["clean"] and ok else 1


def _with_cluster(args: argparse.Namespace, kw: dict[str, Any]) -> dict[str, Any]:
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="amcoedge-fuzz-"))
    spec = ClusterSpec(peers=args.peers, policy="greedy")
    with LocalCluster(spec, log_dir) as cluster:
        cluster.wait_ready(timeout=300)  # a loaded machine can take minutes to start peers
        targets = [
            Target(
                name=p.name,
                http=p.http,
                rpc=p.listen,
                log_path=p.log_path,
                alive=lambda p=p: p.proc.poll() is None,  # type: ignore[misc]
            )
            for p in cluster.procs
        ]
        report = asyncio.run(run_fuzz(targets, **kw))
        report["logs"] = str(log_dir)
        return report


def register(groups: dict[str, Any]) -> None:
    p = groups["bench"].add_parser(
        "fuzz",
        help="fuzz peers' HTTP, RPC and gossip surfaces; report crashes, 5xx, tracebacks (JSON)",
        description=(
            "Starts --peers local peers on loopback (or fuzzes running ones given by --target) "
            "and sends at least --cases random, hostile and mutated inputs per surface: HTTP "
            "requests, msgpack-RPC frames over TCP, gossip datagrams over UDP. Reports per "
            "surface the answers, 5xx (RPC: 'internal' errors), peers that exited, new "
            "tracebacks in their logs, and whether each still answers /healthz and a real "
            "generate request. Exits 0 when all is clean, 1 on any finding, 2 on bad usage."
        ),
    )
    p.add_argument("--cases", type=_positive, default=1000, help="cases per surface")
    p.add_argument("--surface", choices=(*SURFACES, "all"), default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target",
        action="append",
        metavar="URL",
        help="a running loopback peer's HTTP URL (repeatable); default: start local peers",
    )
    p.add_argument(
        "--log", action="append", metavar="PATH", help="the log of each --target, in order"
    )
    p.add_argument("--peers", type=_positive, default=2, help="local peers to start (default 2)")
    p.add_argument("--log-dir", help="where the local peers log (default: a temporary folder)")
    p.add_argument("--concurrency", type=_positive, default=16, help="connections at once")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for one answer (default 30)"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also write the JSON report to PATH (without PATH: stdout only)",
    )
    p.set_defaults(func=_run)
