"""Domain randomisation around what the runtime measures: small real-like clusters for training.

The synthetic fleet (:func:`policy.fleet.sim.make_trace`) draws speeds around the torch-era
reference costs. Real clusters (``amcoedge scenario run``, ``scenario sim --fit``) differ: the
onnx engine's fixed per-step cost ``a`` is small beside its per-image cost ``c`` under load,
CPU quotas make peers 1-4x slower, machine contention slows every peer alike (measured 1.4x the
engine's own calibration on a busy 2-core host), a remote share pays tens of milliseconds of
RPC and dispatch, every request pays an HTTP/planning overhead, the runtime refreshes load just
before deciding (view ages of milliseconds, sometimes more) and never tells the policy a
deadline. :func:`randomised_trace` draws clusters and workloads around those measured values
(:data:`MEASURED`), seeded, so a policy trained on them does not overfit one cluster.

A share of the episodes (``host_prob``, ``amcoedge policy train --host-frac``; 0 by default)
puts the peers on one shared host (:mod:`policy.fleet.host`) of 0.5-1.0x the cores their
quotas add up to, as the scenarios' peers share this machine's two cores: there every extra
peer a request recruits slows the others, and the origin sees costs through the runtime's
EWMA of what its shares took.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy.fleet.sim import SimConfig, Trace

# Measured on this project's clusters (issue 15): the onnx engine's calibration (1 thread) on a
# loaded host, the per-remote-share and per-request overheads, and the refreshed view age.
# Quiet host figures from the brief: a ~6 ms; under load 7.4 ms, c 18.6 ms.
MEASURED = {
    "a_s": (0.002, 0.010),
    "c_over_a": (0.3, 3.0),
    "setup_s": (0.005, 0.05),
    "overhead_s": (0.01, 0.12),
    "view_age_s": (0.0, 0.1),
}
QUOTAS = (1.0, 0.75, 0.5, 0.25)
PEERS = (2, 3, 4, 5, 6, 8)
PEER_WEIGHTS = (1.0, 2.0, 3.0, 1.5, 1.0, 0.7)
IMAGES = (1, 2, 4, 8)
STEPS = (20, 30, 50)
# Links (issue 17): the scenarios' tbf rates, Mbit/s (0: the LAN/loopback, read at ~1 GB/s), and
# the bytes a unit moves each way (a digit's reply ... a repair tile with its canvas share).
LINK_MBIT = (0.0, 100.0, 20.0, 10.0, 2.0, 1.0)
LINK_WEIGHTS = (0.55, 0.15, 0.1, 0.08, 0.07, 0.05)
LAN_BYTES_PER_S = 1e9
PAYLOAD_BYTES = (512.0, 2048.0, 8192.0, 16384.0)


@dataclass(frozen=True, slots=True)
class RandomiseConfig:
    n_requests: int = 600
    load_range: tuple[float, float] = (0.2, 1.3)  # offered work over capacity (no split cost)
    stale_prob: float = 0.15  # share of episodes with gossip-era view ages (up to stale_max_s)
    stale_max_s: float = 1.5
    contention_range: tuple[float, float] = (1.0, 3.0)  # every peer alike
    deadline_s: float = 20.0
    links_prob: float = 0.5  # share of episodes whose peers sit behind drawn link rates
    host_prob: float = 0.0  # share of episodes whose peers share one host's cores
    host_cores_frac: tuple[float, float] = (0.5, 1.0)  # the host's cores over the quotas' sum
    host_slowdown: tuple[float, float] = (1.0, 1.5)  # full-pace cost over the calibration


def randomised_trace(seed: int, rc: RandomiseConfig | None = None) -> Trace:
    """One seeded real-like cluster and workload (Poisson arrivals at a random load)."""
    rc = rc or RandomiseConfig()
    rng = np.random.default_rng([seed, 1515])
    w = np.asarray(PEER_WEIGHTS) / sum(PEER_WEIGHTS)
    n = int(rng.choice(np.asarray(PEERS), p=w))
    a0 = float(rng.uniform(*MEASURED["a_s"]))
    c0 = a0 * float(rng.uniform(*MEASURED["c_over_a"]))
    contention = float(rng.uniform(*rc.contention_range))
    quotas = rng.choice(np.asarray(QUOTAS), n)
    quotas[0] = max(quotas[0], 0.5)  # like the scenarios: at least one reasonable peer
    jitter = rng.uniform(0.85, 1.15, n)  # per-peer calibration error
    host_cores, contention = _host(seed, quotas, contention, rc)
    k = contention * jitter / quotas
    a = a0 * k
    c = c0 * k
    setup = float(rng.uniform(*MEASURED["setup_s"]))
    overhead = rng.uniform(*MEASURED["overhead_s"], n)
    if rng.random() < rc.stale_prob:
        age = float(rng.uniform(0.1, rc.stale_max_s))
    else:
        age = float(rng.uniform(*MEASURED["view_age_s"]))
    r = rc.n_requests
    images = rng.choice(np.asarray(IMAGES), r).astype(np.int64)
    steps = rng.choice(np.asarray(STEPS), r).astype(np.int64)
    # capacity in requests/s if each request ran whole on one peer, spread proportionally
    mean_work = float(np.mean(steps * (a0 + c0 * images)))
    capacity = float(np.sum(1.0 / (contention * jitter / quotas))) / mean_work
    if host_cores is not None:  # the host caps what the peers can do together
        capacity *= min(1.0, host_cores / float(np.sum(quotas)))
    load = float(rng.uniform(*rc.load_range))
    times = np.cumsum(rng.exponential(1.0 / (load * capacity), r))
    bw, payload = _links(seed, n, rc.links_prob)
    cfg = SimConfig(
        n_peers=n,
        load=load,
        staleness_s=age,
        n_requests=r,
        warmup_frac=0.05,
        rtt_s=0.0,
        setup_s=setup,
        bytes_per_image=payload,
        crash_rate=0.0,
        snapshot_s=min(0.05, max(age, 0.005)),
    )
    period = 2.0 * age
    return Trace(
        cfg=cfg,
        speed=np.ones(n),
        bw=bw,
        times=times,
        origin_u=rng.random(r),
        images=images,
        steps=steps,
        pixels=np.ones(r),
        deadline=np.full(r, rc.deadline_s),
        phase=rng.uniform(0.0, period, (n, n)) if period > 0 else np.zeros((n, n)),
        crashes=[[] for _ in range(n)],
        a_s=a,
        c_s=c,
        overhead_s=overhead,
        replan_lost=True,
        host_cores=host_cores,
        demand=quotas.astype(float) if host_cores is not None else None,
    )


def _host(
    seed: int, quotas: np.ndarray, contention: float, rc: RandomiseConfig
) -> tuple[float | None, float]:
    """Whether the episode's peers share one host: its cores and the peers' full-pace slowdown.

    On a shared host the contention is the host's (:mod:`policy.fleet.host`), so the drawn
    uniform slowdown gives way to the machine's own (measured 1.3-1.45x the calibration at
    full pace on this project's 2-core host). A generator of its own, as for the links."""
    rng = np.random.default_rng([seed, 1515, 15])
    if rng.random() >= rc.host_prob:
        return None, contention
    cores = float(rng.uniform(*rc.host_cores_frac)) * float(np.sum(quotas))
    return cores, float(rng.uniform(*rc.host_slowdown))


def _links(seed: int, n: int, prob: float) -> tuple[np.ndarray, float]:
    """Per-pair link rates (bytes/s; a pair runs at its slower end) and the bytes per unit.

    A generator of its own, so the cluster and workload drawn for a seed stay as they were."""
    rng = np.random.default_rng([seed, 1515, 17])
    if rng.random() >= prob:
        return np.full((n, n), LAN_BYTES_PER_S), 512.0
    w = np.asarray(LINK_WEIGHTS) / sum(LINK_WEIGHTS)
    mbit = rng.choice(np.asarray(LINK_MBIT), n, p=w)
    rate = np.where(mbit > 0, mbit * 1e6 / 8.0, LAN_BYTES_PER_S)
    bw = np.minimum(rate[:, None], rate[None, :])
    return bw, float(rng.choice(np.asarray(PAYLOAD_BYTES)))
