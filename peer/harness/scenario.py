"""Scenario files: parse and check them, and turn them into a seeded request schedule.

A scenario (TOML, see ``examples/scenarios/``) names the peers (count, CPU quotas, network
placement and link rates), a workload (Poisson arrivals of generate and repair requests of a
few kinds), timed events (a peer crashes, leaves, comes back, or gets a different CPU quota; a
link gets a new rate, goes down or up; a set of peers is partitioned off, the partition heals)
and the policies to compare. Everything here is
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

PEER_ACTIONS: tuple[str, ...] = ("crash", "stop", "restart", "quota")
LINK_ACTIONS: tuple[str, ...] = ("link", "partition", "heal", "link_down", "link_up")
EVENT_ACTIONS: tuple[str, ...] = PEER_ACTIONS + LINK_ACTIONS
KIND_MODES: tuple[str, ...] = ("auto", "batch", "chain", "steps", "local")  # steps: chain
REPAIR_MODES: tuple[str, ...] = ("auto", "tile", "local", "fused")
REQUESTS: tuple[str, ...] = ("generate", "repair")
NETWORKS: tuple[str, ...] = ("loopback", "netns")
MAX_MBIT = 100_000.0
MAX_CANVAS = 128  # the runtime's default repair canvas limit (peer.core.config.Limits)
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
    request: str = "generate"  # or "repair": one size x size canvas, its centre masked
    size: int = 0  # repair canvas side in pixels (0 for generate)


@dataclass(frozen=True, slots=True)
class Link:
    """A peer's link rates in Mbit/s; None = not limited."""

    up_mbit: float | None = None
    down_mbit: float | None = None


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    action: str
    peer: int | None = None  # None for partition (``peers``) and heal
    cores: float | None = None
    peers: tuple[int, ...] = ()  # partition: the peers cut off from the others
    link: Link | None = None  # link: the new rates; a direction left None keeps its rate

    def describe(self) -> str:
        """``8s crash p1``, ``20s partition p3,p4``, ``12s link p2 up 20 down 20 Mbit``."""
        head = f"{self.at_s:g}s {self.action}"
        if self.action == "partition":
            return f"{head} " + ",".join(f"p{i}" for i in self.peers)
        if self.peer is None:
            return head
        if self.action == "quota":
            return f"{head} p{self.peer} {self.cores:g} cores"
        if self.link is not None:
            up, down = (
                "unchanged" if x is None else f"{x:g} Mbit"
                for x in (self.link.up_mbit, self.link.down_mbit)
            )
            return f"{head} p{self.peer} up {up} down {down}"
        return f"{head} p{self.peer}"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    peers: int
    quotas: tuple[float, ...] | None
    threads: int
    network: tuple[str, ...]  # per peer: "netns" (own namespace and address) or "loopback"
    links: tuple[Link, ...]  # per peer (namespaced peers only may be limited)
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
        _check_keys(k, {"request", "mode", "count", "steps", "weight", "size"}, where)
        request = k.get("request", "generate")
        if request not in REQUESTS:
            raise ScenarioError(f"{where}.request must be one of {list(REQUESTS)}, got {request!r}")
        steps = int(_num(k, "steps", where, 1, 1000, 20, integer=True))
        weight = _num(k, "weight", where, 1e-9, 1e9, 1.0)
        if request == "repair":
            mode = k.get("mode", "auto")
            if mode not in REPAIR_MODES:
                raise ScenarioError(
                    f"{where}.mode must be one of {list(REPAIR_MODES)} for a repair, got {mode!r}"
                )
            if "count" in k:
                raise ScenarioError(f"{where}.count: a repair is one canvas (use size)")
            size = int(_num(k, "size", where, 16, MAX_CANVAS, integer=True))
            out.append(Kind(str(mode), 1, steps, weight, "repair", size))
            continue
        mode = k.get("mode", "batch")
        if mode not in KIND_MODES:
            raise ScenarioError(f"{where}.mode must be one of {list(KIND_MODES)}, got {mode!r}")
        if "size" in k:
            raise ScenarioError(f"{where}.size only applies to request = 'repair'")
        count = int(_num(k, "count", where, 1, 64, 8, integer=True))
        out.append(Kind(str(mode), count, steps, weight))
    return tuple(out)


def _peer_index(e: Mapping[str, Any], key: str, where: str, peers: int) -> int:
    return int(_num(e, key, where, 0, peers - 1, integer=True))


def _rates(t: Mapping[str, Any], where: str, required: bool) -> Link:
    """``rate_mbit`` (both ways) or ``up_mbit`` and/or ``down_mbit``."""
    has = [k for k in ("rate_mbit", "up_mbit", "down_mbit") if k in t]
    if "rate_mbit" in has and len(has) > 1:
        raise ScenarioError(f"{where}: give rate_mbit (both ways) or up_mbit/down_mbit, not both")
    if required and not has:
        raise ScenarioError(f"{where}.rate_mbit (or up_mbit/down_mbit) is required")
    if "rate_mbit" in t:
        r = _num(t, "rate_mbit", where, 0.01, MAX_MBIT)
        return Link(r, r)
    up = _num(t, "up_mbit", where, 0.01, MAX_MBIT) if "up_mbit" in t else None
    down = _num(t, "down_mbit", where, 0.01, MAX_MBIT) if "down_mbit" in t else None
    return Link(up, down)


def _events(
    raw: Any, peers: int, duration: float, quotas: bool, network: tuple[str, ...]
) -> tuple[Event, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError("events must be an array of tables ([[events]])")
    out = []
    namespaced = [i for i, n in enumerate(network) if n == "netns"]
    for i, e in enumerate(raw):
        where = f"events[{i}]"
        if not isinstance(e, Mapping):
            raise ScenarioError(f"{where} must be a table")
        action = e.get("action")
        if action not in EVENT_ACTIONS:
            raise ScenarioError(
                f"{where}.action must be one of {list(EVENT_ACTIONS)}, got {action!r}"
            )
        allowed = {"at_s", "action"} | {
            "crash": {"peer"},
            "stop": {"peer"},
            "restart": {"peer"},
            "quota": {"peer", "cores"},
            "link": {"peer", "rate_mbit", "up_mbit", "down_mbit"},
            "partition": {"peers"},
            "heal": set(),
            "link_down": {"peer"},
            "link_up": {"peer"},
        }[action]
        _check_keys(e, allowed, f"{where} (action = {action!r})")
        at = _num(e, "at_s", where, 0.0, duration)
        if action in LINK_ACTIONS and not namespaced:
            raise ScenarioError(f"{where}: a {action} event needs peers in namespaces (network)")
        if action == "partition":
            group = e.get("peers")
            if not isinstance(group, list) or not group:
                raise ScenarioError(f"{where}.peers must be a non-empty array of peer indices")
            idx = [
                _peer_index({"p": p}, "p", f"{where}.peers[{k}]", peers)
                for k, p in enumerate(group)
            ]
            if len(set(idx)) != len(idx):
                raise ScenarioError(f"{where}.peers: each peer may appear once")
            for p in idx:
                if network[p] != "netns":
                    raise ScenarioError(f"{where}.peers: p{p} is not in a namespace (network)")
            if len(set(namespaced) - set(idx)) == 0:
                raise ScenarioError(
                    f"{where}.peers: a partition needs a namespaced peer on the other side"
                )
            out.append(Event(at, "partition", peers=tuple(sorted(idx))))
            continue
        if action == "heal":
            out.append(Event(at, "heal"))
            continue
        peer = _peer_index(e, "peer", where, peers)
        if action in LINK_ACTIONS and network[peer] != "netns":
            raise ScenarioError(f"{where}.peer: p{peer} is not in a namespace (network)")
        if action == "quota":
            if not quotas:
                raise ScenarioError(f"{where}: a quota event needs peers.quotas")
            out.append(Event(at, "quota", peer, cores=_num(e, "cores", where, 0.01, 1024)))
        elif action == "link":
            out.append(Event(at, "link", peer, link=_rates(e, where, required=True)))
        else:
            out.append(Event(at, str(action), peer))
    out.sort(key=lambda ev: ev.at_s)
    _check_lifecycle(out)
    return tuple(out)


def _check_lifecycle(events: list[Event]) -> None:
    """A peer must be up to crash or stop, down to restart; peer 0 (the seed) must stay up.

    A link goes down only when up and the other way round; one partition at a time, healed
    before the next."""
    down: set[int] = set()
    links_down: set[int] = set()
    partitioned = False
    for ev in events:
        p = -1 if ev.peer is None else ev.peer  # every action but partition/heal has one
        if ev.action == "partition":
            if partitioned:
                raise ScenarioError(f"events: a partition is already in place at {ev.at_s:g} s")
            partitioned = True
        elif ev.action == "heal":
            if not partitioned:
                raise ScenarioError(f"events: no partition to heal at {ev.at_s:g} s")
            partitioned = False
        elif ev.action in ("link_down", "link_up"):
            if (p in links_down) == (ev.action == "link_down"):
                state = "down" if ev.action == "link_down" else "up"
                raise ScenarioError(f"events: p{p}'s link is already {state} at {ev.at_s:g} s")
            if ev.action == "link_down":
                links_down.add(p)
            else:
                links_down.discard(p)
        elif ev.action in ("crash", "stop"):
            if p == 0:
                raise ScenarioError("events: peer 0 is the join seed and cannot crash or stop")
            if p in down:
                raise ScenarioError(f"events: peer {p} is already down at {ev.at_s:g} s")
            down.add(p)
        elif ev.action == "restart":
            if p not in down:
                raise ScenarioError(f"events: peer {p} is not down at {ev.at_s:g} s")
            down.discard(p)


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
    _check_keys(peers_t, {"count", "quotas", "threads", "network", "links"}, "peers")
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
    network = _network(peers_t.get("network", "loopback"), n)
    links = _links(peers_t.get("links"), n, network)
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
        network=network,
        links=links,
        duration_s=duration,
        rate_per_s=rate,
        deadline_s=deadline,
        kinds=_kinds(wl.get("kinds")),
        events=_events(data.get("events"), n, duration, quotas is not None, network),
        policies=check_policies(data.get("policies", ["onnx", "local"])),
    )


def _network(raw: Any, n: int) -> tuple[str, ...]:
    """One placement for every peer (a string) or one per peer (an array of ``count``)."""
    if isinstance(raw, str):
        raw = [raw] * n
    if not isinstance(raw, list) or len(raw) != n:
        raise ScenarioError(
            f"peers.network must be one of {list(NETWORKS)} or an array of {n} of them"
        )
    for i, v in enumerate(raw):
        if v not in NETWORKS:
            raise ScenarioError(f"peers.network[{i}] must be one of {list(NETWORKS)}, got {v!r}")
    return tuple(str(v) for v in raw)


def _links(raw: Any, n: int, network: tuple[str, ...]) -> tuple[Link, ...]:
    """``peers.links = [{peer = 2, rate_mbit = 20}, {peer = 3, up_mbit = 5, down_mbit = 50}]``."""
    out = [Link() for _ in range(n)]
    if raw is None:
        return tuple(out)
    if not isinstance(raw, list):
        raise ScenarioError("peers.links must be an array of tables {peer, rate_mbit | up/down}")
    seen: set[int] = set()
    for k, t in enumerate(raw):
        where = f"peers.links[{k}]"
        if not isinstance(t, Mapping):
            raise ScenarioError(f"{where} must be a table")
        _check_keys(t, {"peer", "rate_mbit", "up_mbit", "down_mbit"}, where)
        i = _peer_index(t, "peer", where, n)
        if i in seen:
            raise ScenarioError(f"{where}.peer: p{i} has a link already")
        if network[i] != "netns":
            raise ScenarioError(
                f"{where}.peer: p{i} is not in a namespace (peers.network); only a namespaced "
                "peer has a link to limit"
            )
        seen.add(i)
        out[i] = _rates(t, where, required=True)
    return tuple(out)


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
