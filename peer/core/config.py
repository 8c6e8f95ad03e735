"""Peer configuration: frozen dataclasses with named presets, parsed only at the edge.

A peer's settings come from, in order of precedence, command-line flags, a TOML file
(``--config FILE``, keys as in ``examples/peer.toml``) and the preset (``lan`` by default).
``load_peer_config`` is the only place raw strings become a ``PeerConfig``; everything past it
works with validated values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peer.core.errors import ConfigError, PeerError

Addr = tuple[str, int]
PolicyName = Literal["onnx", "greedy", "local", "random", "equal", "onnx-nolinks"]
POLICIES: tuple[str, ...] = ("onnx", "greedy", "local", "random", "equal", "onnx-nolinks")
MODES: tuple[str, ...] = ("auto", "batch", "tile", "steps", "local", "parallel", "fused", "chain")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
GOSSIP_PRESETS: tuple[str, ...] = ("lan", "local", "wan")
ENGINES: tuple[str, ...] = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (each violation is a 4xx)."""

    max_body_bytes: int = 4 * 1024 * 1024  # aiohttp client_max_size
    max_count: int = 64  # images per generate request
    max_steps: int = 200  # denoising steps per request
    max_canvas: int = 128  # repair canvas side, pixels
    max_pending_jobs: int = 64  # jobs this origin accepts at once
    max_queued_shares: int = 128  # shares waiting on this peer's executor
    max_jobs_kept: int = 256  # finished jobs kept for GET /v1/jobs/{id}


@dataclass(frozen=True)
class PeerConfig:
    """Everything one peer process needs; see ``examples/peer.toml``."""

    name: str
    listen: Addr = ("127.0.0.1", 7001)  # gossip (UDP) and RPC (TCP) on the same port
    http: Addr = ("127.0.0.1", 8001)
    join: tuple[Addr, ...] = ()
    device: str = "cpu"  # auto | cpu | cuda
    model: str | None = None  # a local diffusers model dir; None = the shipped digits model
    policy: str = "onnx"  # default recruitment policy for requests that name none
    secret_file: str | None = None  # the cluster key (`amcoedge secret new`): gossip and RPC MACs
    insecure: bool = False  # allow non-loopback addresses without a cluster key / API token
    api_token_file: str | None = None  # HTTP bearer token; without one HTTP serves loopback only
    advertise: Addr | None = None  # the RPC/gossip address other peers dial (port 0: the bound one)
    tls_cert_file: str | None = None  # RPC over TLS: this peer's certificate (PEM) ...
    tls_key_file: str | None = None  # ... its private key ...
    tls_ca_file: str | None = None  # ... and the CA that signed the cluster's certificates
    engine: str = (
        "onnx"  # denoiser engine: onnx | torch | auto (the faster at start; peers may differ)
    )
    threads: int = 1  # torch threads of the executor; fixed so split results are bit-identical
    # CPU cores this peer may use, for its costs: None reads the cgroup quota (peer.runtime.
    # cpu_limit); give it where the quota is not visible (`ip netns exec` remounts /sys)
    cpu_cores: float | None = None
    gossip: str = "lan"  # gossip timer preset: lan | local | wan
    share_timeout_s: float = 120.0  # an RPC share that takes longer is re-planned
    rpc_timeout_s: float = 5.0  # control RPCs (ping, info, cancel)
    ewma_alpha: float = 0.3  # weight of a new run in the compute-cost estimate
    calibrate: bool = True  # time the model at start (else a nominal cost is used)
    # RSS the peer keeps its requests under, MiB (peer.core.memory): a request that cannot fit
    # is a 413, one that cannot fit beside those in flight a 503. None: 1 GiB or the model's
    # baseline + 512 MiB, whichever is larger (the shipped model idles at ~0.5 GiB); 0: no check
    memory_budget_mib: int | None = None
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def lan(cls, name: str) -> PeerConfig:
        """Peers on one LAN: default timers and timeouts."""
        return cls(name=name)

    @classmethod
    def local(
        cls, name: str, index: int = 0, base_port: int = 7000, base_http: int = 8000
    ) -> PeerConfig:
        """Peers on one machine (tests, ``cluster up``): fast gossip timers, loopback ports."""
        return cls(
            name=name,
            listen=("127.0.0.1", base_port + index),
            http=("127.0.0.1", base_http + index),
            gossip="local",
            share_timeout_s=60.0,
        )


def ephemeral_config(name: str, join: tuple[Addr, ...] = (), **changes: Any) -> PeerConfig:
    """A peer on loopback with ports the OS picks, fast gossip and no start-up calibration:
    in-process clusters and tests. ``changes`` override any other field."""
    base = PeerConfig(
        name=name,
        listen=("127.0.0.1", 0),
        http=("127.0.0.1", 0),
        join=join,
        gossip="local",
        calibrate=False,
    )
    return dataclasses.replace(base, **changes)


def parse_addr(text: str, what: str = "address") -> Addr:
    """``HOST:PORT`` (``[v6]:PORT`` allowed) -> ``(host, port)``; a clear ConfigError otherwise."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{what} must be HOST:PORT, got {text!r}")
    host, _, port_s = text.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{what} must be HOST:PORT, got {text!r}")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{what}: port must be an integer, got {port_s!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port out of range: {port}")
    return host, port


def format_addr(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def load_toml_file(
    path: str | Path, what: str = "config", error: type[PeerError] = ConfigError
) -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or malformed file raises ``error``."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise error(f"cannot read {what} file {path}: {exc}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    data = load_toml_file(path)
    section = data.get("peer", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [peer] must be a table")
    return section


_SIMPLE_FIELDS: dict[str, type] = {
    "name": str,
    "device": str,
    "model": str,
    "policy": str,
    "secret_file": str,
    "insecure": bool,
    "api_token_file": str,
    "tls_cert_file": str,
    "tls_key_file": str,
    "tls_ca_file": str,
    "engine": str,
    "threads": int,
    "cpu_cores": float,
    "gossip": str,
    "share_timeout_s": float,
    "rpc_timeout_s": float,
    "ewma_alpha": float,
    "calibrate": bool,
    "memory_budget_mib": int,
}


def _coerce(key: str, value: Any, typ: type) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not isinstance(value, typ):
        raise ConfigError(f"{key} must be a {typ.__name__}, got {value!r}")
    return value


def load_peer_config(
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PeerConfig:
    """Merge TOML values and CLI overrides (None = not given) into a validated PeerConfig."""
    merged: dict[str, Any] = dict(file_values or {})
    for key, value in (overrides or {}).items():
        if value is not None and value != ():
            merged[key] = value
    name = merged.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError("a peer needs a name (--name or name = ... in the config file)")
    kwargs: dict[str, Any] = {"name": name}
    preset = merged.get("gossip", "lan")
    base = PeerConfig.local(name) if preset == "local" else PeerConfig.lan(name)
    for key, value in merged.items():
        if key in ("listen", "http"):
            kwargs[key] = value if isinstance(value, tuple) else parse_addr(value, key)
        elif key == "advertise":
            kwargs[key] = value if isinstance(value, tuple) else parse_advertise(value)
        elif key == "join":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple):
                raise ConfigError("join must be a list of HOST:PORT")
            kwargs["join"] = tuple(
                v if isinstance(v, tuple) else parse_addr(v, "join") for v in value
            )
        elif key == "limits":
            if not isinstance(value, dict):
                raise ConfigError("limits must be a table")
            known = {f.name for f in dataclasses.fields(Limits)}
            for k, v in value.items():
                if k not in known:
                    raise ConfigError(f"unknown limits key {k!r} (known: {sorted(known)})")
                _coerce(f"limits.{k}", v, int)
                if v <= 0:
                    raise ConfigError(f"limits.{k} must be positive, got {v}")
            kwargs["limits"] = Limits(**value)
        elif key in _SIMPLE_FIELDS:
            kwargs[key] = _coerce(key, value, _SIMPLE_FIELDS[key])
        else:
            raise ConfigError(f"unknown config key {key!r}")
    cfg = dataclasses.replace(base, **kwargs)
    validate(cfg)
    return cfg


def validate(cfg: PeerConfig) -> None:
    if cfg.device not in DEVICES:
        raise ConfigError(f"device must be one of {DEVICES}, got {cfg.device!r}")
    if cfg.policy not in POLICIES:
        raise ConfigError(f"policy must be one of {POLICIES}, got {cfg.policy!r}")
    if cfg.gossip not in GOSSIP_PRESETS:
        raise ConfigError(f"gossip must be one of {GOSSIP_PRESETS}, got {cfg.gossip!r}")
    if not 1 <= cfg.threads <= 256:
        raise ConfigError(f"threads must be in 1..256, got {cfg.threads}")
    if cfg.cpu_cores is not None and not (
        math.isfinite(cfg.cpu_cores) and 0.01 <= cfg.cpu_cores <= 1024
    ):
        raise ConfigError(f"cpu_cores must be in [0.01, 1024], got {cfg.cpu_cores}")
    if not 0.0 < cfg.ewma_alpha <= 1.0:
        raise ConfigError(f"ewma_alpha must be in (0, 1], got {cfg.ewma_alpha}")
    if cfg.share_timeout_s <= 0 or cfg.rpc_timeout_s <= 0:
        raise ConfigError("timeouts must be positive")
    if cfg.memory_budget_mib is not None and cfg.memory_budget_mib < 0:
        raise ConfigError(f"memory_budget_mib must be >= 0, got {cfg.memory_budget_mib}")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {cfg.engine!r}")
    for what, path in (
        ("secret file", cfg.secret_file),
        ("API token file", cfg.api_token_file),
        ("TLS certificate file", cfg.tls_cert_file),
        ("TLS key file", cfg.tls_key_file),
        ("TLS CA file", cfg.tls_ca_file),
    ):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{what} not found: {path}")
    if (cfg.tls_cert_file is None) != (cfg.tls_key_file is None):
        raise ConfigError("RPC over TLS needs both --tls-cert-file and --tls-key-file")
    if cfg.advertise is not None and is_wildcard(cfg.advertise[0]):
        raise ConfigError(f"--advertise must be an address others can dial, not {cfg.advertise[0]}")
    problem = exposure_problem(cfg)
    if problem is not None:
        raise ConfigError(problem)
    if cfg.model is not None and not Path(cfg.model).exists():
        raise ConfigError(f"model path not found: {cfg.model}")


def read_secret(cfg: PeerConfig) -> bytes | None:
    if cfg.secret_file is None:
        return None
    try:
        secret = Path(cfg.secret_file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {cfg.secret_file}: {exc}") from None
    if len(secret) < 8:
        raise ConfigError("the secret must be at least 8 bytes")
    return secret


def read_token(cfg: PeerConfig) -> str | None:
    """The HTTP API's bearer token, or None when the API is open (loopback only)."""
    if cfg.api_token_file is None:
        return None
    try:
        token = Path(cfg.api_token_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read API token file {cfg.api_token_file}: {exc}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError("the API token must be at least 16 characters, without spaces")
    return token


def parse_advertise(text: str) -> Addr:
    """``HOST`` or ``HOST:PORT`` (port 0 or none: the port actually bound)."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"advertise must be HOST or HOST:PORT, got {text!r}")
    if text.count(":") == 1 or text.startswith("["):
        return parse_addr(text, "advertise")
    return text.strip("[]"), 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "*")


def exposure_problem(cfg: PeerConfig) -> str | None:
    """Why this configuration would expose the peer to the network unprotected, if it does.

    Secure by default: a non-loopback gossip/RPC address needs the cluster key, a non-loopback
    HTTP address needs an API token, unless ``insecure`` says the network is trusted.
    """
    if cfg.insecure:
        return None
    exposed = [
        f"--{what} {format_addr(addr)}"
        for what, addr in (("listen", cfg.listen), ("advertise", cfg.advertise))
        if addr is not None and not is_loopback(addr[0])
    ]
    if exposed and cfg.secret_file is None:
        return (
            f"{' and '.join(exposed)} is reachable from the network, so the cluster needs a key: "
            "run `amcoedge secret new cluster.key`, copy the file to every peer and start each "
            "with --secret-file cluster.key (or pass --insecure on a network you trust)"
        )
    if not is_loopback(cfg.http[0]) and cfg.api_token_file is None:
        return (
            f"--http {format_addr(cfg.http)} is reachable from the network, so the HTTP API needs "
            "a token: run `amcoedge secret new api.token` and pass --api-token-file api.token "
            "(clients send `Authorization: Bearer <token>`), or pass --insecure"
        )
    return None


def insecure_warnings(cfg: PeerConfig) -> list[str]:
    """What ``insecure`` leaves open, for the start-up log and ``/healthz``."""
    if not cfg.insecure:
        return []
    out = []
    if cfg.secret_file is None and not is_loopback(cfg.listen[0]):
        out.append(
            f"gossip and RPC on {format_addr(cfg.listen)} accept anyone: no cluster key (--insecure)"
        )
    if cfg.api_token_file is None and not is_loopback(cfg.http[0]):
        out.append(f"the HTTP API on {format_addr(cfg.http)} has no token (--insecure)")
    return out
