"""What one share of a request cost on its holder, as the origin reports it per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PeerTiming:
    peer: str
    units: int
    queue_s: float = 0.0
    transfer_s: float = 0.0
    compute_s: float = 0.0
    start_s: float = 0.0  # relative to the job's start
    end_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
