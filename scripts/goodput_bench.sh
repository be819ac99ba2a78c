#!/usr/bin/env bash
# Goodput on one GPU (issue 18's benchmark): the same duet-bench workload
# (ISL 2,048 / OSL 256 random prompts, Poisson arrivals, a sweep of rates)
# against three set-ups of the same GPU, each started fresh:
#   colocated-piggyback      one colocated node, --scheduling piggyback
#   colocated-prefill-first  one colocated node, --scheduling prefill-first
#   disagg                   one prefill + one decode node sharing the GPU
# Goodput counts requests that meet both SLOs (DUET_SLO, default
# "ttft:1000 tpot:50", fixed before the run). Writes per set-up a sweep
# CSV, per-rate JSON and (with python3-matplotlib) a PNG under OUT_DIR, and
# a summary table (summary.txt).
#   scripts/goodput_bench.sh [BUNDLE_DIR] [OUT_DIR]
# BUNDLE_DIR: a scripts/bundle.sh bundle (default: build and bundle).
# DUET_GPU_MODEL: checkpoint dir (default: a qwen3-4b-shape one made here);
# DUET_RATES (default 1,2,4,8), DUET_NUM_PROMPTS (default 48),
# DUET_SETUPS (default all three), DUET_ISL / DUET_OSL (2048 / 256),
# DUET_BACKEND / DUET_KV_TRANSPORT (cuda / cuda-ipc).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-}
OUT=${2:-/tmp/duet-goodput}
mkdir -p "$OUT"
BACKEND=${DUET_BACKEND:-cuda}
source "$ROOT/scripts/bench_lib.sh"
bench_setup
RATES=${DUET_RATES:-1,2,4,8}
N=${DUET_NUM_PROMPTS:-48}
ISL=${DUET_ISL:-2048}
OSL=${DUET_OSL:-256}
SLO=${DUET_SLO:-ttft:1000 tpot:50}
# DUET_BACKEND=cpu DUET_KV_TRANSPORT=ucx run it without a GPU (a smoke
# test on a small model; the numbers mean nothing then).
KV=${DUET_KV_TRANSPORT:-cuda-ipc}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "no GPU")
echo "GPU: $GPU; ISL $ISL, OSL $OSL, $N prompts per rate, rates $RATES, SLO $SLO" | tee "$OUT/summary.txt"


run_setup() {
  local name=$1
  local logs=$OUT/$name
  mkdir -p "$logs"
  local port=$((20000 + RANDOM % 20000))
  local router=127.0.0.1:$port
  local policy=colocated want="prefill_nodes=0 decode_nodes=0 .* colocated_nodes=1"
  [[ $name == disagg ]] && policy=disagg want="prefill_nodes=1 decode_nodes=1 .* colocated_nodes=0"
  "$BIN/duet-router" --listen "$router" --insecure --policy "$policy" \
    >"$logs/router.out" 2>"$logs/router.log" &
  PIDS+=($!)
  sleep 1
  case $name in
    colocated-piggyback|colocated-prefill-first)
      "$BIN/duet-decode" --model "$MODEL" --router "$router" --insecure --backend "$BACKEND" \
        --role colocated --scheduling "${name#colocated-}" \
        $(mem 0.6) --max-num-seqs 128 --max-num-batched-tokens 2048 \
        >"$logs/node.out" 2>"$logs/node.log" &
      PIDS+=($!) ;;
    disagg)
      "$BIN/duet-prefill" --model "$MODEL" --router "$router" --insecure --backend "$BACKEND" \
        $(mem 0.25) --max-num-batched-tokens 8192 \
        --kv-transport "$KV" >"$logs/prefill.out" 2>"$logs/prefill.log" &
      PIDS+=($!)
      "$BIN/duet-decode" --model "$MODEL" --router "$router" --insecure --backend "$BACKEND" \
        $(mem 0.35) --max-num-seqs 128 --max-num-batched-tokens 2048 \
        --kv-transport "$KV" >"$logs/decode.out" 2>"$logs/decode.log" &
      PIDS+=($!) ;;
  esac
  wait_serving "$router" "$want" || { echo "$name: cluster did not start (logs in $logs)" | tee -a "$OUT/summary.txt"; stop_all; return; }
  # Warm-up (first CUDA graph captures, allocator): not measured.
  "$BIN/duet-bench" --router "$router" --insecure --num-prompts 4 --input-len "$ISL" \
    --output-len 16 --request-rate inf --noprogress >/dev/null 2>&1 || true
  read -r -a slo <<<"$SLO"
  "$BIN/duet-bench" --router "$router" --insecure --num-prompts "$N" \
    --input-len "$ISL" --output-len "$OSL" --ignore-eos --seed 1 \
    --sweep-rates "$RATES" --goodput "${slo[@]}" --noprogress \
    --result-filename "$OUT/$name.json" --sweep-csv "$OUT/$name.csv" \
    --sweep-plot none >"$logs/bench.txt" 2>&1 || echo "$name: duet-bench failed" | tee -a "$OUT/summary.txt"
  echo "== $name" >>"$OUT/summary.txt"
  cat "$OUT/$name.csv" >>"$OUT/summary.txt" 2>/dev/null || true
  stop_all
  sleep 2
}

for s in ${DUET_SETUPS:-colocated-piggyback colocated-prefill-first disagg}; do
  run_setup "$s"
done
cat "$OUT/summary.txt"
if python3 -c "import matplotlib" 2>/dev/null; then
  for s in ${DUET_SETUPS:-colocated-piggyback colocated-prefill-first disagg}; do
    [[ -f "$OUT/$s.csv" ]] && python3 "$ROOT/scripts/plot_bench_sweep.py" "$OUT/$s.csv" || true
  done
fi
