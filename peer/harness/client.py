"""A small blocking HTTP client for a peer's API (used by ``submit``, the demo and scripts)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# What a dead or restarting origin looks like from here (not an HTTP error answer).
_GONE = (ConnectionError, http.client.RemoteDisconnected, http.client.IncompleteRead)


@dataclass
class Client:
    """A peer's HTTP API. Requests carry an idempotency key; when the peer that took one dies
    before answering (reset, refused, closed), the request is sent again, with the same key and
    ``X-Retry-Of``, to the next peer in ``fallbacks`` (or, with ``discover``, another peer of
    the cluster as the first one listed it): it runs once, on the first origin if that one
    survives, else on the new one."""

    base_url: str  # http://host:port
    timeout: float = 120.0
    token: str | None = None  # the peers' API token, if they need one
    fallbacks: tuple[str, ...] = ()  # other peers' base URLs to retry on
    discover: bool = False  # learn fallbacks from the first peer's /v1/cluster
    retries: list[dict[str, str]] = field(default_factory=list)  # what was retried where

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        return {**h, **(extra or {})}

    def _send(
        self, base: str, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[Any, float]:
        req = urllib.request.Request(
            base.rstrip("/") + path, data=data, method=method, headers=headers
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                raise ClientError(exc.code, err["code"], err["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise ClientError(exc.code, "http", raw.decode(errors="replace")) from None
        return json.loads(raw), time.perf_counter() - t0

    def _call(self, method: str, path: str, body: Any = None) -> tuple[Any, float]:
        data = None if body is None else json.dumps(body).encode()
        if method != "POST":
            return self._send(self.base_url, method, path, data, self._headers())
        key = secrets.token_hex(16)
        targets = [self.base_url, *self._fallbacks()]
        last: BaseException | None = None
        for i, base in enumerate(targets):
            extra = {"Idempotency-Key": key}
            if i > 0:
                extra["X-Retry-Of"] = targets[i - 1]
            try:
                return self._send(base, method, path, data, self._headers(extra))
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, _GONE) or i == len(targets) - 1:
                    raise
                last = exc
            except _GONE as exc:
                if i == len(targets) - 1:
                    raise
                last = exc
            self.retries.append({"from": base, "to": targets[i + 1], "why": str(last)})
        raise AssertionError("unreachable")  # the loop returns or raises

    def _fallbacks(self) -> list[str]:
        if self.fallbacks or not self.discover:
            return list(self.fallbacks)
        try:
            peers = self.cluster().get("peers", [])
        except (ClientError, OSError, ValueError):
            return []
        out = []
        for p in peers:
            host, port = p.get("addresses", {}).get("http", [None, None])
            url = f"http://{host}:{port}"
            if p.get("status") == "alive" and host and url.rstrip("/") != self.base_url.rstrip("/"):
                out.append(url)
        self.fallbacks = tuple(out)
        return out

    def generate(self, **body: Any) -> tuple[dict[str, Any], float]:
        res, wall = self._call("POST", "/v1/generate", body)
        return res, wall

    def repair(
        self, image: np.ndarray, mask: np.ndarray, **body: Any
    ) -> tuple[dict[str, Any], float]:
        payload = {"image": png_b64(image), "mask": png_b64(mask), **body}
        res, wall = self._call("POST", "/v1/repair", payload)
        return res, wall

    def cluster(self) -> dict[str, Any]:
        res, _ = self._call("GET", "/v1/cluster")
        return res

    def job(self, job_id: str) -> dict[str, Any]:
        res, _ = self._call("GET", f"/v1/jobs/{job_id}")
        return res


def png_b64(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_images(result: dict[str, Any]) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for b in result.get("images", []):
        with Image.open(io.BytesIO(base64.b64decode(b))) as im:
            out.append(np.asarray(im.convert("L"), dtype=np.uint8))
    return out
