"""Emulated machines: the pure command builders, and (as root) real namespaces and a scenario."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from peer.harness import netns
from peer.harness.netns import NetnsError, Plan, tbf
from peer.harness.scenario import parse_scenario, schedule
from peer.harness.scenario_run import NetworkMode, run_scenario

# ----------------------------------------------------------------------------- pure


def test_names_fit_the_kernel_limit_and_match_the_sweep_patterns() -> None:
    plan = Plan(netns.tag_for(0x3FFFFF), 200, tuple(range(netns.MAX_NS_PEERS)))
    names = [plan.bridge] + [plan.port(i) for i in plan.peers] + [plan.ns(i) + "n" for i in (0, 99)]
    assert max(len(n) for n in names) == 15  # IFNAMSIZ - 1
    assert all(netns._NAME.match(n) for n in names)
    assert all(netns._NS_NAME.match(plan.ns(i)) for i in plan.peers)
    assert not netns._NAME.match("eth0") and not netns._NS_NAME.match("amc-zz-p0")
    assert plan.addr(0) == "10.77.200.1" and plan.root_addr == "10.77.200.254"
    assert len({plan.mac(i) for i in plan.peers} | {plan.sink_mac(i) for i in plan.peers}) == 200
    with pytest.raises(NetnsError):
        Plan("1", 1, (0, netns.MAX_NS_PEERS))
    with pytest.raises(NetnsError):
        Plan("1", 255, (0,))
    with pytest.raises(NetnsError):
        netns.tag_for(0x1000000)


def test_setup_uses_only_the_private_subnet_and_no_default_route() -> None:
    plan = Plan("abc", 9, (0, 2))
    cmds = plan.setup()
    text = [" ".join(c) for c in cmds]
    addrs = [c[c.index("add") + 1] for c in cmds if "addr" in c]
    assert sorted(addrs) == ["10.77.9.1/24", "10.77.9.254/24", "10.77.9.3/24"]
    assert not any("route" in t or "default" in t for t in text)
    # every created object is named by the run's prefix, and the teardown names each of them
    created = {c[3] for c in cmds if c[:3] == ["ip", "link", "add"]}
    created |= {c[3] for c in cmds if c[:3] == ["ip", "netns", "add"]}
    removed = {c[3] for c in plan.teardown()}
    assert created == removed and all(n.startswith("amc-abc-") for n in created)


def test_rates_are_a_tbf_each_way_and_none_removes_it() -> None:
    plan = Plan("abc", 9, (0, 1))
    up, down = plan.rate(1, 20, None)
    assert up[:4] == ["ip", "netns", "exec", "amc-abc-p1"]
    assert up[4:] == tbf("eth0", 20)
    assert down == ["tc", "qdisc", "del", "dev", "amc-abc-p1h", "root"]
    t = tbf("x", 20)
    assert t[t.index("rate") + 1] == "20000000bit"
    assert int(t[t.index("burst") + 1]) >= netns.TBF_MIN_BURST
    # at 1 Gbit the bucket holds 20 ms of traffic, above the floor
    big = tbf("x", 1000)
    assert int(big[big.index("burst") + 1]) == 1_000_000_000 // 8 // 50
    for bad in (0, -1, 1e9):
        with pytest.raises(NetnsError):
            tbf("x", bad)
    with pytest.raises(NetnsError, match="not in a namespace"):
        plan.rate(5, 1, 1)


def test_partition_cuts_both_ways_through_each_senders_sink_and_heal_undoes_it() -> None:
    plan = Plan("abc", 9, (0, 1, 2))
    cmds = plan.partition([1])
    pairs = set()
    for c in cmds:
        ns, addr, mac = c[2], c[5], c[7]
        sender = int(ns.rsplit("p", 1)[1])
        assert mac == plan.sink_mac(sender) and c[-2:] == ["nud", "permanent"]
        pairs.add((sender, addr))
    assert pairs == {(1, plan.addr(0)), (1, plan.addr(2)), (0, plan.addr(1)), (2, plan.addr(1))}
    healed = {(int(c[2].rsplit("p", 1)[1]), c[5]) for c in plan.heal([1])}
    assert healed == pairs and all("del" in c for c in plan.heal([1]))
    # the sink MAC sits on the sender's own bridge port (where the bridge never sends back)
    fdb = [c for c in plan.setup() if c[0] == "bridge"]
    assert {(c[3], c[5]) for c in fdb} == {(plan.sink_mac(i), plan.port(i)) for i in plan.peers}
    with pytest.raises(NetnsError, match="both sides"):
        plan.partition([0, 1, 2])
    with pytest.raises(NetnsError, match="both sides"):
        plan.partition([])
    assert plan.link_down(2) == [["ip", "link", "set", "amc-abc-p2h", "down"]]
    assert plan.link_up(2) == [["ip", "link", "set", "amc-abc-p2h", "up"]]


def test_without_root_the_runner_falls_back_to_loopback_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netns, "available", lambda: (False, "not root"))
    monkeypatch.setattr(netns, "sweep_leftovers", lambda: [])
    monkeypatch.setattr("peer.harness.scenario_run.sweep_cgroup_leftovers", lambda: [])
    sc = parse_scenario(
        {
            "peers": {"count": 2, "network": "netns", "links": [{"peer": 1, "rate_mbit": 20}]},
            "workload": {"duration_s": 4, "rate_per_s": 1},
            "events": [{"at_s": 1, "action": "link_down", "peer": 1}],
        }
    )
    mode = NetworkMode(sc)
    assert mode.mode == "loopback" and mode.requested == "netns"
    assert "fallback to loopback" in mode.why and "not root" in mode.why
    assert mode.open() is None and mode.secret_file is None and mode.token is None
    assert mode.apply(sc.events[0], None).startswith("skipped: fallback")  # type: ignore[arg-type]
    summary = mode.summary({})
    assert summary["mode"] == "loopback" and summary["emulated_delay"] is None
    assert summary["peers"][1]["up_mbit"] == 20 and summary["peers"][1]["applied"] is False
    mode.close()


# ----------------------------------------------------------------------------- as root


def _why_not_root() -> str | None:
    ok, why = netns.available()
    return None if ok else why


def _ours_everywhere(tag: str) -> list[str]:
    """Namespaces and links named ``amc-<tag>-...``, listed by ``ip`` itself."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in ns.splitlines() if line.strip()]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names += [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    return sorted(n for n in names if n.startswith(f"amc-{tag}-"))


def _dead_pid() -> int:
    for pid in range(0x3FFFFF, 0x300000, -1):
        if not Path(f"/proc/{pid}").exists():
            return pid
    raise AssertionError("no free pid")


def test_a_crashed_runs_leftovers_are_found_by_name_and_removed() -> None:
    why = _why_not_root()
    if why:
        pytest.skip(f"emulated machines unavailable here: {why}")
    tag = netns.tag_for(_dead_pid())
    mine = netns.tag_for(os.getpid())
    created = [f"amc-{tag}-p0", f"amc-{tag}-br", f"amc-{tag}-p0h"]
    try:
        netns.run_cmd(["ip", "netns", "add", created[0]])
        netns.run_cmd(["ip", "link", "add", created[1], "type", "bridge"])
        netns.run_cmd(["ip", "link", "add", created[2], "type", "veth", "peer", "name", "amcx0"])
        with netns.Network((0,)) as live:  # a live run of this process is left alone
            assert live.plan is not None
            removed = netns.sweep_leftovers()
            assert sorted(removed) == sorted(created)
            assert _ours_everywhere(tag) == []
            assert len(_ours_everywhere(mine)) == 3  # its bridge, port and namespace
        assert _ours_everywhere(mine) == []
    finally:
        for name in created:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.timeout(240)  # two real peers in namespaces: about 60 s on a busy 2-core box
def test_two_emulated_machines_serve_requests_and_leave_nothing_behind(tmp_path: Path) -> None:
    why = _why_not_root()
    if why:
        pytest.skip(f"emulated machines unavailable here: {why}")
    sc = parse_scenario(
        {
            "name": "two-machines",
            "seed": 4,
            "policies": ["greedy"],
            "peers": {
                "count": 2,
                "network": "netns",
                "links": [{"peer": 1, "rate_mbit": 20}],
            },
            "workload": {
                "duration_s": 3,
                "rate_per_s": 1.5,
                "kinds": [{"mode": "batch", "count": 2, "steps": 4}],
            },
            "events": [{"at_s": 1.5, "action": "link", "peer": 1, "up_mbit": 10}],
        }
    )
    res = run_scenario(sc, tmp_path, progress=False)
    run = res["policies"]["greedy"]
    assert "error" not in run, run.get("error")
    assert run["requests"] == len(schedule(sc)) > 0
    assert run["ok"] == run["requests"], run["errors"]
    net = res["network"]
    assert net["mode"] == "netns" and net["left_after_cleanup"] == []
    p0, p1 = net["peers"]
    assert p0["address"].startswith("10.77.") and p0["address"] != p1["address"]
    assert (p1["up_mbit"], p1["down_mbit"], p1["applied"]) == (20, 20, True)
    assert (p0["up_mbit"], p0["down_mbit"]) == (None, None)
    [ev] = net["events_applied"]["greedy"]
    assert ev["result"] == "rate set: up 10, down 20 Mbit/s"
    # the peers really listened on their namespace addresses
    assert p1["address"] in (tmp_path / "logs" / "greedy" / "p1.log").read_text()
    report = (tmp_path / "report.md").read_text()
    assert "## Network" in report and "## Measured links and predictions" in report
    assert json.loads((tmp_path / "results.json").read_text())["network"]["mode"] == "netns"
    # what the peers measured of their link, polled while they ran, and their predictions
    rows = res["links"]["greedy"]["per_link"]
    assert {(r["observer"], r["target"]) for r in rows} == {("p0", "p1"), ("p1", "p0")}
    assert {r["configured_mbit"] for r in rows} <= {20, 10}
    assert res["prediction"]["per_mode"]["batch"]["requests"] == run["ok"]
    assert _ours_everywhere(netns.tag_for(os.getpid())) == []
