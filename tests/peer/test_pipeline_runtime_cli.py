"""Three ``amcoedge peer --model DIR`` processes on a tiny text-to-image pipeline, with a cluster
key and an API token: the official ``openai`` client gets ``n=4`` images (the same bits as one
peer's), and a tiled edit over the three answers with the canvas asked.

Slow: three processes each import torch, diffusers and transformers and calibrate; on the
shared 2-core machine start-up alone took about 110 s at load average 7-12."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from PIL import Image

from peer.diffusion.pipeline.tiny import make_tiny_sd
from peer.harness.cluster import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
PROMPT = "a red house by a lake"


class Peers:
    def __init__(self, tmp: Path, model: Path) -> None:
        for name in ("cluster.key", "api.token"):
            subprocess.run(
                [sys.executable, "-m", "peer", "secret", "new", str(tmp / name)],
                check=True,
                capture_output=True,
            )
        self.token = (tmp / "api.token").read_text().strip()
        ports, https = free_ports(3), free_ports(3)
        self.urls = [f"http://127.0.0.1:{h}" for h in https]
        self.logs = [tmp / f"p{i}.log" for i in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(3):
            args = [
                sys.executable, "-m", "peer", "peer", "--name", f"p{i}",
                "--listen", f"127.0.0.1:{ports[i]}", "--http", f"127.0.0.1:{https[i]}",
                "--model", str(model), "--threads", "1", "--gossip", "local",
                "--secret-file", str(tmp / "cluster.key"),
                "--api-token-file", str(tmp / "api.token"),
            ]  # fmt: skip
            if i:
                args += ["--join", f"127.0.0.1:{ports[0]}"]
            with open(self.logs[i], "wb") as log:
                self.procs.append(
                    subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
                )

    def call(self, url: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, log in zip(self.procs, self.logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"peer exited: {log.read_text()[-3000:]}")
            alive = []
            for u in self.urls:
                try:
                    st, body = self.call(u, "/v1/cluster")
                except OSError:
                    st, body = 0, {}
                alive.append(st == 200 and sum(p["status"] == "alive" for p in body["peers"]))
            if all(a == 3 for a in alive):
                return
            time.sleep(0.5)
        raise RuntimeError("cluster did not converge: " + self.logs[0].read_text()[-3000:])

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    tmp = tmp_path_factory.mktemp("cli")
    model = make_tiny_sd(tmp / "tiny")
    ps = Peers(tmp, model)
    try:
        ps.wait()
        yield ps
    finally:
        ps.stop()


def _img(b64: str | None) -> np.ndarray:
    assert b64 is not None
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"))


def _b64png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_openai_client_n4_over_three_cli_peers(peers: Peers) -> None:
    client = openai.OpenAI(base_url=peers.urls[2] + "/v1", api_key=peers.token, max_retries=0)
    resp = client.images.generate(
        prompt=PROMPT, n=4, size="32x32", extra_body={"steps": 4, "seed": 1}
    )
    got = [_img(d.b64_json) for d in resp.data or []]
    assert len(got) == 4 and all(g.shape == (32, 32, 3) for g in got)
    body = {"prompt": PROMPT, "count": 4, "steps": 4, "seed": 1}
    st, split = peers.call(
        peers.urls[1], "/v1/generate", {**body, "mode": "batch"} | {"policy": "equal"}
    )
    assert st == 200, split
    assert {s["peer"] for s in split["result"]["plan"]["shares"]} == {"p0", "p1", "p2"}
    assert all(
        np.array_equal(_img(b), g) for b, g in zip(split["result"]["images"], got, strict=True)
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=peers.urls[0] + "/v1", api_key="wrong", max_retries=0
        ).images.generate(prompt=PROMPT)


def test_tiled_edit_over_three_cli_peers_answers_the_canvas(peers: Peers) -> None:
    h, w = 64, 96
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[8:56, 12:84] = 255
    body = {"image": _b64png(image), "mask": _b64png(mask), "prompt": PROMPT, "steps": 3}
    st, out = peers.call(peers.urls[0], "/v1/repair", body | {"mode": "tile", "policy": "equal"})
    assert st == 200, out
    res = out["result"]
    assert {s["peer"] for s in res["plan"]["shares"]} == {"p0", "p1", "p2"}
    got = _img(res["images"][0])
    assert got.shape == (h, w, 3)
    assert np.array_equal(got[mask == 0], image[mask == 0])
