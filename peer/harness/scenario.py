"""Scenario files: parse and check them, and turn them into a seeded request schedule.

A scenario (TOML, see ``examples/scenarios/``) names the peers (count, CPU quotas), a workload
(Poisson arrivals of generate requests of a few kinds), timed events (a peer crashes, leaves,
comes back, or gets a different CPU quota) and the policies to compare. Everything here is
pure: :func:`parse_scenario` checks a mapping and names the offending key in every error, and
:func:`schedule` draws the same requests for every policy. :mod:`peer.harness.scenario_run` runs them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.core.config import POLICIES, load_toml_file
from peer.core.errors import PeerError

EVENT_ACTIONS: tuple[str, ...] = ("crash", "stop", "restart", "quota")
KIND_MODES: tuple[str, ...] = ("auto", "batch", "steps", "local")
MAX_PEERS = 16
MAX_DURATION_S = 3600.0
MAX_RATE = 50.0


class ScenarioError(PeerError):
    code = "bad_scenario"


@dataclass(frozen=True, slots=True)
class Kind:
    mode: str
    count: int
    steps: int
    weight: float


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    action: str
    peer: int
    cores: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    peers: int
    quotas: tuple[float, ...] | None
    threads: int
    duration_s: float
    rate_per_s: float
    deadline_s: float
    kinds: tuple[Kind, ...]
    events: tuple[Event, ...]
    policies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Planned:
    """One request of the schedule: when, which kind, which origin draw, which seed."""

    index: int
    at_s: float
    kind: int
    origin_u: float  # uniform in [0, 1): picks among the peers alive at send time
    seed: int
    label: int


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, Mapping):
        raise ScenarioError(f"{where}{key} must be a table")
    return v


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _num(
    data: Mapping[str, Any],
    key: str,
    where: str,
    lo: float,
    hi: float,
    default: float | None = None,
    integer: bool = False,
) -> float:
    if key not in data:
        if default is None:
            raise ScenarioError(f"{where}.{key} is required")
        return default
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ScenarioError(f"{where}.{key} must be a number, got {v!r}")
    if integer and not isinstance(v, int):
        raise ScenarioError(f"{where}.{key} must be an integer, got {v!r}")
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ScenarioError(f"{where}.{key} must be in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


def _kinds(raw: Any) -> tuple[Kind, ...]:
    if raw is None:
        return (Kind("batch", 8, 20, 1.0),)
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("workload.kinds must be a non-empty array of tables")
    out = []
    for i, k in enumerate(raw):
        where = f"workload.kinds[{i}]"
        if not isinstance(k, Mapping):
            raise ScenarioError(f"{where} must be a table")
        _check_keys(k, {"mode", "count", "steps", "weight"}, where)
        mode = k.get("mode", "batch")
        if mode not in KIND_MODES:
            raise ScenarioError(f"{where}.mode must be one of {list(KIND_MODES)}, got {mode!r}")
        count = int(_num(k, "count", where, 1, 64, 8, integer=True))
        if mode == "steps" and count != 1:
            raise ScenarioError(f"{where}: steps mode splits one image's chain; count must be 1")
        steps = int(_num(k, "steps", where, 1, 1000, 20, integer=True))
        weight = _num(k, "weight", where, 1e-9, 1e9, 1.0)
        out.append(Kind(str(mode), count, steps, weight))
    return tuple(out)


def _events(raw: Any, peers: int, duration: float, quotas: bool) -> tuple[Event, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError("events must be an array of tables ([[events]])")
    out = []
    for i, e in enumerate(raw):
        where = f"events[{i}]"
        if not isinstance(e, Mapping):
            raise ScenarioError(f"{where} must be a table")
        _check_keys(e, {"at_s", "action", "peer", "cores"}, where)
        action = e.get("action")
        if action not in EVENT_ACTIONS:
            raise ScenarioError(
                f"{where}.action must be one of {list(EVENT_ACTIONS)}, got {action!r}"
            )
        at = _num(e, "at_s", where, 0.0, duration)
        peer = int(_num(e, "peer", where, 0, peers - 1, integer=True))
        cores = None
        if action == "quota":
            if not quotas:
                raise ScenarioError(f"{where}: a quota event needs peers.quotas")
            cores = _num(e, "cores", where, 0.01, 1024)
        elif "cores" in e:
            raise ScenarioError(f"{where}.cores only applies to action = 'quota'")
        out.append(Event(at, str(action), peer, cores))
    out.sort(key=lambda ev: ev.at_s)
    _check_lifecycle(out)
    return tuple(out)


def _check_lifecycle(events: list[Event]) -> None:
    """A peer must be up to crash or stop, down to restart; peer 0 (the seed) must stay up."""
    down: set[int] = set()
    for ev in events:
        if ev.action in ("crash", "stop"):
            if ev.peer == 0:
                raise ScenarioError("events: peer 0 is the join seed and cannot crash or stop")
            if ev.peer in down:
                raise ScenarioError(f"events: peer {ev.peer} is already down at {ev.at_s:g} s")
            down.add(ev.peer)
        elif ev.action == "restart":
            if ev.peer not in down:
                raise ScenarioError(f"events: peer {ev.peer} is not down at {ev.at_s:g} s")
            down.discard(ev.peer)


def check_policies(raw: Any) -> tuple[str, ...]:
    """A non-empty list of distinct runtime policy names."""
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("policies must be a non-empty array of policy names")
    for p in raw:
        if p not in POLICIES:
            raise ScenarioError(f"policies: unknown policy {p!r}; known: {list(POLICIES)}")
    if len(set(raw)) != len(raw):
        raise ScenarioError("policies: each policy may appear once")
    return tuple(str(p) for p in raw)


def parse_scenario(data: Mapping[str, Any], name: str = "scenario") -> Scenario:
    """Check a scenario mapping (as TOML gives it); raises :class:`ScenarioError`."""
    _check_keys(data, {"name", "seed", "policies", "peers", "workload", "events"}, "scenario")
    peers_t = _table(data, "peers", "")
    _check_keys(peers_t, {"count", "quotas", "threads"}, "peers")
    n = int(_num(peers_t, "count", "peers", 1, MAX_PEERS, integer=True))
    raw_q = peers_t.get("quotas")
    quotas: tuple[float, ...] | None = None
    if raw_q is not None:
        if not isinstance(raw_q, list) or not raw_q:
            raise ScenarioError("peers.quotas must be a non-empty array of CPU cores per peer")
        quotas = tuple(
            _num({"q": q}, "q", f"peers.quotas[{i}]", 0.01, 1024) for i, q in enumerate(raw_q)
        )
    threads = int(_num(peers_t, "threads", "peers", 1, 64, 1, integer=True))
    wl = _table(data, "workload", "")
    _check_keys(wl, {"duration_s", "rate_per_s", "deadline_s", "kinds"}, "workload")
    duration = _num(wl, "duration_s", "workload", 1.0, MAX_DURATION_S)
    rate = _num(wl, "rate_per_s", "workload", 0.01, MAX_RATE)
    deadline = _num(wl, "deadline_s", "workload", 0.1, 3600.0, 30.0)
    sname = data.get("name", name)
    if not isinstance(sname, str) or not sname:
        raise ScenarioError("name must be a non-empty string")
    return Scenario(
        name=sname,
        seed=int(_num(data, "seed", "scenario", 0, 2**31 - 1, 0, integer=True)),
        peers=n,
        quotas=quotas,
        threads=threads,
        duration_s=duration,
        rate_per_s=rate,
        deadline_s=deadline,
        kinds=_kinds(wl.get("kinds")),
        events=_events(data.get("events"), n, duration, quotas is not None),
        policies=check_policies(data.get("policies", ["onnx", "local"])),
    )


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    data = load_toml_file(p, "scenario", ScenarioError)
    try:
        return parse_scenario(data, name=p.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None


def schedule(sc: Scenario) -> list[Planned]:
    """The seeded request schedule: Poisson arrivals over the duration, kinds by weight."""
    rng = random.Random(sc.seed)
    weights = [k.weight for k in sc.kinds]
    out: list[Planned] = []
    t = rng.expovariate(sc.rate_per_s)
    while t < sc.duration_s:
        kind = rng.choices(range(len(sc.kinds)), weights=weights)[0]
        out.append(
            Planned(
                index=len(out),
                at_s=t,
                kind=kind,
                origin_u=rng.random(),
                seed=rng.randrange(2**31),
                label=rng.randrange(10),
            )
        )
        t += rng.expovariate(sc.rate_per_s)
    return out
