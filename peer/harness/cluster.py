"""A local cluster: N peer processes on loopback, optionally under unequal CPU quotas.

``LocalCluster`` starts ``amcoedge peer`` processes (peer 0 first, the others join it), waits
until every peer's ``/v1/cluster`` lists all of them alive, and stops them all on ``stop()``
(SIGTERM, then SIGKILL after a grace period), removing any cgroups it made.

``ClusterSpec.places`` puts each peer somewhere else than loopback: its own address and an argv
prefix to start it with (``ip netns exec NAME``: an emulated machine, see
:mod:`peer.harness.netns`). Such peers get the spec's cluster key and API token files, and die
with the process that started them (``PR_SET_PDEATHSIG``), so a crashed runner leaves no peer.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.core.errors import PeerError
from peer.harness import quotas


class ClusterError(PeerError):
    code = "cluster_failed"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt here (even where a shell ignored SIGINT),
    so ``finally`` blocks stop the peers and remove the cgroups."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Place:
    """Where one peer runs: its address, ports (0 = free ones here) and an argv prefix."""

    host: str
    port: int = 0
    http_port: int = 0
    prefix: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", "amc-1a2b-p0")


@dataclass(frozen=True)
class ClusterSpec:
    peers: int = 3
    host: str = "127.0.0.1"
    base_port: int = 0  # 0 = pick free ports
    base_http: int = 0
    quotas: tuple[float, ...] | None = None  # CPU cores per peer (cycled), None = no quotas
    threads: int = 1
    policy: str = "onnx"
    gossip: str = "local"
    extra_args: tuple[str, ...] = ()
    places: tuple[Place, ...] | None = None  # one per peer; None = all on ``host``
    secret_file: str | None = None  # cluster key for every peer (needed off loopback)
    api_token_file: str | None = None  # HTTP bearer token for every peer (and our calls)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free for both TCP and UDP (gossip and RPC share one)."""
    out: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(out) < n:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind((host, 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind((host, port))
            except OSError:
                t.close()
                u.close()
                continue
            held += [t, u]
            out.append(port)
    finally:
        for s in held:
            s.close()
    return out


def http_json(
    url: str, body: Any = None, timeout: float = 10.0, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": {"code": "http", "message": raw.decode(errors="replace")}}


@dataclass
class PeerProc:
    name: str
    listen: tuple[str, int]
    http: tuple[str, int]
    proc: subprocess.Popen[bytes]
    log_path: Path
    quota: float | None

    @property
    def url(self) -> str:
        return f"http://{self.http[0]}:{self.http[1]}"


@dataclass
class LocalCluster:
    spec: ClusterSpec
    log_dir: Path
    procs: list[PeerProc] = field(default_factory=list)
    quota_note: str = "no quotas requested"
    _quotas: quotas.CpuQuotas | None = None
    _ports: list[int] = field(default_factory=list)
    _https: list[int] = field(default_factory=list)
    _groups: list[Path | None] = field(default_factory=list)
    _hosts: list[str] = field(default_factory=list)
    token: str | None = None  # the API token the peers require, read from the spec's file

    def start(self) -> None:
        spec = self.spec
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if spec.api_token_file is not None:
            self.token = Path(spec.api_token_file).read_text().strip()
        if spec.places is not None:
            if len(spec.places) != spec.peers:
                raise ClusterError(f"{len(spec.places)} places for {spec.peers} peers")
            ports, https = [], []
            for pl in spec.places:
                ports.append(pl.port or free_ports(1, pl.host)[0])
                https.append(pl.http_port or free_ports(1, pl.host)[0])
            self._hosts = [pl.host for pl in spec.places]
        else:
            ports = (
                free_ports(spec.peers, spec.host)
                if spec.base_port == 0
                else [spec.base_port + i for i in range(spec.peers)]
            )
            https = (
                free_ports(spec.peers, spec.host)
                if spec.base_http == 0
                else [spec.base_http + i for i in range(spec.peers)]
            )
            self._hosts = [spec.host] * spec.peers
        groups: list[Path | None] = [None] * spec.peers
        if spec.quotas:
            ok, why = quotas.available()
            if ok:
                self._quotas = quotas.CpuQuotas()
                for i in range(spec.peers):
                    groups[i] = self._quotas.create(i, spec.quotas[i % len(spec.quotas)])
                self.quota_note = "cgroup v1 cpu quotas: " + ", ".join(
                    f"p{i}={spec.quotas[i % len(spec.quotas)]:g} cores" for i in range(spec.peers)
                )
            else:
                self.quota_note = f"plain loopback, no quotas ({why})"
        self._ports, self._https, self._groups = ports, https, groups
        for i in range(spec.peers):
            self.procs.append(self._launch(i, 0 if i > 0 else None))

    def _launch(self, i: int, join: int | None) -> PeerProc:
        """Start peer ``i``; ``join`` is the index of the peer it joins (None: it is the seed)."""
        spec = self.spec
        name = f"p{i}"
        host = self._hosts[i]
        log_path = self.log_dir / f"{name}.log"
        group = self._groups[i]
        pdeath = spec.places is not None and bool(spec.places[i].prefix)

        def pre() -> None:
            if pdeath:
                _die_with_parent()
            if group is not None:
                quotas.CpuQuotas.attach_self(group)

        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                self.peer_args(i, join),
                stdout=logf,
                stderr=subprocess.STDOUT,
                preexec_fn=pre if (pdeath or group is not None) else None,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        quota = spec.quotas[i % len(spec.quotas)] if spec.quotas and group is not None else None
        return PeerProc(name, (host, self._ports[i]), (host, self._https[i]), proc, log_path, quota)

    def peer_args(self, i: int, join: int | None) -> list[str]:
        """Peer ``i``'s command line (its place's prefix first, e.g. ``ip netns exec NS``)."""
        spec = self.spec
        host = self._hosts[i]
        prefix = spec.places[i].prefix if spec.places is not None else ()
        args = [
            *prefix,
            sys.executable,
            "-m",
            "peer",
            "peer",
            "--name",
            f"p{i}",
            "--listen",
            f"{host}:{self._ports[i]}",
            "--http",
            f"{host}:{self._https[i]}",
            "--threads",
            str(spec.threads),
            "--policy",
            spec.policy,
            "--gossip",
            spec.gossip,
            *spec.extra_args,
        ]
        if spec.secret_file is not None:
            args += ["--secret-file", spec.secret_file]
        if spec.api_token_file is not None:
            args += ["--api-token-file", spec.api_token_file]
        if join is not None:
            args += ["--join", f"{self._hosts[join]}:{self._ports[join]}"]
        if self._groups[i] is not None and spec.quotas:
            # its costs assume the quota: `ip netns exec` remounts /sys, hiding the cgroup
            args += ["--cpu-cores", f"{spec.quotas[i % len(spec.quotas)]:g}"]
        return args

    def kill(self, i: int, graceful: bool = False) -> None:
        """Crash peer ``i`` (SIGKILL) or, ``graceful``, stop it (SIGTERM, then wait)."""
        p = self.procs[i]
        if p.proc.poll() is not None:
            return
        if graceful:
            p.proc.terminate()
            try:
                p.proc.wait(timeout=8)
                return
            except subprocess.TimeoutExpired:
                pass
        p.proc.kill()
        p.proc.wait(timeout=5)

    def restart(self, i: int) -> None:
        """Start peer ``i`` again on its old ports; it joins the first other peer still up."""
        if self.procs[i].proc.poll() is None:
            raise ClusterError(f"peer p{i} is still running")
        seeds = [j for j, q in enumerate(self.procs) if j != i and q.proc.poll() is None]
        if not seeds:
            raise ClusterError(f"no running peer for p{i} to join")
        self.procs[i] = self._launch(i, seeds[0])

    def set_quota(self, i: int, cores: float) -> bool:
        """Change peer ``i``'s CPU quota; False where this cluster runs without quotas."""
        group = self._groups[i] if self._groups else None
        if self._quotas is None or group is None:
            return False
        self._quotas.set(group, cores)
        self.procs[i].quota = cores
        return True

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        n = len(self.procs)
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.proc.poll() is not None:
                    tail = p.log_path.read_text(errors="replace")[-2000:]
                    raise ClusterError(f"peer {p.name} exited with {p.proc.returncode}:\n{tail}")
            if all(self._sees_all(p, n, self.token) for p in self.procs):
                return
            time.sleep(0.25)
        raise ClusterError(
            f"the cluster did not converge within {timeout:.0f}s (logs in {self.log_dir})"
        )

    @staticmethod
    def _sees_all(p: PeerProc, n: int, token: str | None = None) -> bool:
        try:
            status, body = http_json(p.url + "/v1/cluster", timeout=2.0, token=token)
        except (OSError, ValueError):
            return False
        if status != 200:
            return False
        alive = [q for q in body.get("peers", []) if q.get("status") == "alive"]
        return len(alive) >= n

    def stop(self, grace: float = 8.0) -> None:
        """Stop every peer and remove the cgroups; a second Ctrl-C does not cut this short."""
        try:
            old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: signals stay as they are
            old = {}
        try:
            self._stop(grace)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _stop(self, grace: float) -> None:
        try:
            for p in self.procs:
                if p.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for p in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                if p.proc.poll() is None:
                    p.proc.kill()
            for p in self.procs:  # a killed process under a CPU quota on a busy box takes a while
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(timeout=30)
        finally:
            if self._quotas is not None:  # whatever happened above: no cgroup left behind
                self._quotas.close()
                self._quotas = None

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL when the thread that started it ends (a runner crash)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


_GROUP = re.compile(r"^amcoedge-(\d+)-[0-9a-f]{6}-\d+$")


def sweep_cgroup_leftovers(root: Path = quotas.CPU_ROOT) -> list[str]:
    """Remove the quota cgroups (``amcoedge-<pid>-<hex>-<n>``) of runs whose process is gone.

    A process still inside one (a peer the crashed run started) goes back to the root group.
    Returns the groups removed; nothing where quotas are not available."""
    ok, _ = quotas.available(root)
    if not ok:
        return []
    removed = []
    for path in sorted(root.iterdir()):
        m = _GROUP.match(path.name)
        if not (m and path.is_dir()) or Path(f"/proc/{m.group(1)}").exists():
            continue
        q = quotas.CpuQuotas(root)
        q.groups = [path]
        if not q.close():
            removed.append(path.name)
    return removed
