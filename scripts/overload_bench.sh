#!/usr/bin/env bash
# Throughput at saturation against overload, and the router's CPU time, on a
# local cluster (the reliability issue's "graceful overload"). The decode
# pool holds about SAT requests at once; the same workload is run closed-loop
# at concurrency SAT, then with OVER requests in flight (most of them wait
# in the router's admission queue). Prints output tokens/s of both, their
# ratio, and the router's CPU seconds per run.
#   scripts/overload_bench.sh [OUT_DIR]
# Env: DUET_BIN (build tree, default build/), MODEL (default: a tiny
# synthetic checkpoint), BACKEND (default cpu), SAT (4), OVER (200),
# REQUESTS (200), DECODE_BLOCKS (48).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
OUT=${1:-/tmp/duet-overload}
SAT=${SAT:-4} OVER=${OVER:-200} REQUESTS=${REQUESTS:-200}
BACKEND=${BACKEND:-cpu} DECODE_BLOCKS=${DECODE_BLOCKS:-48}
mkdir -p "$OUT"
MODEL=${MODEL:-$OUT/tiny}
[[ -f "$MODEL/config.json" ]] || "$BIN/tools/duet-make-model" --preset tiny --out "$MODEL" >/dev/null
PORT=$((20000 + RANDOM % 20000))
# 128 prompt + 64 output tokens = 12 blocks of 16 per request.
ROUTER_ARGS="--max-queued-requests $((OVER + 16))" \
PREFILL_ARGS="--num-kv-blocks 256" \
DECODE_ARGS="--num-kv-blocks $DECODE_BLOCKS --max-num-seqs 64" \
  "$ROOT/scripts/local_cluster.sh" --model "$MODEL" --backend "$BACKEND" \
  --port "$PORT" --log-dir "$OUT/logs" >"$OUT/cluster.out" 2>&1 &
CLUSTER=$!
trap 'kill $CLUSTER 2>/dev/null || true; wait $CLUSTER 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q "cluster ready" "$OUT/cluster.out" && break
  sleep 0.2
done
grep -q "cluster ready" "$OUT/cluster.out" || { cat "$OUT/cluster.out"; exit 1; }
ROUTER_PID=$(pgrep -n -f "duet-router --listen 127.0.0.1:$PORT" || true)
cpu_s() {  # the router's user+system CPU seconds so far
  awk '{print ($14 + $15) / 100}' "/proc/$ROUTER_PID/stat"
}
run() {  # CONCURRENCY TAG
  local before after
  before=$(cpu_s)
  "$BIN/client/duet-bench" --router "127.0.0.1:$PORT" --tls-ca "$OUT/logs/certs/ca.pem" \
    --concurrency "$1" --num-requests "$REQUESTS" --input-len 128 --output-len 64 \
    --vocab-limit 100000 --json-out "$OUT/$2.json" >"$OUT/$2.txt"
  after=$(cpu_s)
  echo "$2: concurrency $1: $(python3 -c "import json;r=json.load(open('$OUT/$2.json'));print(f\"{r['output_throughput_tok_s']:.0f} output tokens/s, {r['completed']} completed, {r.get('failed', 0)} failed\")") ; router CPU $(python3 -c "print(f'{$after - $before:.2f}')") s"
}
{
  run "$SAT" saturation
  run "$OVER" overload
  python3 - "$OUT" <<'EOF'
import json, sys
s = json.load(open(f"{sys.argv[1]}/saturation.json"))["output_throughput_tok_s"]
o = json.load(open(f"{sys.argv[1]}/overload.json"))["output_throughput_tok_s"]
print(f"overload / saturation throughput: {o / s:.2f}")
EOF
} | tee "$OUT/summary.txt"
