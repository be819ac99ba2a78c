#!/usr/bin/env bash
# Tensor parallelism on several GPUs of one host (the multi-GPU runs issue).
# Needs 2+ GPUs; everything it checks runs on the CPU in CI already
# (tests/model/tensor_parallel_test.cc, tests/kv_transfer/, the
# heterogeneous cluster test), this is the same on NCCL and GPU pools.
#   scripts/multi_gpu_check.sh [BUNDLE_DIR] [OUT_DIR]
# BUNDLE_DIR: a scripts/bundle.sh bundle whose bin/ also holds
# kernels_nccl_test (default: build the tree and bundle it).
# 1. kernels_nccl_test: argument checks, one-rank identity, a peer that never
#    joins times out, two-rank all-reduce and ring;
# 2. duet-run on a qwen3-0.6b-shape checkpoint at TP=1 and TP=2, 4, 8 (as
#    many as there are GPUs): each size's tokens next to TP=1's (bf16 sums
#    in another order: a divergence after a near-tie is possible, the first
#    differing position is printed);
# 3. a cluster with a prefill node of TP=2 (GPUs 0-1) and a decode node of
#    TP=1 (GPU 2, or GPU 0 on a 2-GPU host), then P TP=1 -> D TP=2, then KV
#    over NCCL (P on GPU 0, D on GPU 1; TP=2 each on 4 GPUs): greedy
#    requests through duet-cli, compared with duet-run TP=1;
# 4. with e2e_gpu_cluster_test in the bundle, its NCCL transport test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-}
OUT=${2:-/tmp/duet-multi-gpu}
mkdir -p "$OUT"
if [[ -z "$BUNDLE" ]]; then
  (cd "$ROOT" && DUET_BUILD_TARGETS="duet-router duet-prefill duet-decode duet-cli duet-run duet-make-model kernels_nccl_test" \
     scripts/build.sh -DDUET_BUILD_TESTS=ON)
  BUNDLE=$OUT/bundle
  scripts/bundle.sh "$BUNDLE"
  cp "$ROOT/build/tests/kernels/cuda/kernels_nccl_test" "$BUNDLE/bin/"
fi
BIN=$BUNDLE/bin
export LD_LIBRARY_PATH=$BUNDLE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
NGPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
if ((NGPU < 2)); then
  echo "multi_gpu_check: $NGPU GPU(s) visible, needs 2 or more" >&2
  exit 2
fi

echo "== kernels_nccl_test"
"$BIN/kernels_nccl_test" 2>&1 | tee "$OUT/nccl_test.txt"

MODEL=${DUET_TP_MODEL:-/tmp/duet-qwen3-0.6b}
[[ -f "$MODEL/config.json" ]] || "$BIN/duet-make-model" --preset qwen3-0.6b --out "$MODEL"
PROMPT=$(seq -s, 1000 1 1063)  # 64 tokens
tokens() { grep '^generated' | sed 's/.*: //'; }
echo "== duet-run: TP=1 against TP=2..$NGPU"
REF=$("$BIN/duet-run" --backend cuda --model "$MODEL" --prompt-ids "$PROMPT" \
  --max-tokens 32 --ignore-eos | tee "$OUT/run_tp1.txt" | tokens)
echo "TP=1: $REF"
for tp in 2 4 8; do
  ((tp <= NGPU)) || break
  GOT=$("$BIN/duet-run" --backend cuda --model "$MODEL" --prompt-ids "$PROMPT" \
    --max-tokens 32 --ignore-eos --tensor-parallel-size "$tp" |
    tee "$OUT/run_tp$tp.txt" | tokens)
  if [[ "$GOT" == "$REF" ]]; then
    echo "TP=$tp: identical"
  else
    python3 - "$REF" "$GOT" "$tp" <<'EOF'
import sys
a, b, tp = sys.argv[1].split(','), sys.argv[2].split(','), sys.argv[3]
first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"TP={tp}: first difference at generated token {first} ({len(a)} tokens)")
EOF
  fi
done | tee "$OUT/run_compare.txt"

[[ -f "$OUT/certs/node.pem" ]] || "$ROOT/scripts/make_certs.sh" "$OUT/certs" node >/dev/null
TLS=(--tls-cert "$OUT/certs/node.pem" --tls-key "$OUT/certs/node-key.pem" --tls-ca "$OUT/certs/ca.pem")
CLIENT_TLS=(--tls-ca "$OUT/certs/ca.pem")
cluster() {  # P_TP P_DEVICE D_TP D_DEVICE TAG [KV_TRANSPORT]
  local kv=${6:-auto}
  local logs=$OUT/logs_$5 port=$((20000 + RANDOM % 20000))
  mkdir -p "$logs"
  local router=127.0.0.1:$port
  "$BIN/duet-router" --listen "$router" "${TLS[@]}" >"$logs/router.out" 2>"$logs/router.log" &
  local pids=($!)
  sleep 1
  "$BIN/duet-prefill" --model "$MODEL" --router "$router" --backend cuda "${TLS[@]}" \
    --tensor-parallel-size "$1" --device "$2" --kv-cache-memory-fraction 0.3 \
    --kv-transport "$kv" --kv-push request \
    >"$logs/prefill.out" 2>"$logs/prefill.log" &
  pids+=($!)
  "$BIN/duet-decode" --model "$MODEL" --router "$router" --backend cuda "${TLS[@]}" \
    --tensor-parallel-size "$3" --device "$4" --kv-cache-memory-fraction 0.3 \
    --kv-transport "$kv" \
    >"$logs/decode.out" 2>"$logs/decode.log" &
  pids+=($!)
  for _ in $(seq 600); do
    "$BIN/duet-cli" health "${CLIENT_TLS[@]}" --router "$router" --timeout-ms 1000 2>/dev/null |
      grep -q "serving=true prefill_nodes=1 decode_nodes=1 " && break
    sleep 0.2
  done
  local got
  got=$("$BIN/duet-cli" generate "${CLIENT_TLS[@]}" --router "$router" \
    --prompt-ids "$PROMPT" --max-tokens 32 --ignore-eos --seed 0 2>&1 | tee "$logs/cli.txt" |
    head -n 1 | tr ' ' ',' || true)
  echo "P TP=$1 -> D TP=$3 over $kv: ${got:-<no output, see $logs>}"
  [[ "$got" == "$REF" ]] && echo "  equals duet-run TP=1" || echo "  differs from duet-run TP=1: $REF"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
echo "== heterogeneous TP clusters"
D_DEVICE=$((NGPU >= 3 ? 2 : 0))
{
  cluster 2 0 1 "$D_DEVICE" p2_d1
  cluster 1 "$D_DEVICE" 2 0 p1_d2
  # NCCL KV between GPUs (equal TP sizes: NCCL moves whole blocks).
  cluster 1 0 1 1 nccl_p1_d1 nccl
  ((NGPU >= 4)) && cluster 2 0 2 2 nccl_p2_d2 nccl
} | tee "$OUT/clusters.txt"
# The NCCL transport at prompt scale across two GPUs, against NCCL's own
# send/recv of the same bytes (issue 17, run 2): the one-GPU cluster test
# with the prefill node on GPU 0 and the decode node on GPU 1.
if [[ -x "$BIN/e2e_gpu_cluster_test" ]]; then
  echo "== NCCL transport cluster test (GPU 0 -> GPU 1)"
  [[ -f /tmp/duet-m06/config.json ]] || "$BIN/duet-make-model" --preset qwen3-0.6b --out /tmp/duet-m06 >/dev/null
  DUET_BIN_DIR=$BIN DUET_GPU_CLUSTER_MODEL=/tmp/duet-m06 DUET_GPU_NCCL=1 DUET_NCCL_DECODE_DEVICE=1 \
    "$BIN/e2e_gpu_cluster_test" --gtest_filter='*Nccl*' 2>&1 | tee "$OUT/nccl_cluster_test.txt"
fi
echo "results in $OUT"
