"""The recruitment network: permutation-equivariant over a variable number of candidates.

A shared per-candidate encoder maps each row of :func:`~policy.fleet.features.build_features`
to an embedding; masked mean and max pooling give a context vector; a head maps the context to
one Q-value per action (:mod:`policy.fleet.actions`). The per-candidate score for each hedge is
the negated hedged solo finish in units of the request's scale, read straight off the features,
so the ranking the decoder uses is exact and the same in torch and ONNX. Q-values are costs
negated: higher is better.

One request in, one tensor out: ``policy`` of shape ``(N, A + H)``; every row carries the same
``A`` Q-values (the context is shared) followed by that candidate's ``H`` hedge scores, so the
peer axis is the only dynamic axis of the exported graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from policy.fleet.actions import HEDGES, N_ACTIONS
from policy.fleet.features import FEATURE_NAMES, N_FEATURES

_AGE = FEATURE_NAMES.index("view_age_over_t0")
_SOLO = FEATURE_NAMES.index("solo_finish_over_t0")


@dataclass(frozen=True, slots=True)
class NetConfig:
    hidden: int = 64
    head: int = 128


class RecruiterNet(nn.Module):
    """Input ``features`` of shape ``(N, F)`` (one request) or ``(B, N, F)`` with a mask."""

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NetConfig()
        h = self.cfg.hidden
        self.encoder = nn.Sequential(
            nn.Linear(N_FEATURES, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Linear(2 * h, self.cfg.head), nn.ReLU(), nn.Linear(self.cfg.head, N_ACTIONS)
        )
        self.register_buffer("hedges", torch.tensor(HEDGES, dtype=torch.float32))

    def config_dict(self) -> dict[str, int]:
        return asdict(self.cfg)

    def q_batch(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Q-values ``(B, A)`` for padded features ``(B, N, F)`` with ``mask`` ``(B, N)``."""
        emb = self.encoder(feats)
        m = mask.unsqueeze(-1).to(emb.dtype)
        mean = (emb * m).sum(1) / m.sum(1).clamp_min(1.0)
        mx = (emb * m - (1.0 - m) * 1e4).amax(1)
        return self.head(torch.cat([mean, mx], dim=-1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """One request: ``(N, A + H)`` = Q-values (repeated per row) then hedge scores."""
        emb = self.encoder(features)
        ctx = torch.cat([emb.mean(0), emb.amax(0)], dim=-1)
        q = self.head(ctx)
        hedges = self.get_buffer("hedges")
        score = -(features[:, _SOLO : _SOLO + 1] + features[:, _AGE : _AGE + 1] * hedges)
        return torch.cat([q.unsqueeze(0).expand(features.shape[0], -1), score], dim=1)
