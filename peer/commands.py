"""CLI: ``amcoedge peer``, ``submit``, ``demo``, ``cluster up`` and ``bench policy``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from amcoedge.output import emit_json
from peer.core.config import (
    ENGINES,
    GOSSIP_PRESETS,
    MODES,
    POLICIES,
    load_peer_config,
    read_toml,
)
from peer.core.errors import ConfigError, PeerError


def register(groups: dict[str, Any]) -> None:
    top = groups["top"]
    p = top.add_parser("peer", help="run one peer (gossip + RPC + executor + HTTP API)")
    p.add_argument("--config", help="TOML file with the peer's settings (flags override it)")
    p.add_argument("--name", help="this peer's unique name")
    p.add_argument("--listen", help="HOST:PORT for gossip (UDP) and RPC (TCP)")
    p.add_argument("--http", help="HOST:PORT for the HTTP API")
    p.add_argument(
        "--join", action="append", default=[], help="HOST:PORT of a peer to join (repeatable)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="torch device for the model")
    p.add_argument("--model", help="local diffusers model dir (default: the shipped digits model)")
    p.add_argument("--policy", choices=POLICIES, help="default recruitment policy")
    p.add_argument(
        "--secret-file", help="the cluster key (`amcoedge secret new`); needed off loopback"
    )
    p.add_argument(
        "--api-token-file",
        help="bearer token for the HTTP API (`amcoedge secret new`); needed off loopback",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow non-loopback addresses without a key or token (trusted networks only)",
    )
    p.add_argument(
        "--advertise", help="HOST[:PORT] other peers dial (default: the --listen address)"
    )
    p.add_argument("--tls-cert-file", help="RPC over TLS: this peer's certificate (PEM)")
    p.add_argument("--tls-key-file", help="RPC over TLS: its private key (PEM)")
    p.add_argument("--tls-ca-file", help="RPC over TLS: the CA that signed the peers' certificates")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="denoiser engine: onnx (default), torch, or auto (the faster at start)",
    )
    p.add_argument("--threads", type=int, help="torch threads of the executor (default 1)")
    p.add_argument(
        "--cpu-cores",
        type=float,
        help="CPU cores this peer may use, for its costs (default: its cgroup's quota, read at "
        "start; give it where that is not visible, e.g. under `ip netns exec`)",
    )
    p.add_argument(
        "--memory-budget-mib",
        type=int,
        help="RSS the peer keeps requests under; larger ones are refused before work starts "
        "(default: 1024 or the loaded model + 512, whichever is larger; 0 = no check)",
    )
    p.add_argument("--gossip", choices=GOSSIP_PRESETS, help="gossip timer preset (default lan)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.set_defaults(func=cmd_peer)

    s = top.add_parser("submit", help="send a request to a peer's HTTP API")
    s.add_argument(
        "--peer",
        action="append",
        default=[],
        help="HOST:PORT of a peer's HTTP API (repeatable: the others are tried in turn when the "
        "first dies; default 127.0.0.1:8001, with the rest of its cluster as fallbacks)",
    )
    s.add_argument("--api-token-file", help="the peers' API token, if they need one")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--label", type=int, default=None, help="digit 0-9 (default: random labels)")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--mode", choices=MODES, default="auto")
    s.add_argument("--policy", choices=POLICIES, default=None)
    s.add_argument("--scheduler", default="ddim")
    s.add_argument("--repair", metavar="IMAGE_PNG", help="repair this image (needs --mask)")
    s.add_argument("--mask", metavar="MASK_PNG", help="white = regenerate")
    s.add_argument("--out", help="directory to write the PNGs to")
    s.add_argument("--json", help="write the full response JSON here ('-' = stdout)")
    s.add_argument("--timeout", type=float, default=120.0)
    s.set_defaults(func=cmd_submit)

    d = top.add_parser("demo", help="4-peer local cluster, every policy and mode, table + chart")
    d.add_argument("--out", default="demo-out", help="output directory (default ./demo-out)")
    d.add_argument("--peers", type=int, default=4)
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--rounds", type=int, default=1, help="passes over the peers per policy")
    d.add_argument("--no-quotas", action="store_true", help="do not use cgroup CPU quotas")
    d.add_argument("--json", help="write the results JSON here")
    d.add_argument("--model", help="local diffusers model dir for every peer (default: shipped)")
    d.add_argument("--engine", choices=ENGINES, default="onnx", help="every peer's denoiser engine")
    d.set_defaults(func=cmd_demo)

    c = groups["cluster"].add_parser("up", help="start N local peers; Ctrl-C stops them all")
    c.add_argument("--peers", type=int, default=3)
    c.add_argument(
        "--base-port", type=int, default=7001, help="gossip/RPC port of peer 0 (0 = free)"
    )
    c.add_argument("--base-http", type=int, default=8001, help="HTTP port of peer 0 (0 = free)")
    c.add_argument("--quotas", help="CPU cores per peer, comma-separated, e.g. 1,0.5,0.25 (root)")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--policy", choices=POLICIES, default="onnx")
    c.add_argument("--logs", help="directory for the peers' logs (default: a new temp dir)")
    c.add_argument("--json", help="write the peers' addresses here once the cluster is up")
    c.add_argument("--model", help="local diffusers model dir for every peer (default: shipped)")
    c.set_defaults(func=cmd_cluster_up)

    sc = groups["scenario"].add_parser(
        "run", help="run a scenario file: real peers, timed events, every policy; JSON report"
    )
    sc.add_argument("file", help="scenario TOML (see examples/scenarios/)")
    sc.add_argument("--out", default="scenario-out", help="output directory (scenario-out)")
    sc.add_argument("--json", help="write the results JSON here as well")
    sc.add_argument("--policies", help="comma-separated policies, overriding the file's list")
    sc.add_argument(
        "--rounds",
        type=_rounds,
        default=1,
        help="run every policy N times, order rotated each round; pooled figures and paired "
        "ratios of the first policy over the others (1)",
    )
    sc.add_argument("--check", action="store_true", help="only check the file and print the plan")
    sc.set_defaults(func=cmd_scenario_run)

    k = groups["secret"].add_parser(
        "new", help="write a new random cluster key or API token to FILE (mode 0600)"
    )
    k.add_argument("file", help="where to write it")
    k.add_argument("--force", action="store_true", help="overwrite an existing file")
    k.set_defaults(func=cmd_secret_new)

    b = groups["bench"].add_parser("policy", help="policy (ONNX) and planner decision latency")
    b.add_argument("--json", help="write the JSON here as well as printing it")
    b.add_argument("--iters", type=int, default=2000)
    b.add_argument("--peers", default="4,16,32,64", help="peer counts for the planner latency")
    b.set_defaults(func=cmd_bench_policy)


def cmd_peer(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        file_values = read_toml(args.config) if args.config else {}
        cfg = load_peer_config(
            file_values,
            {
                "name": args.name,
                "listen": args.listen,
                "http": args.http,
                "join": list(args.join) or None,
                "device": args.device,
                "model": args.model,
                "policy": args.policy,
                "secret_file": args.secret_file,
                "api_token_file": args.api_token_file,
                "insecure": args.insecure,
                "advertise": args.advertise,
                "tls_cert_file": args.tls_cert_file,
                "tls_key_file": args.tls_key_file,
                "tls_ca_file": args.tls_ca_file,
                "engine": args.engine,
                "threads": args.threads,
                "cpu_cores": args.cpu_cores,
                "memory_budget_mib": args.memory_budget_mib,
                "gossip": args.gossip,
            },
        )
    except ConfigError as exc:
        print(f"amcoedge peer: bad configuration: {exc}", file=sys.stderr)
        return 2
    return run_peer(cfg)


def run_peer(cfg: Any) -> int:
    import asyncio

    from peer.runtime.node import Node

    async def main() -> int:
        node = Node(cfg)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await node.start()
        except ConfigError as exc:
            print(f"amcoedge peer: bad configuration: {exc}", file=sys.stderr)
            await node.stop()
            return 2
        except (PeerError, OSError) as exc:
            print(f"amcoedge peer: cannot start: {exc}", file=sys.stderr)
            await node.stop()
            return 1
        print(
            f"peer {cfg.name} ready: rpc/gossip {cfg.listen[0]}:{node.rpc_port} "
            f"http http://{cfg.http[0]}:{node.http_port}",
            flush=True,
        )
        await stop.wait()
        await node.stop()
        print(f"peer {cfg.name} stopped", flush=True)
        return 0

    from peer.rpc.tuning import retain_heap

    retain_heap()  # MiB-sized RPC frames without page-fault churn (see peer/rpc/tuning.py)
    raise_fd_limit()  # caps, not the OS default of 1,024 files, bound the connections held
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return int(uvloop.run(main()))


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one (the peer's own caps bound its use)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def cmd_secret_new(args: argparse.Namespace) -> int:
    """32 random bytes, hex: a cluster key (``--secret-file``) or an API token."""
    import os
    import secrets

    path = Path(args.file)
    if path.exists() and not args.force:
        print(f"amcoedge secret new: {path} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        os.chmod(path, 0o600)
    except OSError as exc:
        print(f"amcoedge secret new: cannot write {path}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote a new key to {path} (mode 0600); copy it to every peer of the cluster")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from peer.harness.client import Client, ClientError, decode_images

    peers = [f"http://{p}" for p in (args.peer or ["127.0.0.1:8001"])]
    token = None
    if args.api_token_file:
        try:
            token = Path(args.api_token_file).read_text().strip()
        except OSError as exc:
            print(f"cannot read {args.api_token_file}: {exc}", file=sys.stderr)
            return 2
    client = Client(
        peers[0],
        timeout=args.timeout,
        token=token,
        fallbacks=tuple(peers[1:]),
        discover=len(peers) == 1,
    )
    try:
        if args.repair:
            if not args.mask:
                print("--repair needs --mask", file=sys.stderr)
                return 2
            image, mask = _read_png(args.repair), _read_png(args.mask)
            body: dict[str, Any] = {"steps": args.steps, "seed": args.seed, "mode": args.mode}
            if args.mode not in ("auto", "tile", "local", "fused"):
                print("repair modes: auto, tile, local, fused", file=sys.stderr)
                return 2
            if args.policy:
                body["policy"] = args.policy
            res, wall = client.repair(image, mask, **body)
        else:
            body = {
                "count": args.count,
                "label": args.label,
                "steps": args.steps,
                "seed": args.seed,
                "mode": args.mode,
                "scheduler": args.scheduler,
            }
            if args.policy:
                body["policy"] = args.policy
            res, wall = client.generate(**body)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach {args.peer}: {exc}", file=sys.stderr)
        return 1
    result = res.get("result", {})
    if args.out:
        from PIL import Image

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(decode_images(result)):
            Image.fromarray(img, mode="L").save(out / f"{res['id']}-{i:03d}.png")
    if args.json:
        text = json.dumps(res, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
    plan, timing = result.get("plan", {}), result.get("timing", {})
    print(
        f"job {res['id']} {res['state']}: {len(result.get('images', []))} image(s), "
        f"mode {plan.get('mode')}, policy {plan.get('policy')} ({plan.get('provider')}), "
        f"peers {plan.get('peers')}, make-span {timing.get('makespan_s')} s, "
        f"round trip {wall:.3f} s",
        file=sys.stderr,
    )
    return 0


def _rounds(text: str) -> int:
    from peer.harness.rounds import MAX_ROUNDS

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= v <= MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_ROUNDS}, got {v}")
    return v


def _read_png(path: str) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def cmd_cluster_up(args: argparse.Namespace) -> int:
    from peer.harness.cluster import ClusterSpec, LocalCluster, stop_on_signals

    try:
        q = tuple(float(x) for x in args.quotas.split(",")) if args.quotas else None
    except ValueError:
        print(f"--quotas must be numbers separated by commas, got {args.quotas!r}", file=sys.stderr)
        return 2
    if not 1 <= args.peers <= 64:
        print("--peers must be in 1..64", file=sys.stderr)
        return 2
    spec = ClusterSpec(
        peers=args.peers,
        base_port=args.base_port,
        base_http=args.base_http,
        quotas=q,
        threads=args.threads,
        policy=args.policy,
        extra_args=("--model", args.model) if args.model else (),
    )
    import tempfile

    args.logs = args.logs or tempfile.mkdtemp(prefix="amcoedge-cluster-")
    cluster = LocalCluster(spec, Path(args.logs))
    with stop_on_signals():
        return _cluster_up(cluster, args)


def _cluster_up(cluster: Any, args: argparse.Namespace) -> int:
    from peer.harness.cluster import ClusterError

    try:
        cluster.start()
        print(
            f"starting {args.peers} peers ({cluster.quota_note}); logs in {args.logs}/", flush=True
        )
        cluster.wait_ready()
        rows = [
            {"name": p.name, "rpc": f"{p.listen[0]}:{p.listen[1]}", "http": p.url, "quota": p.quota}
            for p in cluster.procs
        ]
        for r in rows:
            print(f"  {r['name']}: rpc {r['rpc']}  http {r['http']}  quota {r['quota']}")
        if args.json:
            Path(args.json).write_text(
                json.dumps({"peers": rows, "quotas": cluster.quota_note}, indent=2)
            )
        print("cluster up; Ctrl-C stops every peer", flush=True)
        while all(p.proc.poll() is None for p in cluster.procs):
            time.sleep(0.5)
        dead = [p.name for p in cluster.procs if p.proc.poll() is not None]
        print(f"peer(s) exited: {dead}; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping all peers", flush=True)
        return 0
    except ClusterError as exc:
        print(f"cluster failed: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()


def cmd_bench_policy(args: argparse.Namespace) -> int:
    from peer.harness.bench import planner_latency

    out: dict[str, Any] = {}
    try:
        from policy.fleet.bench import onnx_latency

        out["onnx"] = onnx_latency()
    except Exception as exc:
        out["onnx"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        sizes = [int(x) for x in args.peers.split(",")]
    except ValueError:
        print("--peers must be integers separated by commas", file=sys.stderr)
        return 2
    out["planner"] = planner_latency(sizes, iters=args.iters)
    return 0 if emit_json(out, args.json) else 2


def cmd_demo(args: argparse.Namespace) -> int:
    from peer.harness.cluster import stop_on_signals
    from peer.harness.demo import run_demo

    with stop_on_signals():
        return run_demo(
            out=Path(args.out),
            peers=args.peers,
            steps=args.steps,
            rounds=args.rounds,
            use_quotas=not args.no_quotas,
            json_path=args.json,
            model=args.model,
            engine=args.engine,
        )


def cmd_scenario_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from peer.harness.cluster import stop_on_signals
    from peer.harness.scenario import ScenarioError, check_policies, load_scenario, schedule

    try:
        sc = load_scenario(args.file)
        if args.policies:
            names = [p.strip() for p in args.policies.split(",") if p.strip()]
            sc = replace(sc, policies=check_policies(names))
    except ScenarioError as exc:
        print(f"amcoedge scenario: {exc}", file=sys.stderr)
        return 2
    plan = schedule(sc)
    if args.check:
        print(
            json.dumps(
                {
                    "scenario": sc.name,
                    "peers": sc.peers,
                    "policies": list(sc.policies),
                    "requests": len(plan),
                    "events": [e.describe() for e in sc.events],
                },
                indent=2,
            )
        )
        return 0
    from peer.harness.scenario_run import print_table, run_scenario

    with stop_on_signals():
        res = run_scenario(sc, Path(args.out), rounds=args.rounds)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"scenario: report.md, makespan.png and results.json in {args.out}/")
    failed = [n for n, r in res["policies"].items() if "error" in r]
    return 1 if failed else 0
