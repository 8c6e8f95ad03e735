"""Export trained policies to single-file ONNX models.

A checkpoint is a dict saved with ``torch.save`` holding at least ``{"kind": <name>, ...}``.
``EXPORTERS`` maps each kind to a builder that turns the checkpoint into a torch module plus an
example input and axis names; adding a model kind is one entry there.

``adadqn``: the five per-BS AdaDQN evaluation networks of the paper's simulation. The exported
graph takes ``state`` (batch, 6) = [D, Q_1..Q_5] and returns ``q`` (batch, 5, 31): every BS
agent's Q-values over the 31 ES subsets (reference order, see policy.paper.subsets); BS b uses
row b and acts greedily on it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from policy.paper.runner import RunResult

__all__ = [
    "EXPORTERS",
    "ExportError",
    "Exportable",
    "StackedAgents",
    "export_checkpoint",
    "load_checkpoint",
    "save_adadqn_checkpoint",
]


class ExportError(RuntimeError):
    """A checkpoint cannot be read or exported."""


@dataclass(frozen=True)
class Exportable:
    module: nn.Module
    example: torch.Tensor
    input_name: str
    output_name: str


class StackedAgents(nn.Module):
    """Several same-shaped agents evaluated on one state batch: output (batch, agents, actions)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(state) for net in self.nets], dim=1)


def _adadqn(ck: dict[str, Any]) -> Exportable:
    from policy.paper.dqn import AgentConfig, build_mlp

    try:
        cfg = AgentConfig(**ck["config"])
        nets = []
        for sd in ck["agents"]:
            net = build_mlp(cfg)
            net.load_state_dict(sd)
            nets.append(net)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ExportError(f"malformed adadqn checkpoint: {exc}") from exc
    if not nets:
        raise ExportError("adadqn checkpoint holds no agents")
    module = StackedAgents(nets).eval()
    return Exportable(module, torch.zeros(4, cfg.n_features), "state", "q")


def _fleet_recruiter(ck: dict[str, Any]) -> Exportable:
    from policy.fleet.onnx_export import exportable

    return exportable(ck)


EXPORTERS: dict[str, Callable[[dict[str, Any]], Exportable]] = {
    "adadqn": _adadqn,
    "fleet-recruiter": _fleet_recruiter,
}


def save_adadqn_checkpoint(result: RunResult, path: Path) -> None:
    from policy.paper.learners import DQNMethod

    m = result.method_obj
    if not isinstance(m, DQNMethod) or m.name != "amcoedge":
        raise ExportError("only an amcoedge run can be saved as an adadqn checkpoint")
    ck = {
        "kind": "adadqn",
        "config": asdict(m.cfg),
        "agents": [a.eval_net.state_dict() for a in m.agents],
        "params": result.params.as_dict(),
        "episodes": result.episodes,
        "seed": result.seed,
        "avg_makespan": result.avg_makespan,
        "failure_rate": result.failure_rate,
        "epsilon": [a.epsilon for a in m.agents],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad files
        raise ExportError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ck, dict) or "kind" not in ck:
        raise ExportError(f"{path} is not a policy checkpoint (no 'kind' field)")
    return ck


def build_exportable(ck: dict[str, Any]) -> Exportable:
    kind = ck.get("kind")
    if kind not in EXPORTERS:
        raise ExportError(f"unknown checkpoint kind {kind!r}; known: {sorted(EXPORTERS)}")
    return EXPORTERS[str(kind)](ck)


def export_checkpoint(checkpoint: Path, out: Path, opset: int = 18) -> dict[str, Any]:
    """Export to one ONNX file; dynamo exporter first, the legacy one if dynamo fails."""
    if opset < 17:
        raise ExportError(f"opset must be >= 17, got {opset}")
    ck = load_checkpoint(checkpoint)
    ex = build_exportable(ck)
    out.parent.mkdir(parents=True, exist_ok=True)
    exporter = "dynamo"
    dynamo_error = None
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ex.module,
                (ex.example,),
                str(out),
                input_names=[ex.input_name],
                output_names=[ex.output_name],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    except Exception as exc:  # fall back to the TorchScript exporter
        dynamo_error = f"{type(exc).__name__}: {exc}"
        exporter = "legacy"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ex.module,
                (ex.example,),
                str(out),
                input_names=[ex.input_name],
                output_names=[ex.output_name],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={ex.input_name: {0: "batch"}, ex.output_name: {0: "batch"}},
            )
    data_file = Path(str(out) + ".data")
    if data_file.exists():
        raise ExportError(f"exporter wrote external data {data_file}; expected a single file")
    import onnx

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return {
        "kind": ck["kind"],
        "out": str(out),
        "exporter": exporter,
        "dynamo_error": dynamo_error,
        "opset": opsets.get("ai.onnx"),
        "bytes": out.stat().st_size,
    }
