"""The recruitment network: permutation-equivariant over a variable number of candidates.

A shared per-candidate encoder maps each row of :func:`~policy.fleet.features.build_features`
(clamped to +-50) to an embedding; masked mean and max pooling give a context vector. Two heads:

- the Q head maps the context to one Q-value per action (:mod:`policy.fleet.actions`);
  Q-values are negated costs in units of the request scale ``T0``: higher is better;
- the correction head maps each candidate's embedding plus the context to ``e_j >= 0``, the
  extra wait (over ``T0``) the view misses on that candidate: what other origins sent there.

Scores per candidate and hedge are the negated hedged solo finish over ``T0``: the age hedges
read straight off the features, the learned hedge adds ``e_j``. One request in, one tensor out:
``(N, A + H)``; every row carries the same ``A`` Q-values followed by that candidate's ``H``
scores, so the peer axis is the only dynamic axis of the exported graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from policy.fleet.actions import AGE_HEDGES, N_ACTIONS
from policy.fleet.features import FEATURE_NAMES, N_FEATURES

_AGE = FEATURE_NAMES.index("view_age_over_t0")
_SOLO = FEATURE_NAMES.index("solo_finish_over_t0")
CLAMP = 50.0


@dataclass(frozen=True, slots=True)
class NetConfig:
    hidden: int = 64
    head: int = 128


class RecruiterNet(nn.Module):
    """``forward(features (N, F)) -> (N, A + H)``; ``batch`` for padded training batches."""

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
        self.corr = nn.Sequential(nn.Linear(3 * h, h), nn.ReLU(), nn.Linear(h, 1))
        self.register_buffer("hedges", torch.tensor(AGE_HEDGES, dtype=torch.float32))

    def config_dict(self) -> dict[str, int]:
        return asdict(self.cfg)

    def batch(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``(B, N, F)`` with ``mask`` ``(B, N)``: Q ``(B, A)`` and corrections ``(B, N)``."""
        emb = self.encoder(feats.clamp(-CLAMP, CLAMP))
        m = mask.unsqueeze(-1).to(emb.dtype)
        mean = (emb * m).sum(1) / m.sum(1).clamp_min(1.0)
        mx = (emb * m - (1.0 - m) * 1e4).amax(1)
        ctx = torch.cat([mean, mx], dim=-1)
        q = self.head(ctx)
        both = torch.cat([emb, ctx.unsqueeze(1).expand(-1, emb.shape[1], -1)], dim=-1)
        corr = torch.relu(self.corr(both).squeeze(-1))
        return q, corr

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """One request: ``(N, A + H)`` = Q-values (repeated per row), then the hedge scores."""
        emb = self.encoder(features.clamp(-CLAMP, CLAMP))
        ctx = torch.cat([emb.mean(0), emb.amax(0)], dim=-1)
        q = self.head(ctx)
        n = features.shape[0]
        ctx_rows = ctx.unsqueeze(0).expand(n, -1)
        corr = torch.relu(self.corr(torch.cat([emb, ctx_rows], dim=-1)))
        hedges = self.get_buffer("hedges")
        solo = features[:, _SOLO : _SOLO + 1]
        age_scores = -(solo + features[:, _AGE : _AGE + 1] * hedges)
        learned = -(solo + corr)
        return torch.cat([q.unsqueeze(0).expand(n, -1), age_scores, learned], dim=1)
