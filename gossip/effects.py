"""The effects a core returns for its driver to carry out."""

from __future__ import annotations

from typing import NamedTuple

from gossip.view import Addr, PeerStatus


class Send(NamedTuple):
    """Send one datagram."""

    addr: Addr
    data: bytes


class PushPullCall(NamedTuple):
    """Open a stream to `addr`, send `payload`, pass the reply to `push_pull_reply`."""

    addr: Addr
    payload: bytes
    join: bool


class Notify(NamedTuple):
    """A peer's status or metadata changed."""

    name: str
    status: PeerStatus
    incarnation: int
    meta_version: int


class LoadAnswer(NamedTuple):
    """A peer answered a `request_load` probe: its load (just updated) is fresh."""

    name: str
    seq: int


Effect = Send | PushPullCall | Notify | LoadAnswer
