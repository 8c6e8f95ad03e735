"""Request timelines (Gantt charts) as a PNG, for the demo's and the scenario runner's reports.

A job's result carries ``timing.peers``: one row per share with ``peer``, ``units``,
``queue_s``, ``transfer_s``, ``compute_s`` and ``start_s``/``end_s`` (seconds since the
origin dispatched the request). Each share is one bar on its peer's row, starting at
``start_s``: its queue, transfer and compute seconds laid end to end in that order (the
breakdown says how long each took, not when), then whatever is left up to ``end_s`` (RPC,
encoding, scheduling) as an outlined remainder. The dashboard (``peer/runtime/ui/app.js``)
draws the same bars from the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTS = ("queue", "transfer", "compute")
COLORS = {"queue": "#b8c4d0", "transfer": "#f4a261", "compute": "#2a9d8f", "other": "#ffffff"}
_FIELDS = ("queue_s", "transfer_s", "compute_s", "start_s", "end_s")


@dataclass(frozen=True)
class ShareTiming:
    peer: str
    units: int
    queue_s: float
    transfer_s: float
    compute_s: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Segment:
    share: int  # index of the share in timing.peers
    peer: str
    row: int  # the peer's row, in order of first appearance
    kind: str  # queue | transfer | compute | other
    left: float
    width: float


@dataclass(frozen=True)
class Panel:
    title: str
    shares: tuple[ShareTiming, ...]
    makespan_s: float | None = None
    predicted_s: float | None = None


def parse_shares(rows: Any, where: str = "timing.peers") -> tuple[ShareTiming, ...]:
    """``timing.peers`` of a job result, checked; a bad row raises ValueError naming it."""
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise ValueError(f"{where} must be a list, not {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        if not isinstance(row, Mapping):
            raise ValueError(f"{at} must be an object")
        peer, units = row.get("peer"), row.get("units")
        if not isinstance(peer, str) or not peer:
            raise ValueError(f"{at}.peer must be a non-empty string")
        if not isinstance(units, int) or isinstance(units, bool) or units < 0:
            raise ValueError(f"{at}.units must be a non-negative integer")
        vals: list[float] = []
        for key in _FIELDS:
            v = row.get(key)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"{at}.{key} must be a non-negative number, got {v!r}")
            vals.append(float(v))
        q, t, c, start, end = vals
        if end < start:
            raise ValueError(f"{at}: end_s {end} is before start_s {start}")
        out.append(ShareTiming(peer, units, q, t, c, start, end))
    return tuple(out)


def panel_of(result: Mapping[str, Any], title: str) -> Panel:
    """A panel from a job's ``result`` (``timing`` and, when present, ``plan``)."""
    timing = result.get("timing")
    if not isinstance(timing, Mapping):
        raise ValueError("result.timing must be an object")
    plan = result.get("plan")
    predicted = plan.get("predicted_makespan_s") if isinstance(plan, Mapping) else None
    makespan = timing.get("makespan_s")
    return Panel(
        title=title,
        shares=parse_shares(timing.get("peers")),
        makespan_s=float(makespan) if isinstance(makespan, int | float) else None,
        predicted_s=float(predicted) if isinstance(predicted, int | float) else None,
    )


def rows_of(shares: Sequence[ShareTiming]) -> list[str]:
    """Peers in order of their first share."""
    return list(dict.fromkeys(s.peer for s in shares))


def segments(shares: Sequence[ShareTiming]) -> list[Segment]:
    """The rectangles of one timeline: per share, its non-zero parts and the remainder."""
    rows = {p: i for i, p in enumerate(rows_of(shares))}
    out: list[Segment] = []
    for k, s in enumerate(shares):
        x = s.start_s
        for kind, width in zip(PARTS, (s.queue_s, s.transfer_s, s.compute_s), strict=True):
            if width > 0:
                out.append(Segment(k, s.peer, rows[s.peer], kind, x, width))
                x += width
        if s.end_s - x > 1e-9:
            out.append(Segment(k, s.peer, rows[s.peer], "other", x, s.end_s - x))
    return out


def draw(panels: Sequence[Panel], path: Path) -> list[list[Segment]]:
    """One timeline per panel, stacked, into a PNG at ``path``; returns the segments drawn."""
    if not panels:
        raise ValueError("no timelines to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    heights = [max(len(rows_of(p.shares)), 1) * 0.35 + 0.9 for p in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, sum(heights) + 0.6),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    drawn: list[list[Segment]] = []
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        segs = segments(panel.shares)
        drawn.append(segs)
        for seg in segs:
            ax.barh(
                seg.row,
                seg.width,
                left=seg.left,
                height=0.6,
                color=COLORS[seg.kind],
                edgecolor="#555555" if seg.kind == "other" else "none",
                linewidth=0.6,
            )
        names = rows_of(panel.shares)
        for s in panel.shares:
            ax.text(s.end_s, names.index(s.peer), f" {s.units}", va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        if panel.makespan_s is not None:
            ax.axvline(panel.makespan_s, color="#222222", linewidth=1)
        if panel.predicted_s is not None:
            ax.axvline(panel.predicted_s, color="#e76f51", linewidth=1, linestyle="--")
        ax.set_title(panel.title, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("seconds since the origin dispatched the request")
    handles = [Patch(color=COLORS[p], label=p) for p in PARTS]
    handles.append(Patch(facecolor="white", edgecolor="#555555", label="other (rpc, encode)"))
    handles.append(Patch(color="#222222", label="make-span"))
    handles.append(Patch(color="#e76f51", label="predicted"))
    fig.legend(handles=handles, loc="upper right", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (sum(heights) + 0.6)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn
