"""Export trained policies to single-file ONNX models.

A checkpoint is a dict saved with ``torch.save`` holding at least ``{"kind": <name>, ...}``.
``EXPORTERS`` maps each kind to a builder that lives next to its model and turns the checkpoint
into an ``Exportable`` (``policy.exportable``, a leaf module that also holds the one
``torch.onnx.export`` call); adding a model kind is one entry there.

``adadqn``: the five per-BS AdaDQN evaluation networks of the paper's simulation. The exported
graph takes ``state`` (batch, 6) = [D, Q_1..Q_5] and returns ``q`` (batch, 5, 31): every BS
agent's Q-values over the 31 ES subsets (reference order, see policy.paper.subsets); BS b uses
row b and acts greedily on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from policy.exportable import Exportable, ExportError, write_onnx

if TYPE_CHECKING:
    from policy.paper.runner import RunResult

__all__ = [
    "EXPORTERS",
    "ExportError",
    "Exportable",
    "export_checkpoint",
    "load_checkpoint",
    "save_adadqn_checkpoint",
]


def _adadqn(ck: dict[str, Any]) -> Exportable:
    from policy.paper.onnx_export import exportable

    return exportable(ck)


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
    written = write_onnx(ex, out, opset=opset, axis="batch")
    return {
        "kind": ck["kind"],
        "out": str(out),
        "exporter": written.exporter,
        "dynamo_error": written.dynamo_error,
        "opset": written.opset,
        "bytes": out.stat().st_size,
    }
