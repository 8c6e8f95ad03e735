"""Emulated machines: one network namespace per peer, joined by a bridge, with ``tc tbf`` links.

Layout of one run (``tag`` = the runner's pid in hex, ``o`` = a free third octet):

- a bridge ``amc-<tag>-br`` in the runner's namespace with address ``10.77.<o>.254/24`` (the
  runner talks to the peers' HTTP through it);
- per namespaced peer ``i`` a namespace ``amc-<tag>-p<i>`` holding ``eth0`` (address
  ``10.77.<o>.<i+1>/24``, MAC ``02:77:<o>:00:00:<i+1>``), the far end of a veth pair whose
  near end ``amc-<tag>-p<i>h`` is a port of the bridge. The namespaces have no default route:
  nothing they send leaves the bridge's /24.

Links: the peer's upload rate is a ``tbf`` on its ``eth0`` (egress inside the namespace), its
download rate a ``tbf`` on the bridge port (egress towards it). ``tc netem`` does not exist in
this kernel, so there is no emulated delay: latency is the real stack's.

Events, all silent drops (no reset, no ICMP), since neither iptables nor tc actions exist here:

- ``partition(group)``: every peer in ``group`` gets a permanent neighbour entry for every peer
  outside it (and the other way round) pointing at a "sink" MAC that the bridge's forwarding
  table places on the sender's own port; the bridge never sends a frame back out of the port it
  came in on, so it drops them. The runner (bridge address) still reaches everyone.
- ``heal()``: those neighbour entries are deleted (ARP resolves the real MACs again).
- ``link_down(i)`` / ``link_up(i)``: the bridge port of ``i`` is set down / up (no carrier; the
  sockets inside see no error, the packets are lost).

The command builders are pure (lists of argv); :class:`Network` runs them. Every name starts
with ``amc-<tag>-``; :func:`sweep_leftovers` finds those whose runner is gone (a crash) and
removes them, and :meth:`Network.close` removes this run's by name and checks that nothing is
left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peer.core.errors import PeerError

PREFIX = "amc-"
SUBNET = "10.77"
ROOT_HOST = 254  # the bridge's (the runner's) address: 10.77.<o>.254
PEER_PORT = 7000  # every namespace has its own addresses: the same ports in each
HTTP_PORT = 8000
MAX_NS_PEERS = 100  # "amc-<6 hex>-p99h" is 15 characters, the longest link name
TBF_LATENCY_MS = 50
TBF_MIN_BURST = 64 * 1024  # bytes; at least a GSO segment, or tbf splits or drops it
_NAME = re.compile(r"^amc-([0-9a-f]{1,6})-(p\d+[hn]?|br)$")
_NS_NAME = re.compile(r"^amc-([0-9a-f]{1,6})-p\d+$")
_live_lock = threading.Lock()
_live: set[str] = set()  # tags of the networks open in this process


class NetnsError(PeerError):
    code = "netns_failed"


Cmd = list[str]


def tag_for(pid: int) -> str:
    if not 0 < pid < 0x1000000:
        raise NetnsError(f"pid {pid} does not fit a 6-digit hex tag")
    return f"{pid:x}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The names and addresses of one run, and the argv of every operation on them."""

    tag: str
    octet: int
    peers: tuple[int, ...]  # indices of the namespaced peers

    def __post_init__(self) -> None:
        if not 1 <= self.octet <= 254:
            raise NetnsError(f"third octet must be in [1, 254], got {self.octet}")
        if not self.peers or len(set(self.peers)) != len(self.peers):
            raise NetnsError("a network needs distinct peer indices")
        if min(self.peers) < 0 or max(self.peers) >= MAX_NS_PEERS:
            raise NetnsError(f"peer indices must be in [0, {MAX_NS_PEERS - 1}]")

    # names and addresses
    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.tag}-br"

    def ns(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-p{i}"

    def port(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-p{i}h"

    def addr(self, i: int) -> str:
        return f"{SUBNET}.{self.octet}.{i + 1}"

    @property
    def root_addr(self) -> str:
        return f"{SUBNET}.{self.octet}.{ROOT_HOST}"

    def mac(self, i: int) -> str:
        return f"02:77:{self.octet:02x}:00:{(i + 1) >> 8:02x}:{(i + 1) & 0xFF:02x}"

    def sink_mac(self, i: int) -> str:
        return f"02:77:{self.octet:02x}:ee:{(i + 1) >> 8:02x}:{(i + 1) & 0xFF:02x}"

    def exec_prefix(self, i: int) -> Cmd:
        return ["ip", "netns", "exec", self.ns(i)]

    # operations
    def setup(self) -> list[Cmd]:
        br = self.bridge
        cmds: list[Cmd] = [
            ["ip", "link", "add", br, "type", "bridge", "forward_delay", "0", "stp_state", "0"],
            ["ip", "addr", "add", f"{self.root_addr}/24", "dev", br],
            ["ip", "link", "set", br, "up"],
        ]
        for i in self.peers:
            ns, port = self.ns(i), self.port(i)
            cmds += [
                ["ip", "netns", "add", ns],
                ["ip", "link", "add", port, "type", "veth", "peer", "name", f"{ns}n"],
                ["ip", "link", "set", f"{ns}n", "netns", ns],
                ["ip", "-n", ns, "link", "set", f"{ns}n", "name", "eth0"],
                ["ip", "-n", ns, "link", "set", "eth0", "address", self.mac(i)],
                ["ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
                ["ip", "-n", ns, "link", "set", "eth0", "up"],
                ["ip", "link", "set", port, "master", br],
                ["ip", "link", "set", port, "up"],
                # frames to i's sink MAC go back towards i's own port: the bridge drops them
                ["bridge", "fdb", "add", self.sink_mac(i), "dev", port, "master", "static"],
            ]
        return cmds

    def teardown(self) -> list[Cmd]:
        """Every object by name; each may already be gone (run them all, ignore failures)."""
        cmds: list[Cmd] = [["ip", "link", "del", self.port(i)] for i in self.peers]
        cmds.append(["ip", "link", "del", self.bridge])
        cmds += [["ip", "netns", "del", self.ns(i)] for i in self.peers]
        return cmds

    def rate(self, i: int, up_mbit: float | None, down_mbit: float | None) -> list[Cmd]:
        """Set (a number) or remove (None) the up and down rates of peer ``i``'s link."""
        self._member(i)
        ns = ["ip", "netns", "exec", self.ns(i)]
        return [
            [*ns, *tbf("eth0", up_mbit)] if up_mbit is not None else [*ns, *no_qdisc("eth0")],
            tbf(self.port(i), down_mbit) if down_mbit is not None else no_qdisc(self.port(i)),
        ]

    def partition(self, group: Sequence[int]) -> list[Cmd]:
        """Cut the peers of ``group`` off from the other namespaced peers (both ways)."""
        inside = sorted(set(group))
        for i in inside:
            self._member(i)
        outside = [j for j in self.peers if j not in inside]
        if not inside or not outside:
            raise NetnsError("a partition needs peers on both sides")
        cmds: list[Cmd] = []
        for a, others in [(i, outside) for i in inside] + [(j, inside) for j in outside]:
            for b in others:
                neigh = ["ip", "-n", self.ns(a), "neigh", "replace", self.addr(b)]
                cmds.append([*neigh, "lladdr", self.sink_mac(a), "dev", "eth0", "nud", "permanent"])
        return cmds

    def heal(self, group: Sequence[int]) -> list[Cmd]:
        """Undo :meth:`partition` of ``group``; failures are harmless (entry already gone)."""
        inside = sorted(set(group))
        outside = [j for j in self.peers if j not in inside]
        cmds: list[Cmd] = []
        for a, others in [(i, outside) for i in inside] + [(j, inside) for j in outside]:
            for b in others:
                cmds.append(["ip", "-n", self.ns(a), "neigh", "del", self.addr(b), "dev", "eth0"])
        return cmds

    def link_down(self, i: int) -> list[Cmd]:
        self._member(i)
        return [["ip", "link", "set", self.port(i), "down"]]

    def link_up(self, i: int) -> list[Cmd]:
        self._member(i)
        return [["ip", "link", "set", self.port(i), "up"]]

    def _member(self, i: int) -> None:
        if i not in self.peers:
            raise NetnsError(f"peer p{i} is not in a namespace of this run")


def tbf(dev: str, mbit: float) -> Cmd:
    """A token bucket of ``mbit`` Mbit/s on ``dev``'s egress (burst: 20 ms or 64 KiB)."""
    if not (0 < mbit <= 100_000):
        raise NetnsError(f"a link rate must be in (0, 100000] Mbit/s, got {mbit}")
    rate_bit = int(mbit * 1_000_000)
    burst = max(TBF_MIN_BURST, rate_bit // 8 // 50)
    tbf_args = ["rate", f"{rate_bit}bit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]
    return ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", *tbf_args]


def no_qdisc(dev: str) -> Cmd:
    """Back to the default queue (fails harmlessly where there was no tbf)."""
    return ["tc", "qdisc", "del", "dev", dev, "root"]


# --------------------------------------------------------------------------- the executor


def run_cmd(
    cmd: Cmd, check: bool = True, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(cmd)}: {exc}") from exc
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} failed: {res.stderr.strip() or res.returncode}")
    return res


def available() -> tuple[bool, str]:
    """Whether this machine lets the runner create namespaces, and why not."""
    if os.name != "posix" or os.geteuid() != 0:
        return False, "not root"
    for tool in ("ip", "tc", "bridge"):
        if shutil.which(tool) is None:
            return False, f"no `{tool}` command"
    probe = f"{PREFIX}{tag_for(os.getpid())}-p{MAX_NS_PEERS}"
    try:
        run_cmd(["ip", "netns", "add", probe])
    except NetnsError as exc:
        return False, f"`ip netns add` fails: {exc}"
    run_cmd(["ip", "netns", "del", probe], check=False)
    return True, "network namespaces, veth, bridge and tc tbf"


def _names() -> tuple[list[str], list[str]]:
    """Namespaces and links named by this module, of any run."""
    ns = run_cmd(["ip", "netns", "list"], check=False).stdout.split("\n")
    namespaces = [line.split()[0] for line in ns if line.strip()]
    links = []
    for line in run_cmd(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            links.append(parts[1].strip().split("@")[0])
    return (
        [n for n in namespaces if _NS_NAME.match(n)],
        [n for n in links if _NAME.match(n)],
    )


def ours(tag: str) -> tuple[list[str], list[str]]:
    """The namespaces and links of run ``tag`` that exist now."""
    namespaces, links = _names()
    return (
        [n for n in namespaces if n.startswith(f"{PREFIX}{tag}-")],
        [n for n in links if n.startswith(f"{PREFIX}{tag}-")],
    )


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _tag_dead(tag: str) -> bool:
    pid = int(tag, 16)
    if pid == os.getpid():
        with _live_lock:
            return tag not in _live
    return not _pid_alive(pid)


def sweep_leftovers() -> list[str]:
    """Remove what crashed runs left: namespaces and links whose runner's pid is gone.

    The peer processes still inside such a namespace (started by that runner) are killed first,
    by pid. Returns the names removed."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    namespaces, links = _names()
    removed: list[str] = []
    for name in links:
        m = _NAME.match(name)
        gone = m and _tag_dead(m.group(1))
        if gone and run_cmd(["ip", "link", "del", name], check=False).returncode == 0:
            removed.append(name)
    for name in namespaces:
        m = _NS_NAME.match(name)
        if m and _tag_dead(m.group(1)):
            pids = run_cmd(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            if run_cmd(["ip", "netns", "del", name], check=False).returncode == 0:
                removed.append(name)
    return removed


def free_octet(start: int) -> int:
    """A third octet of 10.77.x.0/24 that no interface of this namespace uses."""
    text = run_cmd(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    used = {int(m) for m in re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", text)}
    for k in range(254):
        o = (start + k) % 254 + 1
        if o not in used:
            return o
    raise NetnsError(f"every {SUBNET}.x.0/24 is in use here")


@dataclass
class Network:
    """One run's namespaces, bridge and links; ``close()`` removes them all by name."""

    peers: tuple[int, ...]
    plan: Plan | None = None
    log: list[str] = field(default_factory=list)  # every command run, for the report

    def open(self) -> Plan:
        tag = tag_for(os.getpid())
        with _live_lock:
            if tag in _live:
                raise NetnsError("this process already has an emulated network open")
            _live.add(tag)
        try:
            self.plan = Plan(tag, free_octet(os.getpid() % 254), self.peers)
            self.run(self.plan.setup())
        except BaseException:
            self.close()
            raise
        return self.plan

    def run(self, cmds: list[Cmd], check: bool = True) -> None:
        for cmd in cmds:
            self.log.append(" ".join(cmd))
            run_cmd(cmd, check=check)

    def set_rate(self, i: int, up_mbit: float | None, down_mbit: float | None) -> None:
        """Peer ``i``'s link rates; None removes that direction's limit (if it had one)."""
        if self.plan is None:
            raise NetnsError("the network is not open")
        for cmd, mbit in zip(
            self.plan.rate(i, up_mbit, down_mbit), (up_mbit, down_mbit), strict=True
        ):
            self.run([cmd], check=mbit is not None)

    def close(self) -> list[str]:
        """Remove every namespace and link of this run; returns the names still there."""
        tag = tag_for(os.getpid())
        try:
            if self.plan is not None:
                for cmd in self.plan.teardown():
                    run_cmd(cmd, check=False)
            namespaces, links = ours(tag)
            for name in links:  # whatever a half-done setup made
                run_cmd(["ip", "link", "del", name], check=False)
            for name in namespaces:
                run_cmd(["ip", "netns", "del", name], check=False)
            left: list[str] = []
            for _ in range(20):  # a deleted namespace's veth end goes away asynchronously
                namespaces, links = ours(tag)
                left = namespaces + links
                if not left:
                    break
                time.sleep(0.1)
            return left
        finally:
            with _live_lock:
                _live.discard(tag)
            self.plan = None

    def __enter__(self) -> Network:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ a hand check of the links

_BULK = """
import socket, sys, time
mode, host, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if mode == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(1); print("ready", flush=True)
    c, _ = s.accept(); n = 0; t0 = time.perf_counter()
    while True:
        b = c.recv(1 << 16)
        if not b: break
        n += len(b)
    print(n, time.perf_counter() - t0, flush=True)
else:
    s = socket.create_connection((host, port)); buf = b"x" * (1 << 16)
    end = time.perf_counter() + secs
    while time.perf_counter() < end: s.sendall(buf)
    s.close()
"""


def bulk_mbit(plan: Plan, src: int, dst: int, seconds: float = 3.0, port: int = 9400) -> float:
    """Achieved Mbit/s of one bulk TCP transfer from peer ``src`` to ``dst`` (receiver's count)."""
    recv_args = ["recv", plan.addr(dst), str(port), str(seconds)]
    recv = subprocess.Popen(
        [*plan.exec_prefix(dst), sys.executable, "-c", _BULK, *recv_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stdout is not None
        if recv.stdout.readline().strip() != "ready":
            raise NetnsError("the bulk receiver did not start")
        send = [*plan.exec_prefix(src), sys.executable, "-c", _BULK, "send", plan.addr(dst)]
        run_cmd([*send, str(port), str(seconds)], timeout=seconds + 30)
        out, _ = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    n, dt = out.split()
    return int(n) * 8 / float(dt) / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m peer.harness.netns [RATE_MBIT]``: three emulated machines, p1's link at
    RATE_MBIT (20) both ways; prints the achieved rate of a bulk TCP transfer into p1, out of
    p1, and between the two unlimited peers, then removes everything."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m peer.harness.netns")
    ap.add_argument("rate_mbit", nargs="?", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    ok, why = available()
    if not ok:
        print(f"emulated machines unavailable: {why}")
        return 2
    sweep_leftovers()
    with Network((0, 1, 2)) as net:
        assert net.plan is not None
        net.set_rate(1, args.rate_mbit, args.rate_mbit)
        res = {
            "configured_mbit": args.rate_mbit,
            "into_limited_mbit": round(bulk_mbit(net.plan, 0, 1, args.seconds), 1),
            "out_of_limited_mbit": round(bulk_mbit(net.plan, 1, 2, args.seconds, 9401), 1),
            "unlimited_mbit": round(bulk_mbit(net.plan, 0, 2, args.seconds, 9402), 1),
        }
    res["left_after_cleanup"] = ours(tag_for(os.getpid()))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
