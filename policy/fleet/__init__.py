"""The generalised recruitment policy: any number of peers, stale views, learned and heuristic.

The runtime calls :func:`make_recruiter` and ``decide(Request, [Candidate, ...])``; the
simulator (:mod:`policy.fleet.sim`) trains and evaluates the same policies on seeded traces.
"""

from policy.fleet.errors import ModelError, PolicyError
from policy.fleet.features import CandidateArrays, arrays_from_candidates, build_features
from policy.fleet.recruiters import RECRUITERS, Recruiter, make_recruiter
from policy.fleet.schema import Candidate, Decision, DispatchLedger, Request

__all__ = [
    "RECRUITERS",
    "Candidate",
    "CandidateArrays",
    "Decision",
    "DispatchLedger",
    "ModelError",
    "PolicyError",
    "Recruiter",
    "Request",
    "arrays_from_candidates",
    "build_features",
    "make_recruiter",
]
