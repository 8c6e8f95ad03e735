"""Limits on frames, calls and connections, as one frozen config with named presets.

Every field says why it has its default. Timeouts that close connections:

- ``auth_timeout``: a new connection must finish its handshake in time (with a secret: a
  successful ``auth.prove``; without one: its first request); also bounds a TLS handshake;
- ``idle_timeout``: a connection with no call running, none queued and no partial frame is
  closed after this long without a message (a client's pool reconnects on its next call);
- ``frame_timeout``: a frame must arrive whole within this long of its first byte.

Caps: ``max_connections`` for the whole server and ``max_connections_per_source`` for one
source address, so that a flood from one address cannot take every slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one connection accepts. Both sides of a connection should use the same limits."""

    # A whole frame (one msgpack-RPC message) may not exceed this; it is also the decoder's
    # buffer bound, so a peer can make us hold at most this many undecoded bytes.
    max_frame_bytes: int = field(default=32 * MiB)
    # Per-value bounds checked while decoding, before anything is allocated.
    max_bin_len: int = field(default=32 * MiB)
    max_str_len: int = field(default=1 * MiB)
    max_array_len: int = field(default=1_000_000)
    max_map_len: int = field(default=100_000)
    # Extension types are not part of this protocol; 0 refuses them.
    max_ext_len: int = field(default=0)
    # Calls a connection runs at once; further requests wait in a backlog of at most
    # ``max_backlog`` (reading from the socket pauses meanwhile), then get ``busy``.
    max_in_flight: int = field(default=64)
    max_backlog: int = field(default=256)
    # Request bytes the running calls of one connection may hold at once (one call always
    # runs); beyond it requests wait in the backlog like beyond ``max_in_flight``.
    max_in_flight_bytes: int = field(default=256 * MiB)
    # Seconds a frame may take from its first byte to its last (slowloris defence).
    frame_timeout: float | None = field(default=30.0)
    # Seconds a new connection has to finish its handshake: with a secret, to authenticate
    # (hello, challenge, prove: three round trips, milliseconds on any real network); without
    # one, to send its first request. 10 s is far above any honest handshake and bounds how
    # long a connection that says nothing holds a slot. Also the TLS handshake's bound.
    auth_timeout: float | None = field(default=10.0)
    # Seconds a connection with nothing running, nothing queued and no partial frame may stay
    # open without a message. Peers keep one pooled connection to each other and reconnect
    # lazily (a handshake costs about a millisecond), so closing after 2 minutes costs little
    # and bounds how long an idle flood holds slots. The pool retires its own idle connections
    # at half this (``RpcPool``), before the server would.
    idle_timeout: float | None = field(default=120.0)
    # Connections a server holds at once; more are refused with ``busy``.
    max_connections: int = field(default=1024)
    # Connections one source address may hold at once; more from that address are refused
    # with ``busy``. A peer holds one pooled connection to each other peer; 64 leaves room
    # for tools and for several peers behind one address (NAT, one test machine), while a
    # flood from one address takes at most 64 of the ``max_connections`` slots.
    max_connections_per_source: int = field(default=64)
    # Before a connection to a server with a secret has authenticated, no frame may exceed
    # this (the handshake's frames are under 200 bytes): an outsider cannot make the server
    # buffer ``max_frame_bytes`` per connection. (The smaller of the two applies.)
    max_preauth_frame_bytes: int = field(default=64 * 1024)
    # Default per-call timeout in seconds when a call does not give one (None: no timeout).
    call_timeout: float | None = field(default=60.0)
    # Transport write buffer high-water mark; writers wait in ``drain()`` above it.
    write_high_water: int = field(default=1 * MiB)
    # TCP keepalive: probe an idle connection after this many seconds (then every third of
    # it, three times) so a peer that vanished without a FIN/RST is noticed. None: off.
    keepalive_idle: float | None = field(default=10.0)
    # Kernel socket buffers (SO_SNDBUF/SO_RCVBUF) in bytes; None keeps the OS autotuning.
    # Large values let a whole frame sit in the kernel, so fewer wake-ups per frame.
    socket_buffer_bytes: int | None = field(default=None)

    def __post_init__(self) -> None:
        for name in (
            "max_frame_bytes",
            "max_bin_len",
            "max_str_len",
            "max_array_len",
            "max_map_len",
            "max_in_flight",
            "max_in_flight_bytes",
            "max_connections",
            "max_connections_per_source",
            "max_preauth_frame_bytes",
            "write_high_water",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        for name in ("max_ext_len", "max_backlog"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Limits.{name} must be a non-negative int, got {value!r}")
        if self.socket_buffer_bytes is not None and self.socket_buffer_bytes < 4096:
            raise ValueError("Limits.socket_buffer_bytes must be None or at least 4096")
        for name in (
            "frame_timeout",
            "auth_timeout",
            "idle_timeout",
            "call_timeout",
            "keepalive_idle",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Limits.{name} must be positive or None, got {value!r}")
        if self.max_bin_len > self.max_frame_bytes or self.max_str_len > self.max_frame_bytes:
            raise ValueError("Limits.max_bin_len and max_str_len must not exceed max_frame_bytes")

    @classmethod
    def default(cls) -> Limits:
        """Peer-to-peer traffic inside a cluster: latents, images, gossip state."""
        return cls()

    @classmethod
    def small(cls) -> Limits:
        """Control-plane only (pings, info, small calls); a tight bound for exposed ports."""
        return cls(
            max_frame_bytes=1 * MiB,
            max_bin_len=1 * MiB,
            max_str_len=64 * 1024,
            max_array_len=10_000,
            max_map_len=10_000,
            max_in_flight=16,
            max_backlog=64,
            max_in_flight_bytes=16 * MiB,
            frame_timeout=5.0,
            auth_timeout=5.0,
            idle_timeout=60.0,
            max_connections=256,
            max_connections_per_source=16,
            call_timeout=10.0,
        )

    @classmethod
    def bulk(cls) -> Limits:
        """Large canvases and batches on fast links."""
        return cls(
            max_frame_bytes=256 * MiB,
            max_bin_len=256 * MiB,
            max_in_flight_bytes=1024 * MiB,
            frame_timeout=120.0,
            call_timeout=300.0,
            write_high_water=4 * MiB,
            socket_buffer_bytes=4 * MiB,
        )

    def with_(self, **changes: object) -> Limits:
        """A copy with some fields changed (validated like the original)."""
        return replace(self, **changes)  # type: ignore[arg-type]
