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


def test_a_share_predicted_to_run_long_gets_a_longer_rpc_bound() -> None:
    from peer.core.config import ephemeral_config
    from peer.core.planner import Share
    from peer.runtime.node import Node

    node = Node(ephemeral_config("a", (), share_timeout_s=60.0))

    def share(predicted: float) -> Share:
        return Share("b", ("127.0.0.1", 1), False, (0,), None, predicted)

    assert node._share_timeout(share(0.5)) == 60.0  # the configured bound
    assert node._share_timeout(share(30.0)) == pytest.approx(4 * overrun_deadline_s(30.0))


def test_waited_counts_from_the_first_share_sent() -> None:
    pace = JobPace()
    assert pace.waited(50.0) == 0.0  # the first share: sent at planning
    assert pace.waited(52.5) == pytest.approx(2.5)  # the chain's next hop
    assert pace.waited(49.0) == 0.0  # never negative
