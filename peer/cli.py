"""The `amcoedge` command line: one parser, each package registers its own subcommands.

Every handler is `handler(args: argparse.Namespace) -> int` and is attached with
`parser.set_defaults(func=handler)`. Packages expose `register(groups)` where `groups` maps a
group name (`sim`, `policy`, `bench`, `model`, `cluster`, `scenario`) to its subparsers action,
plus `top` for top-level commands (`peer`, `submit`, `demo`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

GROUPS = {
    "sim": "the paper's MEC simulation: run one method, reproduce the paper",
    "policy": "train, evaluate and export recruitment policies",
    "model": "the embedded diffusion model",
    "bench": "benchmarks that print JSON",
    "cluster": "local multi-peer clusters",
    "scenario": "scripted multi-peer scenarios: events, workload, policies compared",
    "secret": "cluster keys and API tokens",
}

# Modules that contribute subcommands; each defines register(groups).
COMMAND_MODULES = (
    "policy.paper.cli",
    "policy.fleet.cli",
    "gossip.cli",
    "peer.diffusion.cli",
    "peer.rpc.cli",
    "peer.commands",
    "peer.harness.fuzz_cli",
    "peer.harness.exposure",
    "peer.harness.rss",
    "peer.harness.bench_shares",
    "peer.harness.scenario_sim",
    "peer.harness.replays",
    "peer.diffusion.pipeline.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amcoedge",
        description="Peer-to-peer edge runtime for diffusion services (AMCoEdge).",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {"top": top}
    for name, help_text in GROUPS.items():
        group = top.add_parser(name, help=help_text, description=help_text)
        groups[name] = group.add_subparsers(
            dest=f"{name}_command", metavar="SUBCOMMAND", required=True
        )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
