"""amcoedge+: the numpy learner matches torch, runs are seeded, checkpoints export to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policy.export import build_exportable, export_checkpoint, load_checkpoint
from policy.paper.config import DEFAULT, SimError
from policy.paper.dqn import AgentConfig, build_mlp
from policy.paper.plus import ABLATIONS, PLUS, PlusConfig, StackedMLP, save_plus_checkpoint
from policy.paper.runner import make_method, run

torch.set_num_threads(1)
SMALL = DEFAULT.with_(tasks=6, slots=6)


@pytest.mark.parametrize("huber", [True, False])
def test_numpy_step_matches_torch_adam(huber: bool) -> None:
    rng = np.random.default_rng(3)
    net = StackedMLP(2, [4, 8, 8, 5], rng)
    cfg = AgentConfig(n_features=4, n_actions=5, hidden=8, layers=2)
    torch_nets = []
    for b in range(2):
        t = build_mlp(cfg)
        t.load_state_dict(net.agent_state_dict(b))
        torch_nets.append(t)
    params = [p for t in torch_nets for p in t.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    for step in range(3):
        x = rng.normal(size=(2, 7, 4)).astype(np.float32) * 3
        a = rng.integers(0, 5, size=(2, 7))
        y = rng.normal(size=(2, 7)).astype(np.float32) * 3
        loss = net.step(x, a, y, 0.01, huber)
        q = torch.stack([t(torch.from_numpy(x[b])) for b, t in enumerate(torch_nets)])
        qa = q.gather(2, torch.from_numpy(a).unsqueeze(2)).squeeze(2)
        yt = torch.from_numpy(y)
        tl = torch.nn.functional.smooth_l1_loss(qa, yt) if huber else torch.mean((qa - yt) ** 2)
        opt.zero_grad()
        tl.backward()
        opt.step()
        assert loss == pytest.approx(float(tl), rel=1e-4), step
    for b, t in enumerate(torch_nets):
        for k, v in net.agent_state_dict(b).items():
            assert torch.allclose(v, t.state_dict()[k], atol=1e-5), k


def test_config_rejects_bad_values() -> None:
    with pytest.raises(SimError):
        PlusConfig(state="nope")
    with pytest.raises(SimError):
        PlusConfig(gamma=1.0)
    with pytest.raises(SimError):
        PlusConfig(explore_start=0.1, explore_end=0.5)
    with pytest.raises(SimError):
        make_method("amcoedge+/not-an-ablation")


def test_seeded_and_every_ablation_runs() -> None:
    busy = DEFAULT.with_(tasks=30, slots=8)  # enough samples per BS for a batch
    a = run("amcoedge+", busy, 3, seed=5)
    b = run("amcoedge+", busy, 3, seed=5)
    assert a.makespans == b.makespans and len(a.makespans) == 3
    assert int(a.extra["learn_calls"]) > 0  # type: ignore[call-overload]
    for name in ABLATIONS:
        r = run(f"amcoedge+/{name}", SMALL, 2, seed=1)
        assert np.isfinite(r.avg_makespan), name


def test_checkpoint_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    import onnxruntime as ort

    res = run("amcoedge+", SMALL, 2, seed=0)
    ck_path = tmp_path / "plus.pt"
    save_plus_checkpoint(res, ck_path)
    ck = load_checkpoint(ck_path)
    assert ck["kind"] == "adadqn" and ck["variant"] == "amcoedge+"
    info = export_checkpoint(ck_path, tmp_path / "plus.onnx")
    assert info["kind"] == "adadqn"
    n_in = 2 * SMALL.n_es if PLUS.state == "load" else 1 + SMALL.n_es
    x = np.random.default_rng(1).uniform(0, 2, (9, n_in)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "plus.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"state": x})[0]
    m = res.method_obj
    assert m is not None
    want = np.stack([m.net.one(b, x) for b in range(SMALL.n_es)], axis=1)  # type: ignore[attr-defined]
    assert got.shape == (9, SMALL.n_es, 31)
    assert float(np.max(np.abs(got - want))) <= 1e-4
    with torch.no_grad():
        ref = build_exportable(ck).module(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(got - ref))) <= 1e-5
