"""PNG figures of a reproduction: convergence at the defaults and one figure per sweep."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policy.paper.report import SWEEP_LABEL

__all__ = ["SMOOTH", "draw_figures"]

SMOOTH = 10  # episodes in the convergence plot's moving mean


def draw_figures(
    out: Path,
    methods: Sequence[str],
    summary: Mapping[str, Any],
    default_runs: Mapping[str, list[dict[str, Any]]],
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    longest = max(len(runs[0]["curve"]) for runs in default_runs.values())
    for m, runs in default_runs.items():
        curves = np.array([r["curve"] for r in runs], dtype=float)
        mean = curves.mean(axis=0)
        if mean.size < longest:  # non-learning methods: their mean as a flat reference line
            ax.plot([0, longest - SMOOTH], [mean.mean()] * 2, linestyle="--", label=f"{m} (mean)")
            continue
        if mean.size > SMOOTH:
            k = SMOOTH
            mean = np.convolve(mean, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(mean.size), mean, label=m)
    ax.set_xlabel(f"episode ({SMOOTH}-episode moving mean)")
    ax.set_ylabel("average make-span (s)")
    ax.set_title("Convergence at the defaults")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=110)
    plt.close(fig)
    names.append("convergence.png")
    sweeps = summary["sweeps"]
    for sweep, pts in sweeps.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        xs = [p["value"] for p in pts]
        for m in methods:
            ys = [p["methods"].get(m, {}).get("makespan", math.nan) for p in pts]
            fs = [p["methods"].get(m, {}).get("failure_rate", math.nan) for p in pts]
            axes[0].plot(xs, ys, marker="o", label=m)
            axes[1].plot(xs, fs, marker="o", label=m)
        axes[0].set_ylabel("average make-span (s)")
        axes[1].set_ylabel("failure rate")
        for a in axes:
            a.set_xlabel(SWEEP_LABEL.get(sweep, sweep))
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        name = f"sweep_{sweep}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names
