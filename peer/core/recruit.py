"""The recruiters behind the planner's ``Recruiter`` seam to the recruitment policies in ``policy.fleet``.

Policy names on the HTTP surface map to recruiters: ``onnx`` -> ``learned`` (onnxruntime),
``greedy``, ``random``, ``equal``; ``local`` never reaches a recruiter. When the learned
recruiter cannot be built (model missing, onnxruntime absent) or fails on a decision, the
greedy recruiter decides instead and the result says why (``fallback``). When ``policy.fleet``
itself is unavailable, a built-in greedy (every peer a candidate; water-filling drops the ones
that do not help) keeps the peer serving, and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from peer.core.planner import Cand, RecruitResult
from policy.fleet.errors import ModelError, PolicyError
from policy.ort import OrtError

# What a policy may raise on a decision: faults of the policy, reported as a fallback. Anything
# else (a bug in our own candidate building) propagates.
POLICY_FAULTS = (PolicyError, ModelError, OrtError)


class PolicyUnavailable(RuntimeError):
    """The recruiter for a policy could not be built (the reason is kept and reported)."""


log = logging.getLogger("amcoedge.recruit")

POLICY_TO_RECRUITER = {
    "onnx": "learned",
    "onnx-nolinks": "learned",  # the planner hands it default links (an ablation)
    "greedy": "greedy",
    "random": "random",
    "equal": "equal",
}
KEEP_SHARES = frozenset({"equal"})  # a baseline that defines its own split


class Recruiters:
    """Lazily built recruiters, one per policy name; decisions with fallback to greedy."""

    def __init__(self, *, seed: int = 0, model_path: str | None = None) -> None:
        self.seed = seed
        self.model_path = model_path
        self._built: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self.fallbacks = 0
        self._logged: set[str] = set()

    def _get(self, policy: str) -> Any:
        if policy in self._built:
            return self._built[policy]
        if policy in self._errors:
            raise PolicyUnavailable(self._errors[policy])
        try:
            from policy.fleet import make_recruiter

            kwargs: dict[str, Any] = {"seed": self.seed}
            if policy == "onnx" and self.model_path is not None:
                kwargs["model_path"] = self.model_path
            rec = make_recruiter(POLICY_TO_RECRUITER[policy], **kwargs)
        except (*POLICY_FAULTS, ImportError) as exc:  # a missing model or runtime: fall back
            self._errors[policy] = f"{type(exc).__name__}: {exc}"
            raise PolicyUnavailable(self._errors[policy]) from exc
        self._built[policy] = rec
        return rec

    def provider(self, policy: str) -> str:
        if policy not in POLICY_TO_RECRUITER:  # `local`: nobody is recruited
            return "none"
        try:
            rec = self._get(policy)
        except PolicyUnavailable:
            return "unavailable"
        return str(getattr(rec, "provider", None) or "heuristic")

    def decide(self, policy: str, units: int, cands: Sequence[Cand]) -> RecruitResult:
        if policy not in POLICY_TO_RECRUITER:
            raise ValueError(f"unknown policy {policy!r}")
        try:
            return self._decide(policy, units, cands, None)
        except (*POLICY_FAULTS, PolicyUnavailable) as exc:
            if policy == "greedy":
                return _builtin_greedy(cands, f"greedy recruiter failed ({exc}); built-in greedy")
            reason = f"{policy} policy failed ({exc}); fell back to greedy"
            self.fallbacks += 1
            log.warning("%s", reason)
            try:
                return self._decide("greedy", units, cands, reason)
            except (*POLICY_FAULTS, PolicyUnavailable) as exc2:
                return _builtin_greedy(cands, f"{reason}; greedy failed too ({exc2})")

    def _decide(
        self, policy: str, units: int, cands: Sequence[Cand], fallback: str | None
    ) -> RecruitResult:
        from policy.fleet import Candidate, Request

        rec = self._get(policy)
        fleet = [
            Candidate(
                name=c.peer.name,
                is_self=c.peer.is_self,
                wait_s=max(c.peer.wait_s, 0.0),
                view_age_s=c.peer.view_age_s,
                fixed_s=c.fixed_s,
                unit_s=c.unit_s,
                xfer_s_per_unit=c.xfer_s_per_unit,
                own_pending_s=c.peer.own_pending_s,
            )
            for c in cands
        ]
        d = rec.decide(Request(units=units, deadline_s=float("inf")), fleet)
        names = {c.peer.name: i for i, c in enumerate(cands)}
        try:
            selected = [names[s] if isinstance(s, str) else int(s) for s in d.selected]
        except KeyError as exc:
            raise PolicyError(f"the policy selected an unknown peer {exc}") from None
        if not selected:
            raise PolicyError("the policy selected no peer")
        shares = [float(x) for x in d.shares] if d.shares is not None else None
        if shares is not None and len(shares) == len(cands) and len(selected) != len(cands):
            shares = [shares[i] for i in selected]
        why = fallback
        if getattr(d, "fallback", None):
            why = f"{why}; {d.fallback}" if why else str(d.fallback)
            self.fallbacks += 1
            if str(d.fallback) not in self._logged:  # once per distinct reason
                self._logged.add(str(d.fallback))
                log.warning("%s policy fell back to %s: %s", policy, d.policy, d.fallback)
        return RecruitResult(
            selected=selected,
            shares=shares,
            keep_shares=policy in KEEP_SHARES,
            policy=str(getattr(d, "policy", policy)) if fallback is None else "greedy",
            provider=str(getattr(d, "provider", None) or "heuristic"),
            fallback=why,
        )


def _builtin_greedy(cands: Sequence[Cand], reason: str) -> RecruitResult:
    log.warning("%s", reason)
    return RecruitResult(
        selected=list(range(len(cands))),
        shares=None,
        keep_shares=False,
        policy="greedy",
        provider="heuristic",
        fallback=reason,
    )
