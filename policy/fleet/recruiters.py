"""Recruiters behind one narrow interface: ``decide(request, candidates) -> Decision``.

``make_recruiter(name)`` builds any of :data:`RECRUITERS`. ``learned`` runs the shipped ONNX
network through :mod:`policy.ort`; if the model is missing or fails its load check, the
recruiter returned is greedy-aware water-filling and every decision says why
(``fallback``). A learned decision whose inference fails at run time falls back the same way
for that decision. Invalid candidates raise :class:`~policy.fleet.errors.PolicyError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policy.fleet import actions, heuristics
from policy.fleet.errors import ModelError, PolicyError
from policy.fleet.features import CandidateArrays, arrays_from_candidates, build_features
from policy.fleet.heuristics import Choice
from policy.fleet.schema import (
    Candidate,
    Decision,
    Request,
    validate_candidates,
    validate_decision,
    validate_request,
)
from policy.ort import OrtError, OrtModel

RECRUITERS: tuple[str, ...] = (
    "learned",
    "greedy",
    "greedy-aware",
    "random",
    "equal",
    "local",
    "all",
)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "recruiter.onnx"
FALLBACK = "greedy-aware"
# The learned recruiter decides only for requests shaped like those it was trained on: a
# request whose per-step fixed cost is under this share of its per-unit work is decided by
# greedy-aware water-filling instead (``fallback`` says so). Training drew the fixed cost at
# 0.2x the work or more (the synthetic fleet: 16 images at most) and 1 / (8 x 3) = 0.042x or
# more (``policy.fleet.randomise``: 8 images, c / a up to 3); a 64x64 repair (25 tiles, each
# run for 10 classes) is 0.005x, and there the model recruited three peers where the
# water-filling uses five (the prototype scenario: 21.9 s against greedy's 16.7 s per repair).
# Every candidate is compared, and one inside the range is enough: the runtime's calibrations
# are noisy (a peer's fitted fixed cost can come out near zero), and one such peer must not
# turn an ordinary batch away from the model.
MIN_FIXED_OVER_WORK = 0.02
OUT_OF_RANGE = (
    "request outside the model's training range "
    f"(fixed cost under {MIN_FIXED_OVER_WORK:g}x the work on every candidate)"
)


def out_of_range(arr: CandidateArrays, units: int) -> bool:
    """Whether a request is outside the learned recruiter's training range: no candidate's
    per-step fixed cost reaches ``MIN_FIXED_OVER_WORK`` of its work on the request."""
    work = units * np.maximum(arr.unit, 1e-12)
    return bool(np.max(arr.fixed / work) < MIN_FIXED_OVER_WORK)


class Recruiter:
    """Base: validation and the conversion from candidates to arrays and back."""

    name: str = ""
    provider: str | None = None

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def choose(self, arr: CandidateArrays, units: int, deadline_s: float) -> Choice:
        raise NotImplementedError

    def decide(self, req: Request, cands: Sequence[Candidate]) -> Decision:
        validate_request(req)
        validate_candidates(list(cands))
        arr = arrays_from_candidates(cands)
        pos, cnt, span = self.choose(arr, req.units, float(req.deadline_s))
        return self._decision(pos, cnt, span, req.units, len(cands))

    def _decision(
        self,
        pos: np.ndarray,
        cnt: np.ndarray,
        span: float,
        units: int,
        n: int,
        fallback: str | None = None,
        policy: str | None = None,
    ) -> Decision:
        shares = tuple(float(c) / units for c in cnt)
        d = Decision(
            selected=tuple(int(p) for p in pos),
            shares=shares,
            predicted_makespan_s=float(span),
            policy=policy or self.name,
            provider=self.provider if fallback is None else None,
            fallback=fallback,
        )
        validate_decision(d, n)
        return d


class HeuristicRecruiter(Recruiter):
    def __init__(self, name: str, seed: int = 0, fallback: str | None = None) -> None:
        if name not in heuristics.HEURISTICS:
            raise PolicyError(f"unknown heuristic {name!r}; known: {sorted(heuristics.HEURISTICS)}")
        super().__init__(seed)
        self.name = name
        self.fallback = fallback
        self._fn = heuristics.HEURISTICS[name]

    def choose(self, arr: CandidateArrays, units: int, deadline_s: float) -> Choice:
        return self._fn(arr, units, self.rng)

    def decide(self, req: Request, cands: Sequence[Candidate]) -> Decision:
        validate_request(req)
        validate_candidates(list(cands))
        arr = arrays_from_candidates(cands)
        pos, cnt, span = self.choose(arr, req.units, float(req.deadline_s))
        return self._decision(pos, cnt, span, req.units, len(cands), fallback=self.fallback)


class LearnedRecruiter(Recruiter):
    """The ONNX network: Q-values over (cap, hedge) actions, then exact water-filling."""

    name = "learned"

    def __init__(self, model: OrtModel, seed: int = 0) -> None:
        super().__init__(seed)
        if len(model.input_names) != 1 or len(model.output_names) != 1:
            raise ModelError(
                f"unexpected model signature: inputs {model.input_names}, outputs {model.output_names}"
            )
        self.model = model
        self.provider = model.provider
        self._greedy = heuristics.HEURISTICS[FALLBACK]

    def infer(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (out,) = self.model.run({self.model.input_names[0]: feats})
        width = actions.N_ACTIONS + actions.N_HEDGES
        if out.shape != (feats.shape[0], width):
            raise ModelError(f"unexpected output shape {out.shape}, expected (N, {width})")
        q, score = actions.split_output(out)
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(score))):
            raise ModelError("model produced non-finite output")
        return q, score

    def choose(self, arr: CandidateArrays, units: int, deadline_s: float) -> Choice:
        """The network's split; greedy-aware's for a request outside its training range."""
        if out_of_range(arr, units):
            return self._greedy(arr, units, self.rng)
        feats = build_features(arr, units, deadline_s)
        q, score = self.infer(feats)
        valid = actions.action_mask(len(arr))
        a = int(np.argmax(np.where(valid, q, -np.inf)))
        return actions.decode(arr, units, a, score)

    def decide(self, req: Request, cands: Sequence[Candidate]) -> Decision:
        validate_request(req)
        validate_candidates(list(cands))
        arr = arrays_from_candidates(cands)
        if out_of_range(arr, req.units):
            pos, cnt, span = self._greedy(arr, req.units, self.rng)
            return self._decision(pos, cnt, span, req.units, len(cands), OUT_OF_RANGE, FALLBACK)
        try:
            pos, cnt, span = self.choose(arr, req.units, float(req.deadline_s))
        except (OrtError, ModelError) as exc:
            pos, cnt, span = self._greedy(arr, req.units, self.rng)
            return self._decision(
                pos, cnt, span, req.units, len(cands), f"inference failed: {exc}", FALLBACK
            )
        return self._decision(pos, cnt, span, req.units, len(cands))


def _probe(rec: LearnedRecruiter) -> None:
    """Run the model on small inputs (1 and 3 candidates) so a broken file fails at load."""
    for n in (1, 3):
        arr = CandidateArrays(
            is_self=np.eye(1, n).ravel(),
            wait=np.linspace(0.0, 0.2, n),
            age=np.full(n, 0.5) * (1 - np.eye(1, n).ravel()),
            fixed=np.full(n, 0.05),
            unit=np.full(n, 0.02),
            xfer=np.full(n, 0.001),
            own=np.zeros(n),
        )
        rec.choose(arr, 4, 5.0)


def load_learned(model_path: str | Path | None = None, seed: int = 0) -> LearnedRecruiter:
    """The learned recruiter, or raise :class:`ModelError` / :class:`OrtError`."""
    model = OrtModel(model_path or DEFAULT_MODEL)
    rec = LearnedRecruiter(model, seed)
    _probe(rec)
    return rec


def make_recruiter(name: str, seed: int = 0, model_path: str | Path | None = None) -> Recruiter:
    """A recruiter by name (see :data:`RECRUITERS`); ``learned`` falls back to greedy-aware."""
    if name not in RECRUITERS:
        raise PolicyError(f"unknown recruiter {name!r}; known: {', '.join(RECRUITERS)}")
    if name != "learned":
        return HeuristicRecruiter(name, seed)
    try:
        return load_learned(model_path, seed)
    except (OrtError, ModelError, PolicyError) as exc:
        return HeuristicRecruiter(FALLBACK, seed, fallback=f"learned model unavailable: {exc}")
