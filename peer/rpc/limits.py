"""Limits on frames, calls and connections, as one frozen config with named presets."""

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
    # Seconds a connection to a server with a secret has to authenticate.
    auth_timeout: float | None = field(default=10.0)
    # Connections a server holds at once; more are refused with ``busy``.
    max_connections: int = field(default=1024)
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
        for name in ("frame_timeout", "auth_timeout", "call_timeout", "keepalive_idle"):
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
            max_connections=256,
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
