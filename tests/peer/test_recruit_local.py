"""A peer whose default policy is `local` starts: it has no recruiter, and says so."""

from __future__ import annotations

from peer.core.recruit import Recruiters


def test_local_policy_has_no_recruiter_and_does_not_raise() -> None:
    rec = Recruiters(seed=0)
    assert rec.provider("local") == "none"
    assert rec.provider("greedy") == "heuristic"
