"""Model card of a paper-mode AdaDQN checkpoint (faithful ``amcoedge`` or ``amcoedge+``).

Every figure comes from the checkpoint (its training result and configuration), from a parity
check run while writing, or from a ``sim analyse spread`` file; the writer holds none.
Hand-written notes live in ``<card>.notes.md`` beside the card and are kept on regeneration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from policy.paper.learners import LEARN_EVERY, LEARN_START
from policy.paper.subsets import ALL_SUBSETS

__all__ = ["notes_path", "write_adadqn_card"]


def notes_path(card: Path) -> Path:
    return card.with_name(card.stem + ".notes.md")


def _parity(checkpoint: Path, onnx_path: Path, n_in: int, rows: int) -> float | None:
    if not onnx_path.is_file():
        return None
    import onnxruntime as ort
    import torch

    from policy.export import build_exportable, load_checkpoint

    ex = build_exportable(load_checkpoint(checkpoint))
    x = np.random.default_rng(0).uniform(0.0, 1.0, (rows, n_in)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = ex.module(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(sess.run(None, {"state": x})[0] - ref)))


def write_adadqn_card(
    checkpoint: Path,
    out: Path,
    onnx_path: Path | None = None,
    spread: dict[str, Any] | None = None,
    parity_rows: int = 256,
) -> str:
    from policy.export import load_checkpoint

    ck = load_checkpoint(checkpoint)
    cfg = ck["config"]
    plus = ck.get("plus_config")
    variant = ck.get("variant", "amcoedge")
    onnx_path = onnx_path or checkpoint.with_suffix(".onnx")
    parity = _parity(checkpoint, onnx_path, int(cfg["n_features"]), parity_rows)
    p = ck.get("params", {})
    layers = " → ".join(
        [str(cfg["n_features"])]
        + [str(cfg["hidden"])] * int(cfg["layers"])
        + [str(cfg["n_actions"])]
    )
    if variant == "amcoedge+":
        state = (
            "the task's per-ES service time U_j and waiting time W_j in the current intra-slot "
            f"state, divided by the deadline and multiplied by {ck.get('time_scale')} "
            "(`policy.paper.plus.PlusMethod.features`)"
            if plus and plus.get("state") == "load"
            else "[D / size_max, Q_1..Q_5]"
        )
        rule = f"amcoedge+ departures (`policy.paper.plus`): `{json.dumps(plus)}`"
    else:
        state = (
            "[D (task size, Mbit), Q_1..Q_5 (start-of-slot ES backlogs, Gcycles)], not normalised"
        )
        rule = (
            f"reference rule: Adam lr {cfg['lr']}, γ {cfg['gamma']}, greedy probability 0 → "
            f"{cfg['eps_max']} (+{cfg['eps_increment']} per learn call), target copy every "
            f"{cfg['replace_every']} learn calls, replay {cfg['memory']}, batch {cfg['batch']}, "
            f"learning after slot {LEARN_START} every {LEARN_EVERY} slots"
        )
    lines = [
        f"# {checkpoint.stem} ({variant}, paper mode): model card",
        "",
        f"**What**: the per-BS Q-networks of `{variant}` in the paper's MEC simulation. "
        f"Checkpoint `{checkpoint.name}` (kind `{ck['kind']}`), ONNX `{onnx_path.name}`.",
        "",
        f"**Input** `state` float32 (batch, {cfg['n_features']}): {state}. **Output** `q` float32 "
        f"(batch, {len(ck['agents'])}, {cfg['n_actions']}): every BS agent's Q-values over the "
        f"{len(ALL_SUBSETS)} ES subsets in the reference order (`policy.paper.subsets`); BS b "
        "acts greedily on row b, the split comes from CWA.",
        "",
        f"**Network**: {layers}, ReLU. **Learning**: {rule}.",
        "",
        f"**Scenario**: capacities {p.get('capacities')} GHz, rates {p.get('rates')} Mbit/s, "
        f"{p.get('tasks')} task positions per BS per slot, p = {p.get('arrival_prob')}, "
        f"deadline {p.get('deadline')} s.",
        "",
        f"**Training**: {ck.get('episodes')} episodes, seed {ck.get('seed')}; mean of the last "
        f"episodes: make-span {ck.get('avg_makespan'):.4f} s, failure rate "
        f"{ck.get('failure_rate'):.5f}.",
        "",
        "**Parity**: "
        + (
            f"onnxruntime (CPU) vs torch on {parity_rows} random states: max |diff| {parity:.3g}."
            if parity is not None
            else "no ONNX file next to the checkpoint."
        ),
        "",
    ]
    if spread:
        lines += [f"**Seed spread** (`{spread['command']}`):", ""]
        for m, r in spread["summary"]["methods"].items():
            ratios = ", ".join(f"{v:.3f}" for v in r["ratio_optimal"])
            lines.append(f"- {m}: ratio to the seed's Optimal {ratios} (seeds {spread['seeds']})")
        lines.append("")
    notes = notes_path(out)
    if notes.is_file() and notes.read_text().strip():
        lines += [
            "## Notes",
            "",
            f"Hand-written, from `{notes.name}` (kept when this card is regenerated):",
            "",
            notes.read_text().strip(),
            "",
        ]
    text = "\n".join(lines)
    out.write_text(text)
    return text
