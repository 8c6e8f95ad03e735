#!/usr/bin/env bash
# Start three peers by hand on this machine, send requests with curl, then stop them.
#   examples/three_peers.sh            (from the repository root; needs curl)
set -euo pipefail
AMCO=${AMCO:-amcoedge}
command -v "$AMCO" >/dev/null || AMCO="python -m peer"
LOGS=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$AMCO peer --name a --listen 127.0.0.1:7101 --http 127.0.0.1:8101 --gossip local >"$LOGS/a.log" 2>&1 & pids+=($!)
$AMCO peer --name b --listen 127.0.0.1:7102 --http 127.0.0.1:8102 --gossip local --join 127.0.0.1:7101 >"$LOGS/b.log" 2>&1 & pids+=($!)
$AMCO peer --name c --listen 127.0.0.1:7103 --http 127.0.0.1:8103 --gossip local --join 127.0.0.1:7101 >"$LOGS/c.log" 2>&1 & pids+=($!)

echo "waiting for the three peers (logs in $LOGS)"
for _ in $(seq 120); do
  n=$(curl -fs http://127.0.0.1:8103/v1/cluster | grep -o '"status": *"alive"' | wc -l || true)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.5
done

echo "--- GET /v1/cluster on peer c"
curl -fs http://127.0.0.1:8103/v1/cluster; echo

echo "--- POST /v1/generate to peer b: 8 images of the digit 3, split by the ONNX policy"
curl -fs -X POST http://127.0.0.1:8102/v1/generate -H 'Content-Type: application/json' \
  -d '{"count": 8, "label": 3, "steps": 20, "seed": 1, "mode": "batch", "policy": "onnx"}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print("plan", r["plan"]["peers"], r["plan"]["policy"], "make-span", r["timing"]["makespan_s"], "s")'

echo "--- one image as raw PNG, its denoising steps chained across peers"
curl -fs -X POST http://127.0.0.1:8101/v1/generate -H 'Content-Type: application/json' \
  -H 'Accept: image/png' -d '{"count": 1, "label": 7, "steps": 20, "seed": 2, "mode": "steps"}' -o seven.png
echo "wrote seven.png ($(wc -c < seven.png) bytes)"

echo "--- a bad request is a 4xx with a stable code"
curl -s -X POST http://127.0.0.1:8101/v1/generate -H 'Content-Type: application/json' -d '{"count": 0}'; echo

echo "--- metrics (first lines)"
curl -fs http://127.0.0.1:8101/metrics | head -n 8
