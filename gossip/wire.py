"""Wire format: msgpack messages, piggybacked broadcasts and optional HMAC-SHA256 framing.

A datagram is `MAGIC_PLAIN + body` or, with a cluster key, the authenticated frame of
`gossip.auth` (HMAC-SHA256 over the sender's name, a replay counter, a timestamp and the body;
see there). The body is a stream of msgpack arrays: one primary message (ping,
ack, nack, ping-req or gossip) followed by any number of piggybacked broadcasts (alive, suspect,
dead, left, load). Broadcasts are encoded once when queued, so building a datagram is a
concatenation. A push-pull payload uses the same framing around one msgpack map. Everything
decoded from the network is validated here; anything wrong raises DecodeError or AuthError.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import msgpack

from gossip.auth import MAGIC_AUTH, TAG_LEN, Authenticator  # noqa: F401 (TAG_LEN re-exported)
from gossip.errors import AuthError, ConfigError, DecodeError, ForgedError, OutOfRangeError
from gossip.view import MAX_NAME, STATUSES, Addr, PeerMeta, PeerStatus

MAGIC_PLAIN = b"\xa7"
MAGIC_SIGNED = b"\xa8"  # the old framing without replay protection: refused
MAX_ITEMS = 256
MAX_GONE = 4096

PING, ACK, NACK, PING_REQ, GOSSIP, ANNOUNCE = 1, 2, 3, 4, 5, 6
ALIVE, SUSPECT, DEAD, LEFT, LOAD, SAMPLE = 10, 11, 12, 13, 15, 16
MAX_SAMPLE_AGE_MS = 3_600_000
_SAMPLE_MAX = 1 << 62  # quantised load values saturate here (a capacity of 4.6e15 units)


class Ping(NamedTuple):
    seq: int
    target: str
    src: str
    src_addr: Addr


class Ack(NamedTuple):
    seq: int
    src: str


class Nack(NamedTuple):
    seq: int
    src: str


class PingReq(NamedTuple):
    seq: int
    target: str
    target_addr: Addr
    src: str
    src_addr: Addr


class Gossip(NamedTuple):
    src: str


class Announce(NamedTuple):
    """A joined peer introduces itself directly; receivers do not re-gossip it."""

    src: str


class Digest(NamedTuple):
    """A versioned metadata digest: newer version wins."""

    name: str
    version: int
    meta: PeerMeta
    bandwidth: tuple[tuple[str, float], ...]


class Load(NamedTuple):
    """A load update: the changing part of a digest (the rest travels with Alive)."""

    name: str
    version: int
    capacity: float
    queued_s: float
    active_shares: int
    bandwidth: tuple[tuple[str, float], ...]

    @staticmethod
    def of(d: Digest) -> Load:
        m = d.meta
        return Load(d.name, d.version, m.capacity, m.queued_s, m.active_shares, d.bandwidth)


class LoadSample(NamedTuple):
    """A peer's load as it was `age_s` ago, riding on probes, acks and every other datagram.

    Unversioned load news, fresher than digest versions (which are rate-limited): each peer
    puts its own current load (age 0) on every datagram it sends, and forwards a few fresh
    samples of others (their age grown by the time it held them). `version` is the digest
    version the peer had published when the sample was taken, so a receiver can tell a newer
    digest from an older one. Quantised on the wire to 1 ms and 0.001 capacity units.
    """

    name: str
    version: int
    age_s: float
    capacity: float
    queued_s: float
    active_shares: int


class Alive(NamedTuple):
    name: str
    incarnation: int
    digest: Digest


class Suspect(NamedTuple):
    name: str
    incarnation: int
    src: str


class Dead(NamedTuple):
    name: str
    incarnation: int
    src: str


class Left(NamedTuple):
    name: str
    incarnation: int


Primary = Ping | Ack | Nack | PingReq | Gossip | Announce
Broadcast = Alive | Suspect | Dead | Left | Load | LoadSample


class MemberState(NamedTuple):
    """One entry of a push-pull full state."""

    name: str
    incarnation: int
    status: PeerStatus
    digest: Digest


class PushPull(NamedTuple):
    src: str
    join: bool
    members: tuple[MemberState, ...]
    gone: tuple[tuple[str, int], ...] = ()
    """Peers the sender declared dead and has since forgotten, with their incarnations: the
    subject of one refutes at once (a healed partition, a restart)."""


_PACKER_OPTS: dict[str, Any] = {"use_bin_type": True}


def _pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, **_PACKER_OPTS)
    return out


# -- encoding ---------------------------------------------------------------------------------


def _enc_addr(addr: Addr) -> list[Any]:
    return [addr[0], addr[1]]


def _flat_row(row: tuple[tuple[str, float], ...]) -> list[Any]:
    flat: list[Any] = []
    for peer, rate in row:
        flat.append(peer)
        flat.append(rate)
    return flat


def _digest_list(d: Digest) -> list[Any]:
    m = d.meta
    host = m.gossip_addr[0]
    flat = _flat_row(d.bandwidth)
    return [
        d.name,
        d.version,
        host,
        m.gossip_addr[1],
        None if m.rpc_addr[0] == host else m.rpc_addr[0],
        m.rpc_addr[1],
        None if m.http_addr[0] == host else m.http_addr[0],
        m.http_addr[1],
        m.version,
        m.model_id,
        m.capacity,
        m.queued_s,
        m.active_shares,
        flat,
    ]


def encode_primary(msg: Primary) -> bytes:
    if isinstance(msg, Ping):
        return _pack([PING, msg.seq, msg.target, msg.src, _enc_addr(msg.src_addr)])
    if isinstance(msg, Ack):
        return _pack([ACK, msg.seq, msg.src])
    if isinstance(msg, Nack):
        return _pack([NACK, msg.seq, msg.src])
    if isinstance(msg, PingReq):
        return _pack(
            [
                PING_REQ,
                msg.seq,
                msg.target,
                _enc_addr(msg.target_addr),
                msg.src,
                _enc_addr(msg.src_addr),
            ]
        )
    if isinstance(msg, Announce):
        return _pack([ANNOUNCE, msg.src])
    return _pack([GOSSIP, msg.src])


def encode_broadcast(msg: Broadcast) -> bytes:
    if isinstance(msg, Alive):
        return _pack([ALIVE, msg.name, msg.incarnation, _digest_list(msg.digest)])
    if isinstance(msg, Suspect):
        return _pack([SUSPECT, msg.name, msg.incarnation, msg.src])
    if isinstance(msg, Dead):
        return _pack([DEAD, msg.name, msg.incarnation, msg.src])
    if isinstance(msg, Left):
        return _pack([LEFT, msg.name, msg.incarnation])
    if isinstance(msg, LoadSample):
        return _pack(
            [
                SAMPLE,
                msg.name,
                msg.version,
                min(MAX_SAMPLE_AGE_MS, round(msg.age_s * 1000)),
                min(_SAMPLE_MAX, round(msg.capacity * 1000)),
                min(_SAMPLE_MAX, round(msg.queued_s * 1000)),
                min(2**31, msg.active_shares),
            ]
        )
    return _pack(
        [
            LOAD,
            msg.name,
            msg.version,
            msg.capacity,
            msg.queued_s,
            msg.active_shares,
            _flat_row(msg.bandwidth),
        ]
    )


def encode_push_pull(pp: PushPull) -> bytes:
    return _pack(
        {
            "f": pp.src,
            "j": pp.join,
            "m": [
                [m.name, m.incarnation, STATUSES.index(m.status), _digest_list(m.digest)]
                for m in pp.members
            ],
            "g": [x for name, inc in pp.gone for x in (name, inc)],
        }
    )


# -- decoding ---------------------------------------------------------------------------------


def _int(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise DecodeError(f"bad integer {v!r}")
    return v


MAX_INCARNATION = 1 << 62
"""The highest incarnation the protocol ever uses, far inside the wire's signed 64-bit range.

Refutation saturates here (`min(MAX_INCARNATION, x + 1)`), so no peer ever sends a number the
wire cannot carry; anything above it was not sent by a correct peer and is refused on decoding.
Reaching it honestly takes 2^62 refutations."""


MAX_VERSION = MAX_INCARNATION
"""Digest versions obey the same bound (a peer jumps past a previous life's version)."""


def _incarnation(v: Any) -> int:
    n = _int(v)
    if n > MAX_INCARNATION:
        raise OutOfRangeError(f"incarnation {n} beyond {MAX_INCARNATION}")
    return n


def _version(v: Any) -> int:
    n = _int(v)
    if n > MAX_VERSION:
        raise OutOfRangeError(f"digest version {n} beyond {MAX_VERSION}")
    return n


def _name(v: Any) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        raise DecodeError("bad peer name")
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise DecodeError(f"bad number {v!r}")
    return float(v)


def _addr(v: Any) -> Addr:
    if not isinstance(v, list) or len(v) != 2:
        raise DecodeError("bad address")
    host = v[0]
    if not isinstance(host, str) or not 0 < len(host) <= 255:
        raise DecodeError("bad host")
    return (host, _int(v[1], 0, 65535))


def _row(flat: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(flat, list) or len(flat) % 2 or len(flat) > 2 * 1024:
        raise DecodeError("bad bandwidth row")
    return tuple((_name(flat[i]), _float(flat[i + 1])) for i in range(0, len(flat), 2))


_DIGEST_MEMO: dict[tuple[Any, ...], Digest] = {}


def _digest(v: Any) -> Digest:
    """A validated digest; memoised, since push-pulls carry the same digests again and again."""
    if not isinstance(v, list) or len(v) != 14 or not isinstance(v[13], list):
        raise DecodeError("bad digest")
    try:
        key = (*v[:13], *v[13])
        hit = _DIGEST_MEMO.get(key)
    except TypeError:  # an unhashable element: certainly malformed
        raise DecodeError("bad digest") from None
    if hit is not None:
        return hit
    d = _decode_digest(v)
    if len(_DIGEST_MEMO) >= _MEMO_MAX:
        _DIGEST_MEMO.clear()
    _DIGEST_MEMO[key] = d
    return d


def _decode_digest(v: list[Any]) -> Digest:
    name = _name(v[0])
    version = _version(v[1])
    host = v[2]
    if not isinstance(host, str) or not host:
        raise DecodeError("bad digest host")
    rhost = host if v[4] is None else v[4]
    hhost = host if v[6] is None else v[6]
    row = _row(v[13])
    try:
        meta = PeerMeta(
            name=name,
            gossip_addr=(host, v[3]),
            rpc_addr=(rhost, v[5]),
            http_addr=(hhost, v[7]),
            version=v[8],
            model_id=v[9],
            capacity=v[10],
            queued_s=v[11],
            active_shares=v[12],
        )
    except ConfigError as exc:
        raise DecodeError(f"bad digest: {exc}") from None
    return Digest(name, version, meta, row)


def _decode_primary(v: Any) -> Primary:
    if not isinstance(v, list) or not v:
        raise DecodeError("bad message")
    kind = v[0]
    n = len(v)
    if kind == PING and n == 5:
        return Ping(_int(v[1]), _name(v[2]), _name(v[3]), _addr(v[4]))
    if kind == ACK and n == 3:
        return Ack(_int(v[1]), _name(v[2]))
    if kind == NACK and n == 3:
        return Nack(_int(v[1]), _name(v[2]))
    if kind == PING_REQ and n == 6:
        return PingReq(_int(v[1]), _name(v[2]), _addr(v[3]), _name(v[4]), _addr(v[5]))
    if kind == ANNOUNCE and n == 2:
        return Announce(_name(v[1]))
    if kind == GOSSIP and n == 2:
        return Gossip(_name(v[1]))
    raise DecodeError(f"unknown primary message {kind!r}")


def _decode_sample(v: list[Any]) -> LoadSample:
    """The frequent one, checked inline: six bounded non-negative ints and a name."""
    name, version, age, cap, queued, shares = v[1], v[2], v[3], v[4], v[5], v[6]
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise DecodeError("bad peer name")
    if type(version) is int and version > MAX_VERSION:
        raise OutOfRangeError(f"digest version {version} beyond {MAX_VERSION}")
    for x, hi in (
        (version, MAX_VERSION),
        (age, MAX_SAMPLE_AGE_MS),
        (cap, _SAMPLE_MAX),
        (queued, _SAMPLE_MAX),
        (shares, 2**31),
    ):
        if type(x) is not int or not 0 <= x <= hi:
            raise DecodeError(f"bad load sample field {x!r}")
    return LoadSample(name, version, age / 1000, cap / 1000, queued / 1000, shares)


def _decode_broadcast(v: Any) -> Broadcast:
    if not isinstance(v, list) or not v:
        raise DecodeError("bad broadcast")
    kind = v[0]
    n = len(v)
    if kind == ALIVE and n == 4:
        d = _digest(v[3])
        if d.name != v[1]:
            raise DecodeError("alive digest names another peer")
        return Alive(d.name, _incarnation(v[2]), d)
    if kind == SUSPECT and n == 4:
        return Suspect(_name(v[1]), _incarnation(v[2]), _name(v[3]))
    if kind == DEAD and n == 4:
        return Dead(_name(v[1]), _incarnation(v[2]), _name(v[3]))
    if kind == LEFT and n == 3:
        return Left(_name(v[1]), _incarnation(v[2]))
    if kind == SAMPLE and n == 7:
        return _decode_sample(v)
    if kind == LOAD and n == 7:
        return Load(_name(v[1]), _version(v[2]), _float(v[3]), _float(v[4]), _int(v[5]), _row(v[6]))
    raise DecodeError(f"unknown broadcast {kind!r}")


_UNPACK_LIMITS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,
    "max_array_len": 4096,
    "max_map_len": 64,
    "max_str_len": 4096,
    "max_bin_len": 0,
    "max_ext_len": 0,
}

# Decoding is a pure function of the bytes, and the same broadcast reaches a peer many times
# (and, in the simulator, hundreds of peers in one process): memoise the validated result.
_MEMO: dict[bytes, Broadcast] = {}
_MEMO_MAX = 100_000


def _broadcast_from_raw(raw: bytes) -> Broadcast:
    if len(raw) > 1 and raw[1] == SAMPLE:  # samples differ every time (ages): not memoised
        return _decode_broadcast(msgpack.unpackb(raw, **_UNPACK_LIMITS))
    b = _MEMO.get(raw)
    if b is None:
        b = _decode_broadcast(msgpack.unpackb(raw, **_UNPACK_LIMITS))
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[raw] = b
    return b


class Datagram(NamedTuple):
    """A decoded datagram; `sender` is the authenticated sender's name (None without a key)."""

    sender: str | None
    primary: Primary
    broadcasts: list[Broadcast]


class Codec:
    """Frames and unframes datagrams and push-pull payloads.

    Without a secret a frame is `MAGIC_PLAIN + body`. With one it is the authenticated frame
    of `gossip.auth` (HMAC-SHA256, sender name, replay window, clock-skew window): `name` is
    the sender this codec seals as, `boot` its process id, `skew_s` the accepted clock skew.
    `wall` arguments are wall-clock seconds (passed in, never read here).
    """

    __slots__ = ("_auth", "overhead")

    def __init__(
        self, secret: bytes | None, name: str = "anonymous", boot: int = 0, skew_s: float = 60.0
    ) -> None:
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise ConfigError("secret must be non-empty bytes or None")
        self._auth = None if secret is None else Authenticator(secret, name, boot, skew_s)
        self.overhead = 1 if self._auth is None else self._auth.overhead

    @property
    def keyed(self) -> bool:
        return self._auth is not None

    def seal(self, body: bytes, wall: float = 0.0) -> bytes:
        if self._auth is None:
            return MAGIC_PLAIN + body
        return self._auth.seal(body, wall)

    def open(self, data: bytes, wall: float = 0.0) -> tuple[str | None, bytes]:
        """Verify the framing; return (authenticated sender or None, body).

        Raises AuthError (ReplayError, StaleError) or DecodeError.
        """
        if not data:
            raise DecodeError("empty datagram")
        magic = data[:1]
        if self._auth is None:
            if magic == MAGIC_PLAIN:
                return None, data[1:]
            if magic in (MAGIC_SIGNED, MAGIC_AUTH):
                raise AuthError("signed datagram but no cluster secret configured")
            raise DecodeError("bad magic byte")
        if magic == MAGIC_PLAIN:
            raise AuthError("unsigned datagram in an authenticated cluster")
        if magic == MAGIC_SIGNED:
            raise AuthError("signed datagram without replay protection (an older peer)")
        if magic != MAGIC_AUTH:
            raise DecodeError("bad magic byte")
        return self._auth.open(data, wall)

    def decode_datagram(self, data: bytes, wall: float = 0.0) -> Datagram:
        sender, body = self.open(data, wall)
        unpacker = msgpack.Unpacker(max_buffer_size=len(body) + 16, **_UNPACK_LIMITS)
        unpacker.feed(body)
        end = len(body)
        try:
            primary = _decode_primary(unpacker.unpack())
            items: list[Broadcast] = []
            pos = unpacker.tell()
            while pos < end:
                if len(items) >= MAX_ITEMS:
                    raise DecodeError("too many broadcasts in one datagram")
                unpacker.skip()
                nxt = unpacker.tell()
                items.append(_broadcast_from_raw(body[pos:nxt]))
                pos = nxt
        except DecodeError:
            raise
        except Exception as exc:  # msgpack raises assorted errors on hostile input
            raise DecodeError(f"bad msgpack: {type(exc).__name__}") from None
        if sender is not None and type(primary) is not Ack and primary.src != sender:
            # An ack may be relayed (its src is the probed peer); every other message is sent
            # by its src, so a mismatch is a key holder lying about who it is.
            raise ForgedError(f"{sender!r} sent a message signed as {primary.src!r}")
        return Datagram(sender, primary, items)

    def decode_push_pull(self, data: bytes, max_bytes: int, wall: float = 0.0) -> PushPull:
        if len(data) > max_bytes:
            raise DecodeError("push-pull payload too large")
        sender, body = self.open(data, wall)
        try:
            obj = msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
                max_bin_len=0,
                max_ext_len=0,
                max_array_len=1_000_000,
            )
        except Exception as exc:
            raise DecodeError(f"bad push-pull msgpack: {type(exc).__name__}") from None
        if not isinstance(obj, dict) or set(obj) != {"f", "j", "m", "g"}:
            raise DecodeError("bad push-pull map")
        src = _name(obj["f"])
        join = obj["j"]
        if not isinstance(join, bool) or not isinstance(obj["m"], list):
            raise DecodeError("bad push-pull fields")
        members = []
        for entry in obj["m"]:
            if not isinstance(entry, list) or len(entry) != 4:
                raise DecodeError("bad push-pull member")
            d = _digest(entry[3])
            if d.name != entry[0]:
                raise DecodeError("push-pull digest names another peer")
            status = STATUSES[_int(entry[2], 0, len(STATUSES) - 1)]
            members.append(MemberState(d.name, _incarnation(entry[1]), status, d))
        flat = obj["g"]
        if not isinstance(flat, list) or len(flat) % 2 or len(flat) > 2 * MAX_GONE:
            raise DecodeError("bad push-pull gone list")
        gone = tuple((_name(flat[i]), _incarnation(flat[i + 1])) for i in range(0, len(flat), 2))
        if sender is not None and sender != src:
            raise ForgedError(f"{sender!r} sent a push-pull signed as {src!r}")
        return PushPull(src, join, tuple(members), gone)
