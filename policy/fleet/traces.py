"""Simulator traces on disk: the replays of measured scenarios that training draws episodes from.

``amcoedge scenario replays`` (``peer.harness.replays``) fits a real run's costs, overheads and
host into the scenario's trace and writes randomised variants of it here; ``amcoedge policy
train --replays FILE`` reads them (Pensieve's way: the measured inputs, not a parametric model,
carry the real variability). One ``.npz`` holds many traces, numeric arrays only (no pickle),
and a JSON header with each trace's config and event lists. A file that is not such a file, or
whose arrays disagree with its header, raises :class:`TraceFileError` naming what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from policy.fleet.sim import SimConfig, Trace

FORMAT = "amcoedge-traces/1"
_ARRAYS = ("speed", "bw", "times", "origin_u", "images", "steps", "pixels", "deadline", "phase")
_OPTIONAL = ("a_s", "c_s", "overhead_s", "demand")
MAX_TRACES = 10_000


class TraceFileError(ValueError):
    """A traces file that cannot be used, with the reason."""


def save_traces(path: str | Path, traces: Sequence[Trace], meta: dict[str, Any]) -> None:
    """Write ``traces`` (and ``meta``: where they came from) to ``path`` (``.npz``)."""
    arrays: dict[str, np.ndarray] = {}
    header: list[dict[str, Any]] = []
    for i, t in enumerate(traces):
        for name in _ARRAYS:
            arrays[f"{i}/{name}"] = np.asarray(getattr(t, name))
        for name in _OPTIONAL:
            v = getattr(t, name)
            if v is not None:
                arrays[f"{i}/{name}"] = np.asarray(v)
        header.append(
            {
                "cfg": asdict(t.cfg),
                "crashes": [[list(w) for w in ws] for ws in t.crashes],
                "cost_events": [list(e) for e in t.cost_events],
                "demand_events": [list(e) for e in t.demand_events],
                "replan_lost": t.replan_lost,
                "host_cores": t.host_cores,
            }
        )
    doc = {"format": FORMAT, "meta": meta, "traces": header}
    arrays["header"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]


def load_traces(path: str | Path) -> tuple[list[Trace], dict[str, Any]]:
    """The traces in ``path`` and the file's ``meta``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise TraceFileError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise TraceFileError(f"{path}: not a traces file ({exc})") from None
    try:
        doc = json.loads(bytes(data.pop("header")).decode())
    except KeyError:
        raise TraceFileError(f"{path}: no header (not written by `scenario replays`)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceFileError(f"{path}: unreadable header ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TraceFileError(f"{path}: format is not {FORMAT}")
    headers = doc.get("traces")
    if not isinstance(headers, list) or not 1 <= len(headers) <= MAX_TRACES:
        raise TraceFileError(f"{path}: 'traces' must list 1 to {MAX_TRACES} traces")
    traces = [_trace(path, i, h, data) for i, h in enumerate(headers)]
    meta = doc.get("meta")
    return traces, meta if isinstance(meta, dict) else {}


def _trace(path: str | Path, i: int, h: Any, data: dict[str, np.ndarray]) -> Trace:
    where = f"{path}: trace {i}"
    if not isinstance(h, dict):
        raise TraceFileError(f"{where}: header entry is not an object")
    try:
        known = {f.name for f in fields(SimConfig)}
        raw = h["cfg"]
        if not isinstance(raw, dict) or set(raw) - known:
            raise TraceFileError(f"{where}: cfg has unknown keys {sorted(set(raw) - known)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        cfg = SimConfig(**values)
        arrays = {n: data[f"{i}/{n}"] for n in _ARRAYS}
        optional = {n: data.get(f"{i}/{n}") for n in _OPTIONAL}
        crashes = [[(float(a), float(b)) for a, b in ws] for ws in h["crashes"]]
        cost_events = tuple((float(t), int(p), float(f)) for t, p, f in h["cost_events"])
        demand_events = tuple((float(t), int(p), float(c)) for t, p, c in h["demand_events"])
        host = h["host_cores"]
    except KeyError as exc:
        raise TraceFileError(f"{where}: missing {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TraceFileError(f"{where}: {exc}") from None
    n, r = cfg.n_peers, arrays["times"].shape[0]
    shapes = {
        "speed": (n,),
        "bw": (n, n),
        "phase": (n, n),
        **{k: (r,) for k in ("origin_u", "images", "steps", "pixels", "deadline")},
        **{k: (n,) for k, v in optional.items() if v is not None},
    }
    for name, shape in shapes.items():
        a = arrays[name] if name in arrays else optional[name]
        if a is None:
            continue
        if a.shape != shape or not np.all(np.isfinite(a)):
            raise TraceFileError(f"{where}: {name} must be {shape} and finite, got {a.shape}")
    if r < 1 or r != cfg.n_requests or np.any(np.diff(arrays["times"]) < 0):
        raise TraceFileError(f"{where}: times must be {cfg.n_requests} sorted arrival times")
    if len(crashes) != n or any(p < 0 or p >= n for _, p, _ in (*cost_events, *demand_events)):
        raise TraceFileError(f"{where}: events name peers outside 0..{n - 1}")
    if host is not None and not (isinstance(host, int | float) and 0 < host < math.inf):
        raise TraceFileError(f"{where}: host_cores must be a positive number or null")
    return Trace(
        cfg=cfg,
        **arrays,
        crashes=crashes,
        a_s=optional["a_s"],
        c_s=optional["c_s"],
        cost_events=cost_events,
        overhead_s=optional["overhead_s"],
        replan_lost=bool(h.get("replan_lost", False)),
        host_cores=None if host is None else float(host),
        demand=optional["demand"],
        demand_events=demand_events,
    )
