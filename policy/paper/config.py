"""Frozen simulation parameters and the per-method environment rules (the reference quirks)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["DEFAULT", "DRL_RULES", "EnvRules", "SimError", "SimParams", "capacities_up_to"]

DRL_RULES = ("spec", "older-commit")


class SimError(ValueError):
    """Invalid simulation parameters or method name."""


def capacities_up_to(fmax: float, n: int = 5, fmin: float = 10.0) -> tuple[float, ...]:
    """Capacities evenly spaced from ``fmin`` to ``fmax`` GHz (the paper's capacity sweep)."""
    if n < 1 or not fmax >= fmin:
        raise SimError(f"need n >= 1 and fmax >= {fmin}, got n={n}, fmax={fmax}")
    if n == 1:
        return (float(fmax),)
    step = (fmax - fmin) / (n - 1)
    return tuple(float(fmin + i * step) for i in range(n))


@dataclass(frozen=True)
class SimParams:
    """The paper's scenario (defaults of paper-model.md §4.1)."""

    capacities: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0)  # GHz, one per ES
    rates: tuple[float, ...] = (400.0, 425.0, 450.0, 475.0, 500.0)  # Mbit/s to ES j
    slot: float = 1.0  # seconds
    slots: int = 61  # slots per episode; the last only supplies next states
    tasks: int = 50  # task positions per BS per slot
    arrival_prob: float = 0.3
    size_min: float = 2.0  # Mbit
    size_max: float = 5.0  # Mbit
    density_min: float = 100.0  # cycles/bit
    density_max: float = 300.0  # cycles/bit
    deadline: float = 1.0  # seconds
    clean: bool = False  # every method in the AMCoEdge environment, same failure penalty
    # DRLCoEdge's local share: "spec" pays D/r_b and waits for the link (reference commit
    # 194fa50, paper-model.md §3); "older-commit" pays neither (an older reference commit)
    drl_rule: str = "spec"

    def __post_init__(self) -> None:
        if len(self.capacities) != 5 or len(self.rates) != 5:
            raise SimError("the paper's action table is fixed to 5 edge servers")
        if min(self.capacities) <= 0 or min(self.rates) <= 0:
            raise SimError("capacities and rates must be positive")
        if self.slots < 2 or self.tasks < 1:
            raise SimError("need at least 2 slots and 1 task position")
        if not 0.0 <= self.arrival_prob <= 1.0:
            raise SimError(f"arrival probability must be in [0, 1], got {self.arrival_prob}")
        if not self.deadline > 0.0:
            raise SimError(f"deadline must be positive, got {self.deadline}")
        if not 0.0 < self.size_min <= self.size_max or not 0 < self.density_min <= self.density_max:
            raise SimError("size and density ranges must be positive and ordered")
        if self.drl_rule not in DRL_RULES:
            raise SimError(f"drl_rule must be one of {DRL_RULES}, got {self.drl_rule!r}")
        if not self.slot > 0:
            raise SimError("slot length must be positive")

    @property
    def n_es(self) -> int:
        return len(self.capacities)

    def with_(self, **changes: object) -> SimParams:
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return {
            "capacities": list(self.capacities),
            "rates": list(self.rates),
            "slot": self.slot,
            "slots": self.slots,
            "tasks": self.tasks,
            "arrival_prob": self.arrival_prob,
            "size_mbit": [self.size_min, self.size_max],
            "density_cycles_per_bit": [self.density_min, self.density_max],
            "deadline": self.deadline,
            "clean": self.clean,
            "drl_rule": self.drl_rule,
        }


DEFAULT = SimParams()


@dataclass(frozen=True)
class EnvRules:
    """How one method's reference environment differs (paper-model.md §3, §6 quirks 3-8).

    ``link_cap``: "multi" caps the BS's transmission backlog at one slot only after multi-ES
    actions (AMCoEdge), "none" never caps it (Optimal and the baselines).
    ``cap_wait``: each waiting time W_j is capped at the deadline (the baselines).
    ``link_charges_local``: the local share adds x_b*D/r_b to the BS's backlog (the baselines).
    ``local_pays_transfer``: the local piece also pays D/r_b and waits for the backlog (DRLCoEdge).
    ``allocation``: "clip" = the code's CWA (solve, clip negatives, renormalise; make-span over all
    selected ESs), "water" = exact water-filling (make-span over the ESs that get work).
    ``penalty``: failure reward is ``-penalty * deadline``.
    """

    link_cap: str = "multi"
    cap_wait: bool = False
    link_charges_local: bool = False
    local_pays_transfer: bool = False
    allocation: str = "clip"
    penalty: float = 10.0
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.link_cap not in ("multi", "none"):
            raise SimError(f"link_cap must be 'multi' or 'none', got {self.link_cap!r}")
        if self.allocation not in ("clip", "water"):
            raise SimError(f"allocation must be 'clip' or 'water', got {self.allocation!r}")


AMCOEDGE_RULES = EnvRules()
