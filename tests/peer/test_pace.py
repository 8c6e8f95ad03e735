"""A request's pace scales its shares' overrun deadlines (``peer.core.pace``)."""

from __future__ import annotations

import pytest

from peer.core.pace import JobPace
from peer.runtime.node import overrun_deadline_s


def test_on_time_requests_keep_the_plain_deadline() -> None:
    pace = JobPace()
    assert pace.factor(0.0) == 1.0
    key = pace.start_own(0.0, 2.0)
    assert pace.factor(1.0) == 1.0  # the own share is still within its prediction
    pace.finish_own(key, 1.5)
    pace.finished_share(0.5, 1.0)
    assert pace.factor(10.0) == 1.0


def test_a_late_own_share_stretches_the_remote_deadlines_while_it_runs() -> None:
    # the bench's tile repair: every share ran ~4x its prediction; the origin's own share shows
    # it while running, so a remote share predicted at 6.2 s is not cut off at 18.7 s
    pace = JobPace()
    pace.start_own(0.0, 5.0)
    assert pace.factor(20.0) == pytest.approx(4.0)
    assert overrun_deadline_s(6.2 * pace.factor(20.0)) > 20.0
    assert overrun_deadline_s(6.2) < 20.0  # what cut it off before


def test_finished_shares_set_the_pace_for_the_rest() -> None:
    pace = JobPace()
    pace.finished_share(9.0, 3.0)
    pace.finished_share(1.0, 2.0)  # an early one does not lower it
    assert pace.factor(0.0) == pytest.approx(3.0)
    key = pace.start_own(0.0, 1.0)
    pace.finish_own(key, 5.0)
    assert pace.factor(100.0) == pytest.approx(5.0)  # finished: no longer growing
    pace.finished_share(-1.0, 1.0)
    pace.finished_share(1.0, 0.0)
    assert pace.factor(100.0) == pytest.approx(5.0)
