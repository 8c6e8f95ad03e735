"""Authenticated framing with replay protection for datagrams and push-pull payloads.

With a cluster key every datagram and push-pull payload is framed as

    MAGIC_AUTH | tag (16) | boot (u32) | seq (u64) | ts_ms (u64) | len (u8) | sender | body

where `tag` is HMAC-SHA256(key, everything after the tag) truncated to 128 bits (RFC 4868's
HMAC-SHA-256-128; a forger must guess 2^128 values) to keep datagrams small. `sender` is the sending peer's name
(so a receiver knows, with the key's authority, who sent it), `boot` a random id of the
sender's process, `seq` a per-process counter and `ts_ms` the sender's wall clock.

A receiver accepts a frame only if the tag verifies, the timestamp lies within `skew_s` of its
own wall clock (a stale or far-future frame is a `StaleError`), and `(sender, boot, seq)` was not
accepted before: per (sender, boot) it keeps the highest seq and a bitmap of the `WINDOW`
sequence numbers below it (the IPsec/DTLS anti-replay window), so reordered datagrams pass and
a replay is a `ReplayError`. Window states not touched for `2 x skew_s` are forgotten: every frame
they accepted is stale by then, so forgetting cannot re-admit one. A receiver that restarts has
no window, so a frame recorded less than `skew_s` ago can be replayed to it once; that frame was
genuine and recent, which is what the clock window bounds.

Wall-clock time is an argument, never read here. Clocks of peers must agree within `skew_s`
(NTP does far better); the driver derives wall time from its monotonic clock so a stepped clock
cannot make a peer accept old frames.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from gossip.errors import AuthError, ConfigError, DecodeError, ReplayError, StaleError
from gossip.view import MAX_NAME

MAGIC_AUTH = b"\xa9"
TAG_LEN = 16
_HEAD = struct.Struct(">IQQB")
WINDOW = 1024
MAX_WINDOWS = 4096
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class _Window:
    __slots__ = ("bits", "last", "top")

    def __init__(self, seq: int, wall: float) -> None:
        self.top = seq
        self.bits = 1  # bit i set: seq top - i was accepted
        self.last = wall

    def accept(self, seq: int) -> bool:
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = seq
            return True
        back = self.top - seq
        if back >= WINDOW or (self.bits >> back) & 1:
            return False
        self.bits |= 1 << back
        return True


class Authenticator:
    """Seals frames as one sender and opens frames from any sender of the cluster."""

    __slots__ = ("_boot", "_key", "_name", "_seq", "_skew_s", "_windows", "overhead")

    def __init__(self, key: bytes, name: str, boot: int, skew_s: float) -> None:
        if not isinstance(key, bytes) or not key:
            raise ConfigError("secret must be non-empty bytes")
        raw = name.encode() if isinstance(name, str) else b""
        if not 0 < len(name) <= MAX_NAME or len(raw) > 255:
            raise ConfigError("sender name must be a non-empty string of <= 64 chars")
        if not 0 <= boot <= _U64 or not skew_s > 0:
            raise ConfigError("boot must be an int >= 0 and skew_s > 0")
        boot &= _U32
        self._key = key
        self._name = raw
        self._boot = boot
        self._seq = 0
        self._skew_s = skew_s
        self._windows: dict[tuple[str, int], _Window] = {}
        self.overhead = 1 + TAG_LEN + _HEAD.size + len(raw)

    def seal(self, body: bytes, wall: float) -> bytes:
        self._seq += 1
        ts = min(_U64, max(0, int(wall * 1000)))
        signed = _HEAD.pack(self._boot, self._seq, ts, len(self._name)) + self._name + body
        tag = hmac.new(self._key, signed, hashlib.sha256).digest()[:TAG_LEN]
        return MAGIC_AUTH + tag + signed

    def open(self, data: bytes, wall: float) -> tuple[str, bytes]:
        """Verify a frame (magic already checked); return (sender, body)."""
        if len(data) < 1 + TAG_LEN + _HEAD.size:
            raise DecodeError("short authenticated frame")
        tag, signed = data[1 : 1 + TAG_LEN], data[1 + TAG_LEN :]
        want = hmac.new(self._key, signed, hashlib.sha256).digest()[:TAG_LEN]
        if not hmac.compare_digest(tag, want):
            raise AuthError("bad HMAC tag")
        boot, seq, ts, n = _HEAD.unpack_from(signed)
        end = _HEAD.size + n
        try:
            sender = signed[_HEAD.size : end].decode()
        except UnicodeDecodeError:
            raise DecodeError("bad sender name") from None
        if len(signed) < end or not 0 < len(sender) <= MAX_NAME:
            raise DecodeError("bad sender name")
        if abs(ts / 1000 - wall) > self._skew_s:
            raise StaleError(f"timestamp {ts / 1000 - wall:+.1f} s from our clock")
        key = (sender, boot)
        w = self._windows.get(key)
        if w is None:
            self._make_room(wall)
            self._windows[key] = _Window(seq, wall)
        elif not w.accept(seq):
            raise ReplayError(f"replayed frame {seq} from {sender!r}")
        else:
            w.last = wall
        return sender, signed[end:]

    def _make_room(self, wall: float) -> None:
        if len(self._windows) < MAX_WINDOWS:
            return
        horizon = wall - 2 * self._skew_s
        for k in [k for k, w in self._windows.items() if w.last < horizon]:
            del self._windows[k]
        while len(self._windows) >= MAX_WINDOWS:
            del self._windows[min(self._windows, key=lambda k: self._windows[k].last)]
