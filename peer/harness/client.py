"""A small blocking HTTP client for a peer's API (used by ``submit``, the demo and scripts)."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Client:
    base_url: str  # http://host:port
    timeout: float = 120.0

    def _call(self, method: str, path: str, body: Any = None) -> tuple[Any, float]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url.rstrip("/") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
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
