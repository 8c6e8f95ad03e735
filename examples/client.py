"""A short Python client: generate images on any peer and save them as PNGs.

python examples/client.py --peer 127.0.0.1:8101 --count 8 --label 5 --out out/
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.request
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peer", default="127.0.0.1:8101", help="HOST:PORT of any peer's HTTP API")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--label", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="auto", choices=["auto", "batch", "steps", "local"])
    ap.add_argument(
        "--policy", default="onnx", choices=["onnx", "greedy", "random", "equal", "local"]
    )
    ap.add_argument("--out", default="out")
    args = ap.parse_args()

    body = {k: getattr(args, k) for k in ("count", "label", "steps", "seed", "mode", "policy")}
    req = urllib.request.Request(
        f"http://{args.peer}/v1/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        job = json.load(resp)
    result = job["result"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, b64 in enumerate(result["images"]):
        (out / f"{job['id']}-{i}-label{result['labels'][i]}.png").write_bytes(base64.b64decode(b64))
    plan, timing = result["plan"], result["timing"]
    print(f"{len(result['images'])} images in {out}/; mode {plan['mode']}, policy {plan['policy']}")
    print(f"make-span {timing['makespan_s']:.3f} s")
    for t in timing["peers"]:
        print(
            f"  {t['peer']:>8}: {t['units']} units, queue {t['queue_s']:.3f} s, "
            f"transfer {t['transfer_s']:.3f} s, compute {t['compute_s']:.3f} s"
        )


if __name__ == "__main__":
    main()
