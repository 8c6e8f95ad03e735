"""Real peer processes on loopback UDP/TCP: join, dissemination and a SIGKILLed peer.

Real processes, so a stated budget instead of the ``slow`` marker: about 10 s alone on the
2-core CI machine, stopped at 120 s."""

from __future__ import annotations

import pytest

from gossip.realbench import run_real_bench

pytestmark = pytest.mark.timeout(120)


async def test_four_processes_detect_sigkill():
    result = await run_real_bench(4, preset="local", meta_changes=2, crashes=1, steady_s=1.0)
    assert result["join_convergence_s"] is not None
    assert result["dissemination_s"]["missed"] == 0
    crash = result["crash"]
    assert crash["missed"] == 0 and len(crash["all_dead_s"]) == 1
    # local preset: 0.2 s probes; generous bound for a busy machine
    assert crash["all_dead_s"][0] < 10.0
    assert result["false_positives_total"] == 0
    assert result["steady"]["bytes_per_peer_per_s"] > 0
    # an origin about to plan refreshed its candidates' load: what it then holds is fresh
    refreshed = result["steady"]["refreshed_load_age_s"]
    assert result["steady"]["planner_load_age_s"]["readings"] >= refreshed["readings"] > 0
    assert refreshed["p50"] < 1.0
