"""ONNX builder for ``adadqn`` checkpoints (the paper's per-BS AdaDQN evaluation networks).

The exported graph takes ``state`` (batch, 6) = [D, Q_1..Q_5] and returns ``q`` (batch, 5, 31):
every BS agent's Q-values over the 31 ES subsets (reference order, see ``policy.paper.subsets``);
BS b uses row b and acts greedily on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from policy.exportable import Exportable, ExportError
from policy.paper.dqn import AgentConfig, build_mlp


class StackedAgents(nn.Module):
    """Several same-shaped agents evaluated on one state batch: output (batch, agents, actions)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(state) for net in self.nets], dim=1)


def exportable(ck: dict[str, Any]) -> Exportable:
    """The ``policy.export.EXPORTERS`` builder for ``adadqn`` checkpoints."""
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
