#!/usr/bin/env bash
# The cluster on one GPU, checked and timed (issue 14). Needs a GPU.
#   scripts/gpu_cluster_test.sh [BUNDLE_DIR] [OUT_DIR]
# BUNDLE_DIR: a scripts/bundle.sh bundle that also holds the test binary
# e2e_gpu_cluster_test in bin/ (default: build the tree and use it).
# 1. writes a qwen3-4b-shape checkpoint (8 GB) unless DUET_GPU_MODEL names one;
# 2. runs tests/e2e/gpu_cluster_test.cc: alone prompts of 1..6000 tokens equal
#    duet-run --backend cuda, 64 concurrent requests tie-aware, forced
#    preemption, no leaked block after the runs and 32 cancellations;
# 3. benchmarks (DUET_SKIP_CHECKS=1 runs only these): duet-model-bench
#    (prefill 512/2048/8192, decode step at batch 1/32/128 x 512) and, for
#    each KV transport in DUET_KV_TRANSPORTS (default "ucx cuda-ipc"), the
#    cluster's TTFT for prompts of 512, 2048 and 8192 tokens and inter-token
#    latency at concurrency 1, 32 and 128 (duet-bench), both nodes on the
#    same GPU; each --kv-push mode in DUET_KV_PUSH (default "layer") gets
#    its TTFT rows, the first one also the inter-token rows (DUET_SKIP_ITL=1
#    skips them);
# 4. duet-kv-bench: each transport's GB/s against its floors and the
#    handover latency for 512, 2048 and 8192 tokens of qwen3-4b KV.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-}
OUT=${2:-/tmp/duet-gpu-cluster}
mkdir -p "$OUT"
if [[ -z "$BUNDLE" ]]; then
  (cd "$ROOT" && DUET_BUILD_TARGETS="duet-router duet-prefill duet-decode duet-cli duet-bench duet-run duet-make-model duet-model-bench e2e_gpu_cluster_test" \
     scripts/build.sh -DDUET_BUILD_TESTS=ON)
  BUNDLE=$OUT/bundle
  scripts/bundle.sh "$BUNDLE"
  cp "$ROOT/build/tests/e2e/e2e_gpu_cluster_test" "$ROOT/build/tools/duet-kv-bench" "$BUNDLE/bin/"
fi
BIN=$BUNDLE/bin
export LD_LIBRARY_PATH=$BUNDLE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
MODEL=${DUET_GPU_MODEL:-/tmp/duet-qwen3-4b}
[[ -f "$MODEL/config.json" ]] || "$BIN/duet-make-model" --preset qwen3-4b --out "$MODEL"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# Roles talk mutual TLS with a CA made for this run; clients check the router.
[[ -f "$OUT/certs/node.pem" ]] || "$ROOT/scripts/make_certs.sh" "$OUT/certs" node >/dev/null
TLS=(--tls-cert "$OUT/certs/node.pem" --tls-key "$OUT/certs/node-key.pem" --tls-ca "$OUT/certs/ca.pem")
CLIENT_TLS=(--tls-ca "$OUT/certs/ca.pem")

if [[ -z "${DUET_SKIP_CHECKS:-}" ]]; then
  echo "== correctness: tests/e2e/gpu_cluster_test.cc"
  DUET_BIN_DIR=$BIN DUET_GPU_CLUSTER_MODEL=$MODEL \
    "$BIN/e2e_gpu_cluster_test" 2>&1 | tee "$OUT/gpu_cluster_test.txt"
fi

echo "== duet-model-bench (the single-process floors and step times)"
"$BIN/duet-model-bench" --model "$MODEL" --batches 1,32,128 --contexts 512 \
  --prefill 512,2048,8192 --iters 10 2>&1 | tee "$OUT/model_bench.txt"

PUSHES=(${DUET_KV_PUSH:-layer})
for TRANSPORT in ${DUET_KV_TRANSPORTS:-ucx cuda-ipc}; do
for PUSH in "${PUSHES[@]}"; do
echo "== cluster on one GPU, KV over $TRANSPORT pushed per $PUSH: TTFT and inter-token latency"
TAG=${TRANSPORT}_$PUSH
LOGS=$OUT/logs_$TAG
mkdir -p "$LOGS"
PORT=$((20000 + RANDOM % 20000))
ROUTER=127.0.0.1:$PORT
"$BIN/duet-router" --listen "$ROUTER" "${TLS[@]}" >"$LOGS/router.out" 2>"$LOGS/router.log" &
PIDS=($!)
trap 'kill ${PIDS[*]} 2>/dev/null || true' EXIT
sleep 1
"$BIN/duet-prefill" --model "$MODEL" --router "$ROUTER" --backend cuda "${TLS[@]}" \
  --kv-cache-memory-fraction 0.35 --max-num-batched-tokens 8192 \
  --kv-transport "$TRANSPORT" --kv-push "$PUSH" >"$LOGS/prefill.out" 2>"$LOGS/prefill.log" &
PIDS+=($!)
"$BIN/duet-decode" --model "$MODEL" --router "$ROUTER" --backend cuda "${TLS[@]}" \
  --kv-cache-memory-fraction 0.5 --max-num-seqs 128 \
  --kv-transport "$TRANSPORT" >"$LOGS/decode.out" 2>"$LOGS/decode.log" &
PIDS+=($!)
for _ in $(seq 600); do
  "$BIN/duet-cli" health "${CLIENT_TLS[@]}" --router "$ROUTER" --timeout-ms 1000 2>/dev/null |
    grep -q "serving=true prefill_nodes=1 decode_nodes=1 " && break
  sleep 0.2
done
cat "$LOGS"/*.out
for len in 512 2048 8192; do
  echo "-- TTFT, prompt $len tokens, alone"
  "$BIN/duet-bench" "${CLIENT_TLS[@]}" --router "$ROUTER" --num-requests 6 --concurrency 1 \
    --input-len "$len" --output-len 2 --vocab-limit 150000 \
    --json-out "$OUT/ttft_${TAG}_$len.json" | tee "$OUT/ttft_${TAG}_$len.txt"
done
if [[ -z "${DUET_SKIP_ITL:-}" && "$PUSH" == "${PUSHES[0]}" ]]; then
for c in 1 32 128; do
  echo "-- inter-token latency, concurrency $c, prompts of 512, 128 tokens out"
  "$BIN/duet-bench" "${CLIENT_TLS[@]}" --router "$ROUTER" --num-requests $((c < 8 ? 8 : 2 * c)) \
    --concurrency "$c" --input-len 512 --output-len 128 --vocab-limit 150000 \
    --json-out "$OUT/itl_${TAG}_$c.json" | tee "$OUT/itl_${TAG}_$c.txt"
done
fi
kill "${PIDS[@]}" 2>/dev/null || true
wait "${PIDS[@]}" 2>/dev/null || true
done
done
if [[ -x "$BIN/duet-kv-bench" ]]; then
  echo "== duet-kv-bench: KV handover per transport (qwen3-4b KV)"
  "$BIN/duet-kv-bench" --backend=cuda --transports=cuda-ipc,ucx \
    --tokens=512,2048,8192 --layer_us=500 --json_out="$OUT/kv_bench.json" \
    2>&1 | tee "$OUT/kv_bench.txt"
fi
echo "results in $OUT"
