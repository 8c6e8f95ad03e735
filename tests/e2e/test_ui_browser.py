"""The dashboard in a real browser: two real peer processes (shipped model) behind an API token,
a few requests, then ``/ui`` in headless Chromium (the system's chromium, driven by Selenium
through the system's chromedriver; nothing downloads a browser; ``make test-all`` installs both).

Asserts on the DOM: the page asks for the token, then lists both peers, shows each request's
timeline with one bar per share, opens a request's breakdown, switches to the other peer's view
through the proxy, and renders a synthetic 20-peer, 200-request snapshot. Screenshots go to
``tests/artifacts/`` (gitignored): ``ui.png`` (live cluster and timelines with a breakdown
open), ``ui-other-peer.png`` and ``ui-synthetic.png``.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.harness.cluster import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "ui-browser-test-token-0123456789"
STEPS = 4


def call(url: str, body: Any = None, token: str | None = TOKEN, timeout: float = 120.0) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Peers:
    def __init__(self, tmp: Path, n: int = 2) -> None:
        token_file = tmp / "api.token"
        token_file.write_text(TOKEN + "\n")
        ports, https = free_ports(n), free_ports(n)
        self.urls = [f"http://127.0.0.1:{h}" for h in https]
        self.logs = [tmp / f"p{i}.log" for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            args = [
                sys.executable, "-m", "peer", "peer",
                "--name", f"p{i}",
                "--listen", f"127.0.0.1:{ports[i]}",
                "--http", f"127.0.0.1:{https[i]}",
                "--api-token-file", str(token_file),
                "--threads", "1",
                "--gossip", "local",
            ]  # fmt: skip
            if i:
                args += ["--join", f"127.0.0.1:{ports[0]}"]
            with open(self.logs[i], "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        args,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                )

    def wait(self, timeout: float = 150.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, log in zip(self.procs, self.logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"peer exited: {log.read_text()[-3000:]}")
            if all(self._alive(u) >= len(self.urls) for u in self.urls):
                return
            time.sleep(0.3)
        raise RuntimeError("cluster did not converge: " + self.logs[0].read_text()[-3000:])

    @staticmethod
    def _alive(url: str) -> int:
        try:
            body = call(url + "/v1/cluster", timeout=2)
        except (OSError, ValueError):
            return 0
        return sum(p["status"] == "alive" for p in body["peers"])

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    ps = Peers(tmp_path_factory.mktemp("ui-peers"))
    try:
        ps.wait()
        yield ps
    finally:
        ps.stop()


def chrome(profile: Path) -> Any:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1200",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as exc:  # stale elements while the page re-renders
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def synthetic_snapshot(n_peers: int = 20, n_requests: int = 200, seed: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [f"s{i:02d}" for i in range(n_peers)]
    peers = [
        {"name": n, "status": "alive", "self": i == 0, "capacity": 90.0 + i, "backlog": 0.01 * i,
         "active_shares": i % 3, "age": 0.1 * i, "rtt_s": 0.001 * i, "http": ["10.0.0.1", 8100 + i]}
        for i, n in enumerate(names)
    ]  # fmt: skip
    reqs = []
    for k in range(n_requests):
        shares: list[list[Any]] = []
        for p in rng.sample(names, rng.randint(1, 6)):
            q, t, c = rng.uniform(0, 0.3), rng.uniform(0, 0.1), rng.uniform(0.1, 1.5)
            shares.append([p, rng.randint(1, 4), q, t, c, 0.01, 0.01 + q + t + c + 0.02])
        ms = max(s[6] for s in shares)
        reqs.append(
            {"id": f"{k:016x}", "kind": "generate", "state": "done", "created": 1.7e9 + k,
             "finished": 1.7e9 + k + ms, "progress": [8, 8], "policy": "onnx", "mode": "batch",
             "predicted_s": ms * 0.9, "makespan_s": ms, "shares": shares,
             "shares_total": len(shares)}
        )  # fmt: skip
    return {
        "v": 1, "self": "s00", "t": 1.7e9 + n_requests, "health": {"uptime_s": 99, "alive_peers": n_peers},
        "peers": peers, "peers_total": n_peers, "requests": reqs[::-1],
        "totals": {"states": {"done": n_requests}, "policies": {"onnx": n_requests},
                   "modes": {"batch": n_requests}, "failures": {},
                   "makespan": {"edges": [0.1, 1.0, 10.0], "counts": [0, 50, 150, 0],
                                "n": n_requests, "mean_s": 1.2}},
    }  # fmt: skip


def test_dashboard_in_chromium(peers: Peers, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base0, base1 = peers.urls
    # a few requests: an even split over both peers, one local, one steps chain at the other peer
    asked = [
        (base0, {"count": 4, "label": 3, "steps": STEPS, "seed": 1, "mode": "batch", "policy": "equal"}),
        (base0, {"count": 2, "label": 5, "steps": STEPS, "seed": 2, "mode": "local", "policy": "local"}),
        (base1, {"count": 1, "label": 7, "steps": STEPS, "seed": 3, "mode": "steps", "policy": "equal"}),
    ]  # fmt: skip
    jobs = []
    for url, body in asked:
        job = call(url + "/v1/generate", body)
        assert job["state"] == "done", job
        jobs.append(job)
    shares = [len(j["result"]["timing"]["peers"]) for j in jobs]
    assert shares[0] == 2 and shares[1] == 1, shares  # equal over two peers; local alone
    assert {t["peer"] for t in jobs[0]["result"]["timing"]["peers"]} == {"p0", "p1"}

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = chrome(tmp_path / "profile")
    try:
        driver.get(base0 + "/ui")
        # the page holds no data: it asks for the token, then keeps it for the tab
        form = wait_for("the token form", lambda: driver.find_element(By.ID, "token-form"))
        wait_for("the token form shown", form.is_displayed)
        driver.find_element(By.ID, "token-input").send_keys(TOKEN)
        form.find_element(By.TAG_NAME, "button").click()
        assert driver.execute_script("return sessionStorage.getItem('amcoedge.token')") == TOKEN

        def peer_rows() -> list[str]:
            return [
                e.get_attribute("data-peer")
                for e in driver.find_elements(By.CSS_SELECTOR, "#peers tr.peer")
            ]

        assert sorted(wait_for("both peers listed", peer_rows)) == ["p0", "p1"]
        status = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#peers .badge")]
        assert status == ["alive", "alive"]

        def bars(job_id: str) -> int | None:
            rows = driver.find_elements(By.CSS_SELECTOR, f'.req[data-job="{job_id}"]')
            if not rows:
                return None
            return len(rows[0].find_elements(By.CSS_SELECTOR, "svg.gantt g.share"))

        for job, n in zip(jobs[:2], shares[:2], strict=True):
            assert wait_for(f"the timeline of {job['id']}", functools.partial(bars, job["id"])) == n
        # segments inside the bars: compute is always there
        first = driver.find_element(By.CSS_SELECTOR, f'.req[data-job="{jobs[0]["id"]}"]')
        assert len(first.find_elements(By.CSS_SELECTOR, "g.share rect.seg.c")) == 2
        # totals since start (the warm-up-free peer saw exactly these two at p0)
        policy_counts = {
            e.get_attribute("data-key"): e.find_elements(By.TAG_NAME, "td")[1].text
            for e in driver.find_elements(By.CSS_SELECTOR, "#totals tr.policy-count")
        }
        assert policy_counts == {"equal": "1", "local": "1"}, policy_counts
        # clicking a request opens its full breakdown (from /v1/jobs/{id}, with the token)
        first.click()
        detail = driver.find_element(By.ID, "detail")
        wait_for("the breakdown", detail.is_displayed)
        wait_for(
            "the breakdown's share table",
            lambda: len(detail.find_elements(By.CSS_SELECTOR, "table.shares tbody tr")) == 2,
        )
        wait_for(
            "the images", lambda: len(detail.find_elements(By.CSS_SELECTOR, ".images img")) == 4
        )
        assert "equal" in detail.text and "batch" in detail.text
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(ARTIFACTS / "ui.png"))
        print(f"\nscreenshot: {ARTIFACTS / 'ui.png'}")

        # the other peer's view, through this peer's proxy
        Select(driver.find_element(By.ID, "peer-select")).select_by_value("p1")
        wait_for("p1's view", lambda: driver.find_element(By.ID, "self-name").text == "p1")
        assert wait_for("p1's steps request", lambda: bars(jobs[2]["id"])) == shares[2]
        driver.find_element(By.CSS_SELECTOR, f'.req[data-job="{jobs[2]["id"]}"]').click()
        wait_for(
            "p1's breakdown through the proxy",
            lambda: (
                "steps" in driver.find_element(By.ID, "detail-body").text
                and len(driver.find_elements(By.CSS_SELECTOR, "#detail .images img")) == 1
            ),
        )
        driver.save_screenshot(str(ARTIFACTS / "ui-other-peer.png"))

        # 20 peers and 200 requests: rendered whole, without live updates overwriting them
        snap = synthetic_snapshot()
        took_ms = driver.execute_script(
            "window.amcoedgeUi.stop(); const t0 = performance.now();"
            "window.amcoedgeUi.render(arguments[0]); return performance.now() - t0;",
            snap,
        )
        assert len(driver.find_elements(By.CSS_SELECTOR, "#peers tr.peer")) == 20
        rows = driver.find_elements(By.CSS_SELECTOR, "#requests .req")
        assert len(rows) == 200
        want = sum(len(r["shares"]) for r in snap["requests"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#requests g.share")) == want
        print(f"synthetic render (20 peers, 200 requests, {want} shares): {took_ms:.0f} ms")
        driver.save_screenshot(str(ARTIFACTS / "ui-synthetic.png"))
        logs = [
            e
            for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and e.get("source") != "network"
        ]
        assert not logs, logs
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
