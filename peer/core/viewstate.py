"""Gossip view -> planner input. Pure: the caller passes ``now`` and this peer's own state.

Remote peers: the gossiped backlog is aged forward by the age of its metadata (a queue drains
one second per second), this origin's own dispatches since that metadata was published come
from the ``DispatchLedger``, and compute cost ``(a, c)`` is this peer's calibrated shape scaled
by the published capacity (``peer.core.costs.remote_cost``). Links: this peer's own estimate
(``peer.core.links``) first, then a rate gossiped by either end, then a default. Peers with
another model are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peer.core.costs import CostTracker, remote_cost
from peer.core.links import LinkEstimate
from peer.core.planner import DEFAULT_BYTES_PER_S, DEFAULT_RTT_S, PeerState

DEFAULT_BW = DEFAULT_BYTES_PER_S  # bytes/s until a measurement


def states_from_view(
    view: Any,
    *,
    me: str,
    my_addr: tuple[str, int],
    my_wait_s: float,
    cost: CostTracker,
    ledger: Any,
    now: float,
    model_id: str,
    links: Mapping[str, LinkEstimate] | None = None,
    exclude: Sequence[str] = (),
) -> list[PeerState]:
    links = links or {}
    out = [
        PeerState(
            name=me,
            is_self=True,
            addr=my_addr,
            wait_s=max(my_wait_s, 0.0),
            view_age_s=0.0,
            a_s=cost.a,
            c_s=cost.c,
        )
    ]
    for p in view.alive():
        if p.name == me or p.name in exclude or p.meta.model_id != model_id:
            continue
        age = max(float(p.meta_age_s), 0.0)
        a, c = remote_cost(cost, p.meta.capacity)
        link = links.get(p.name)
        bw = (
            (link.bytes_per_s if link is not None else None)
            or view.bandwidth(me, p.name)
            or view.bandwidth(p.name, me)
            or DEFAULT_BW
        )
        out.append(
            PeerState(
                name=p.name,
                is_self=False,
                addr=(str(p.meta.rpc_addr[0]), int(p.meta.rpc_addr[1])),
                wait_s=max(p.meta.queued_s - age, 0.0),
                view_age_s=age,
                a_s=a,
                c_s=c,
                rtt_s=link.rtt_s if link is not None else DEFAULT_RTT_S,
                bytes_per_s=float(bw),
                own_pending_s=float(ledger.pending(p.name, now - age))
                if ledger is not None
                else 0.0,
            )
        )
    return out
