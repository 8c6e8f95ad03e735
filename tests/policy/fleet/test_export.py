from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from policy.export import export_checkpoint
from policy.fleet import Request, make_recruiter
from policy.fleet.actions import (
    AGE_HEDGES,
    LEARNED,
    N_ACTIONS,
    N_HEDGES,
    action_mask,
    decode,
    split_output,
)
from policy.fleet.features import N_FEATURES, CandidateArrays, build_features
from policy.fleet.network import RecruiterNet
from policy.fleet.onnx_export import PARITY_SIZES, export_net, parity
from policy.fleet.recruiters import LearnedRecruiter
from policy.fleet.sim import RequestCtx, SimConfig, make_trace, run
from policy.fleet.train import TrainConfig, load_net, train
from policy.ort import OrtModel


def test_parity_with_torch_for_many_peer_counts(tiny_onnx: Path) -> None:
    torch.manual_seed(0)
    net = RecruiterNet()
    diffs = parity(net, tiny_onnx, PARITY_SIZES)
    assert set(diffs) == {1, 2, 5, 17, 64}
    assert max(diffs.values()) <= 1e-5


def test_peer_axis_is_dynamic(tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    dim = model.graph.input[0].type.tensor_type.shape.dim
    assert dim[0].dim_param == "peers"
    assert dim[1].dim_value == N_FEATURES
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param == "peers"
    m = OrtModel(tiny_onnx)
    for n in (1, 7, 64):
        (y,) = m.run({"features": np.zeros((n, N_FEATURES), dtype=np.float32)})
        assert y.shape == (n, N_ACTIONS + N_HEDGES)


def test_score_output_ranks_by_hedged_solo_finish() -> None:
    net = RecruiterNet()
    rng = np.random.default_rng(0)
    n = 9
    arr = CandidateArrays(
        is_self=np.eye(1, n).ravel(),
        wait=rng.uniform(0, 1, n),
        age=rng.uniform(0, 2, n),
        fixed=rng.uniform(0, 0.2, n),
        unit=rng.uniform(0.01, 0.1, n),
        xfer=np.zeros(n),
        own=rng.uniform(0, 0.3, n),
    )
    feats = build_features(arr, 6, 10.0)
    with torch.inference_mode():
        q, score = split_output(net(torch.from_numpy(feats)).numpy())
    assert q.shape == (N_ACTIONS,) and score.shape == (n, N_HEDGES)
    solo0 = arr.wait + arr.own + arr.fixed + 6 * arr.per_unit
    # the learned hedge never makes a candidate look better than greedy-aware does
    assert np.all(-score[:, LEARNED] >= solo0 / solo0.min() - 1e-5)
    for h_i, h in enumerate(AGE_HEDGES):
        solo = arr.wait + arr.own + h * arr.age + arr.fixed + 6 * arr.per_unit
        assert np.array_equal(np.argsort(-score[:, h_i]), np.argsort(solo))
    for a in np.flatnonzero(action_mask(n)):
        _pos, cnt, _ = decode(arr, 6, int(a), score)
        assert cnt.sum() == 6 and np.all(cnt > 0)


def test_train_export_load_and_simulate_end_to_end(tmp_path: Path) -> None:
    tc = TrainConfig(minutes=0.03, seed=0, requests_per_run=120, steps_per_run=2, batch_per_run=16)
    ckpt = train(tc, tmp_path, progress=False)
    assert ckpt["kind"] == "fleet-recruiter" and ckpt["episodes"] >= 1
    assert (tmp_path / "recruiter.pt").is_file()
    # the project's exporter (policy export) handles this kind, with the peer axis dynamic
    info = export_checkpoint(tmp_path / "recruiter.pt", tmp_path / "recruiter.onnx")
    assert info["kind"] == "fleet-recruiter"
    onnx_path = tmp_path / "recruiter.onnx"
    assert max(parity(load_net(ckpt), onnx_path).values()) <= 1e-5
    direct = export_net(load_net(ckpt), tmp_path / "direct.onnx")
    assert max(parity(load_net(ckpt), direct).values()) <= 1e-5
    rec = make_recruiter("learned", seed=0, model_path=onnx_path)
    assert isinstance(rec, LearnedRecruiter)

    def recruit(ctx: RequestCtx, rng: np.random.Generator):  # type: ignore[no-untyped-def]
        return rec.choose(ctx.arr, ctx.units, ctx.deadline_s)

    for n in (1, 2, 5, 17):
        cfg = SimConfig(n_peers=n, load=0.5, staleness_s=0.5, n_requests=80)
        res = run(make_trace(cfg, 0), recruit)
        assert np.all(res.makespan > 0)


def test_training_is_seeded_and_numpy_forward_matches_torch() -> None:
    from policy.fleet import train as train_mod

    torch.manual_seed(0)
    net = RecruiterNet()
    params = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    feats = np.random.default_rng(0).normal(0, 2, (7, N_FEATURES)).astype(np.float32)
    q_np, s_np = train_mod.numpy_forward(params, feats)
    with torch.inference_mode():
        q_t, s_t = split_output(net(torch.from_numpy(feats)).numpy())
    assert np.allclose(q_np, q_t, atol=1e-5) and np.allclose(s_np, s_t, atol=1e-5)

    def choose(f, v, g):  # type: ignore[no-untyped-def]
        return int(g.choice(np.flatnonzero(v))), train_mod.numpy_forward(params, f)[1]

    tc = TrainConfig(requests_per_run=60)
    cfg = train_mod._sample_config(np.random.default_rng(3), tc)
    a = train_mod.collect(cfg, 5, choose, tc)[0]
    b = train_mod.collect(cfg, 5, choose, tc)[0]
    assert np.array_equal(a.action, b.action) and np.array_equal(a.target, b.target)
    assert np.array_equal(a.corr_target, b.corr_target)
    assert np.all(a.corr_target >= 0) and a.corr_mask.any()


@pytest.mark.parametrize("units", [1, 5])
def test_single_peer_fleet(tiny_onnx: Path, units: int) -> None:
    from policy.fleet import Candidate

    rec = make_recruiter("learned", model_path=tiny_onnx)
    d = rec.decide(Request(units=units), [Candidate("me", True, 0.3, 0.0, 0.05, 0.02)])
    assert d.selected == (0,) and d.shares == (1.0,)


def test_training_by_episode_count_is_reproducible(tmp_path: Path) -> None:
    tc = TrainConfig(
        minutes=10.0, episodes=2, seed=4, requests_per_run=60, steps_per_run=2, batch_per_run=8
    )
    a = train(tc, tmp_path / "a", progress=False)
    b = train(tc, tmp_path / "b", progress=False)
    assert a["episodes"] == b["episodes"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
