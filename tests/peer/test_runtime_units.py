"""Pure runtime parts: config parsing, request validation, job state machine, cost tracker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from peer.core.config import Limits, PeerConfig, load_peer_config, parse_addr, read_toml
from peer.core.costs import CostTracker, remote_cost
from peer.core.errors import BadRequest, ConfigError
from peer.core.jobs import JobBook, JobStateError
from peer.core.requests import parse_generate, parse_json


def test_config_presets_and_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "peer.toml"
    toml.write_text(
        '[peer]\nname = "a"\nlisten = "127.0.0.1:7101"\njoin = ["127.0.0.1:7100"]\n'
        "threads = 2\n[peer.limits]\nmax_count = 8\n"
    )
    cfg = load_peer_config(
        read_toml(toml), {"http": "0.0.0.0:9000", "policy": "greedy", "insecure": True}
    )
    assert cfg.listen == ("127.0.0.1", 7101) and cfg.http == ("0.0.0.0", 9000)
    assert cfg.join == (("127.0.0.1", 7100),) and cfg.threads == 2
    assert cfg.policy == "greedy" and cfg.limits.max_count == 8
    assert PeerConfig.local("x", 3).listen == ("127.0.0.1", 7003)
    with pytest.raises(AttributeError):
        cfg.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"name": "a", "threads": "two"},
        {"name": "a", "threads": 0},
        {"name": "a", "policy": "oracle"},
        {"name": "a", "listen": "nohost"},
        {"name": "a", "listen": "h:99999"},
        {"name": "a", "colour": "red"},
        {"name": "a", "limits": {"max_count": -1}},
        {"name": "a", "secret_file": "/nonexistent/secret"},
        {"name": "a", "cpu_cores": 0},
        {"name": "a", "cpu_cores": -0.5},
        {"name": "a", "cpu_cores": float("nan")},
        {"name": "a", "cpu_cores": "half"},
    ],
)
def test_bad_config_is_a_clear_error(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_peer_config(values)


def test_cpu_cores_is_read_from_file_or_cli() -> None:
    from peer.cli import build_parser

    assert load_peer_config({"name": "a"}).cpu_cores is None  # the cgroup's quota, at start
    assert load_peer_config({"name": "a", "cpu_cores": 2}).cpu_cores == 2.0
    args = build_parser().parse_args(["peer", "--name", "a", "--cpu-cores", "0.17"])
    assert args.cpu_cores == pytest.approx(0.17)


def test_bad_toml(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(p)
    with pytest.raises(ConfigError, match="not found"):
        read_toml(tmp_path / "missing.toml")
    assert parse_addr("[::1]:80") == ("::1", 80)


def test_generate_defaults_and_errors() -> None:
    req = parse_generate({"count": 3}, Limits())
    assert (req.count, req.label, req.mode, req.policy, req.scheduler) == (
        3,
        None,
        "auto",
        None,
        "ddim",
    )
    with pytest.raises(BadRequest) as e:
        parse_generate({"count": 3, "label": -1}, Limits())
    assert e.value.code == "out_of_range" and e.value.status == 400
    with pytest.raises(BadRequest) as e:
        parse_json(b"\xff\xfe")
    assert e.value.code == "invalid_json"


def test_job_state_machine() -> None:
    book = JobBook(keep=2)
    job = book.create("generate", 4, now=0.0)
    job.transition("running", 0.1)
    job.progress(3, 0.2, "a")
    job.progress(3, 0.3, "b")
    assert job.done_units == 4
    job.finish({"images": []}, 0.4)
    assert job.terminal and [e.seq for e in job.events] == list(range(len(job.events)))
    with pytest.raises(JobStateError):
        job.transition("running", 0.5)
    for i in range(3):
        j = book.create("generate", 1, now=1.0 + i)
        j.transition("running", 1.0 + i)
        j.fail("share_failed", "x", 1.0 + i)
    book.create("generate", 1, now=9.0)  # active jobs are never dropped
    assert len(book) <= 3 and book.active() == 1


def test_cost_tracker_follows_real_runs() -> None:
    ct = CostTracker(0.004, 0.001, alpha=0.5)
    base = ct.predict(8, 10)
    assert base == pytest.approx(10 * (0.004 + 0.008))
    for _ in range(20):
        ct.observe(8, 10, 2 * base)  # the peer got twice as slow (e.g. a CPU quota)
    assert ct.predict(8, 10) == pytest.approx(2 * base, rel=1e-3)
    assert ct.capacity() == pytest.approx(8 / (2 * 0.012), rel=1e-3)
    a, c = remote_cost(ct, ct.capacity() / 2)  # a peer half as fast
    assert a == pytest.approx(2 * ct.a) and c == pytest.approx(2 * ct.c)
    assert np.isfinite(remote_cost(ct, 0.0)[0])


def test_example_toml_parses() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_peer_config(read_toml(root / "examples" / "peer.toml"))
    assert cfg.name == "edge-a" and cfg.join == (("127.0.0.1", 7002),)


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from peer.cli import build_parser

    bad = tmp_path / "bad.toml"
    bad.write_text('[peer]\nname = "a"\nthreads = "many"\n')
    args = build_parser().parse_args(["peer", "--config", str(bad)])
    assert args.func(args) == 2
    assert "threads must be an integer" in capsys.readouterr().err
    args = build_parser().parse_args(["peer", "--name", "a", "--listen", "nope"])
    assert args.func(args) == 2
