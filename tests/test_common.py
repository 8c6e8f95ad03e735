"""The shared command-line helpers: one JSON writer, one percentile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amcoedge.output import emit_json
from amcoedge.stats import percentile


@settings(max_examples=200, deadline=None)
@given(
    xs=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
    q=st.floats(0, 100),
)
def test_percentile_matches_numpys_default(xs: list[float], q: float) -> None:
    got = percentile(xs, q)
    assert got == pytest.approx(float(np.percentile(xs, q)), rel=1e-9, abs=1e-6)


def test_percentile_of_nothing_and_bad_q() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order of the input does not matter
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_emit_json_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "r.json"
    assert emit_json({"a": 1}, out)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    assert json.loads(out.read_text()) == {"a": 1}


def test_emit_json_reports_an_unwritable_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not emit_json({"a": 1}, blocker / "r.json")
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"a": 1} and "cannot write" in captured.err
