#!/usr/bin/env bash
# The demo: builds duet, writes the tiny synthetic Qwen3 checkpoint, starts a
# local cluster (1 router, 1 prefill node, 1 decode node; KV moves between
# the two nodes over UCX; the router tokenizes text with the real Qwen3
# tokenizer), sends real requests through the router with duet-cli (tokens or
# text stream as they are decoded, then per-phase timings), lists the nodes,
# and stops the cluster.
#   scripts/demo.sh            # DUET_DEMO_PORT=50051 picks the router port
# With a GPU visible (and CUDA in the build) both nodes run the CUDA backend
# on GPU 0 with a generated Qwen3-0.6B-shape checkpoint; otherwise the CPU
# reference backend with the tiny one. DUET_DEMO_BACKEND=cpu|cuda forces
# one.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DUET_BUILD_DIR:-build}
DUET_BUILD_DIR=$BUILD_DIR \
  DUET_BUILD_TARGETS="duet-make-model duet-run duet-router duet-prefill duet-decode duet-cli" \
  scripts/build.sh
BIN=$(cd "$BUILD_DIR" && pwd)
BACKEND=${DUET_DEMO_BACKEND:-auto}
PRESET=tiny
if [[ "$BACKEND" == cuda ]] || { [[ "$BACKEND" == auto ]] &&
    command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU' &&
    grep -q 'DUET_WITH_CUDA:BOOL=ON' "$BIN/CMakeCache.txt"; }; then
  BACKEND=cuda PRESET=qwen3-0.6b
else
  BACKEND=cpu
fi
echo "== backend: $BACKEND (model: generated $PRESET checkpoint)"
MODEL_DIR="$BIN/models/$PRESET"
if [[ ! -f "$MODEL_DIR/config.json" ]]; then
  "$BIN/tools/duet-make-model" --preset "$PRESET" --out "$MODEL_DIR"
fi
PORT=${DUET_DEMO_PORT:-$((20000 + RANDOM % 30000))}
ROUTER=127.0.0.1:$PORT
LOG=$(mktemp /tmp/duet-demo.XXXXXX)

echo "== starting a local cluster on $ROUTER"
CLUSTER_DIR=$(mktemp -d /tmp/duet-demo-cluster.XXXXXX)
ROUTER_ARGS="--tokenizer $PWD/assets/qwen3/tokenizer.json" DUET_BIN=$BIN \
  scripts/local_cluster.sh --model "$MODEL_DIR" --port "$PORT" \
  --backend "$BACKEND" --log-dir "$CLUSTER_DIR" >"$LOG" 2>&1 &
CLUSTER=$!
trap 'kill -TERM $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null || true' EXIT
for _ in $(seq 1800); do
  grep -q "cluster ready" "$LOG" && break
  kill -0 $CLUSTER 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
grep -q "cluster ready" "$LOG" || { cat "$LOG"; echo "demo: cluster did not start" >&2; exit 1; }
cat "$LOG"
# The cluster's roles talk mutual TLS; a client only checks the router with
# the cluster's CA.
CLI=("$BIN/client/duet-cli")
TLS=(--tls-ca "$CLUSTER_DIR/certs/ca.pem")

echo; echo "== duet-cli nodes"
"${CLI[@]}" nodes "${TLS[@]}" --router "$ROUTER"
echo; echo "== greedy, 16 tokens (streamed as they are decoded)"
"${CLI[@]}" generate "${TLS[@]}" --router "$ROUTER" \
  --prompt-ids 9707,11,1879,0,576,3974,13876,38835 --max-tokens 16
echo; echo "== sampled (temperature 0.8, top-p 0.9, seed 7), 300-token prompt, 24 tokens"
PROMPT=$(seq -s, 1000 1299)
"${CLI[@]}" generate "${TLS[@]}" --router "$ROUTER" --prompt-ids "$PROMPT" \
  --max-tokens 24 --temperature 0.8 --top-p 0.9 --seed 7
echo; echo "== text in, text out (real Qwen3 tokenizer; the tiny model's weights are random, so the text is too), stop string 'e'"
"${CLI[@]}" generate "${TLS[@]}" --router "$ROUTER" \
  --prompt "Hello, world! 你好" --max-tokens 24 --stop "e"
echo; echo "== the same greedy prompt on the single-process engine (must match)"
"$BIN/tools/duet-run" --model "$MODEL_DIR" --backend "$BACKEND" \
  --prompt-ids 9707,11,1879,0,576,3974,13876,38835 --max-tokens 16 | grep generated
