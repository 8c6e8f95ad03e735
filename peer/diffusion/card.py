"""The model card: what was trained, how, and how good it is.

`model_card.json` is the machine-readable record; `model_card.md` is rendered from it.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from peer.diffusion.train import TrainConfig, TrainResult, config_dict

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"


def write_training_card(
    out_dir: Path, cfg: TrainConfig, result: TrainResult, command: str
) -> dict[str, Any]:
    import diffusers
    import torch

    card: dict[str, Any] = {
        "name": "digits16",
        "description": "Class-conditional DDPM (diffusers UNet2DModel) trained on scikit-learn's "
        "bundled 8x8 digits upscaled bilinearly to 16x16, pixel range [-1, 1].",
        "command": command,
        "config": config_dict(cfg),
        "training": {
            "steps_done": result.steps_done,
            "seconds": round(result.seconds, 1),
            "final_loss_mean_last_100": round(result.final_loss, 5),
            "loss_curve": [[s, round(v, 5)] for s, v in result.loss_curve],
        },
        "environment": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "quality": None,
    }
    write_card(out_dir, card)
    return card


def read_card(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / CARD_JSON
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def write_card(out_dir: Path, card: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / CARD_MD).write_text(render_card(card))


def render_card(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {card.get('name', 'model')}", "", str(card.get("description", "")), ""]
    lines += ["## Reproduce", "", "```", str(card.get("command", "")), "```", ""]
    lines += ["## Config", "", "| field | value |", "|---|---|"]
    for k, v in (card.get("config") or {}).items():
        lines.append(f"| {k} | `{v}` |")
    tr = card.get("training") or {}
    lines += ["", "## Training", ""]
    lines.append(f"- steps: {tr.get('steps_done')} in {tr.get('seconds')} s")
    lines.append(f"- final loss (mean of the last 100 steps): {tr.get('final_loss_mean_last_100')}")
    curve = tr.get("loss_curve") or []
    if curve:
        lines.append("- loss every 100 steps: " + ", ".join(f"{s}: {v}" for s, v in curve))
    env = card.get("environment") or {}
    lines.append("- environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    lines += ["", "## Quality", ""]
    quality = card.get("quality")
    if not quality:
        lines.append("Not scored yet (`amcoedge model score --model DIR --write-card`).")
    else:
        for entry in quality if isinstance(quality, list) else [quality]:
            lines.append(
                f"- label agreement {entry.get('agreement'):.3f} on {entry.get('n')} samples "
                f"({entry.get('scheduler')} {entry.get('steps')} steps, seed {entry.get('seed')}); "
                f"scorer: {entry.get('scorer')}"
            )
    notes = card.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
