#!/usr/bin/env bash
# Prefix caching on one GPU (issue 20's benchmark): duet-bench's
# prefix-repetition workload (one 2,000-token system prompt shared by 90% of
# requests, 100-token unique suffixes, Poisson arrivals) against a
# disaggregated cluster (one prefill + one decode node sharing the GPU),
# started fresh twice: caching off, then on (both nodes'
# --enable-prefix-caching). Reports TTFT p50 / p99 (and, over the requests
# that hit a cache, the client's TTFT, the server's prefill time and the
# router's TTFT past the nodes' queue + prefill + transfer, medians),
# prefill tokens computed
# (prompt tokens placed less those the prefill node took from its cache,
# from `duet-cli health`), and KV bytes sent (the prefill node's
# duet:kv_transfer_bytes_total), and writes a summary table
# (summary.txt) and duet-bench's JSON per set-up under OUT_DIR; on a GPU it
# also times the suffix prefill alone (duet-model-bench --prefill_cached).
#   scripts/prefix_cache_bench.sh [BUNDLE_DIR] [OUT_DIR]
# BUNDLE_DIR: a scripts/bundle.sh bundle (default: build and bundle).
# DUET_GPU_MODEL: checkpoint dir (default: a qwen3-4b-shape one made here);
# DUET_RATE (default 4 requests/s), DUET_NUM_PROMPTS (default 200),
# DUET_PREFIX_LEN / DUET_SUFFIX_LEN / DUET_PREFIX_SHARE (2000 / 100 / 0.9),
# DUET_OSL (32), DUET_BACKEND / DUET_KV_TRANSPORT (cuda / cuda-ipc; cpu / ucx
# runs it as a smoke test without a GPU, the numbers then mean nothing),
# DUET_TOPOLOGIES ("disagg"; "disagg colocated" also runs one colocated node,
# which on one GPU keeps prefill and decode in one CUDA context instead of
# two processes the GPU time-slices between).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-}
OUT=${2:-/tmp/duet-prefix-cache}
mkdir -p "$OUT"
BACKEND=${DUET_BACKEND:-cuda}
source "$ROOT/scripts/bench_lib.sh"
bench_setup
RATE=${DUET_RATE:-4}
N=${DUET_NUM_PROMPTS:-200}
PREFIX=${DUET_PREFIX_LEN:-2000}
SUFFIX=${DUET_SUFFIX_LEN:-100}
SHARE=${DUET_PREFIX_SHARE:-0.9}
OSL=${DUET_OSL:-32}
KV=${DUET_KV_TRANSPORT:-cuda-ipc}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "no GPU")
echo "GPU: $GPU; prefix $PREFIX tokens shared by $SHARE of $N requests, suffix $SUFFIX, OSL $OSL, rate $RATE/s" |
  tee "$OUT/summary.txt"
TOPOLOGIES=${DUET_TOPOLOGIES:-disagg}
printf '%-10s %-8s %10s %10s %12s %14s %14s %10s %10s %10s %10s\n' topology caching ttft_p50 ttft_p99 prompt_tok \
  prefill_tok kv_sent_MB decode_cached hit_ttft50 hit_pref50 hit_rest50 >>"$OUT/summary.txt"


# The value of a counter on a node's /metrics (0 when absent).
metric() {
  python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
total = 0.0
for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode().splitlines():
    if line.startswith(name):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))
EOF
}

run_setup() {
  local topo=$1 caching=$2
  local name=$topo-caching-$caching
  local logs=$OUT/$name
  mkdir -p "$logs"
  local port=$((20000 + RANDOM % 20000))
  local router=127.0.0.1:$port pmetrics=$((port + 1))
  local flag=--enable-prefix-caching
  [[ $caching == off ]] && flag=--noenable-prefix-caching
  local want="prefill_nodes=1 decode_nodes=1 "
  "$BIN/duet-router" --listen "$router" --insecure --policy "$topo" \
    >"$logs/router.out" 2>"$logs/router.log" &
  PIDS+=($!)
  sleep 1
  if [[ $topo == colocated ]]; then
    want="prefill_nodes=0 decode_nodes=0 .* colocated_nodes=1"
    "$BIN/duet-decode" --model "$MODEL" --router "$router" --insecure --backend "$BACKEND" \
      --role colocated $(mem 0.6) --max-num-seqs 128 --max-num-batched-tokens 2048 "$flag" \
      --metrics-port "$pmetrics" >"$logs/node.out" 2>"$logs/node.log" &
    PIDS+=($!)
  else
    "$BIN/duet-prefill" --model "$MODEL" --router "$router" --insecure --backend "$BACKEND" \
      $(mem 0.3) --max-num-batched-tokens 8192 "$flag" --metrics-port "$pmetrics" \
      --kv-transport "$KV" >"$logs/prefill.out" 2>"$logs/prefill.log" &
    PIDS+=($!)
    "$BIN/duet-decode" --model "$MODEL" --router "$router" --insecure --backend "$BACKEND" \
      $(mem 0.35) --max-num-seqs 128 --max-num-batched-tokens 2048 "$flag" \
      --kv-transport "$KV" >"$logs/decode.out" 2>"$logs/decode.log" &
    PIDS+=($!)
  fi
  wait_serving "$router" "$want" || { echo "$name: cluster did not start (logs in $logs)" | tee -a "$OUT/summary.txt"; stop_all; return; }
  # Warm-up on other prompts (graph captures, allocator): not measured,
  # and not the benchmark's prefix, so the cached run starts cold.
  "$BIN/duet-bench" --router "$router" --insecure --num-prompts 4 --input-len "$((PREFIX + SUFFIX))" \
    --output-len 8 --request-rate inf --seed 99 --noprogress >/dev/null 2>&1 || true
  local before sent_before h_before
  before=$("$BIN/duet-cli" health --insecure --router "$router")
  sent_before=$(metric "$pmetrics" duet:kv_transfer_bytes_total)
  h_before=$(metric "$pmetrics" duet:prefix_cache_hits_total)
  "$BIN/duet-bench" --router "$router" --insecure --dataset-name prefix-repetition \
    --num-prefixes 1 --prefix-len "$PREFIX" --prefix-share "$SHARE" --input-len "$SUFFIX" \
    --output-len "$OSL" --ignore-eos --num-prompts "$N" --request-rate "$RATE" --seed 1 \
    --noprogress --save-detailed --result-filename "$OUT/$name.json" >"$logs/bench.txt" 2>&1 ||
    echo "$name: duet-bench failed" | tee -a "$OUT/summary.txt"
  local after sent hit
  after=$("$BIN/duet-cli" health --insecure --router "$router")
  sent=$(( $(metric "$pmetrics" duet:kv_transfer_bytes_total) - sent_before ))
  hit=$(( $(metric "$pmetrics" duet:prefix_cache_hits_total) - h_before ))
  python3 - "$OUT/$name.json" "$topo" "$caching" "$before" "$after" "$sent" "$hit" \
    >>"$OUT/summary.txt" <<'EOF'
import json, re, sys
path, topo, caching, before, after, sent, hit = sys.argv[1:]
r = json.load(open(path))
def field(s, k):
    return int(re.search(rf"\b{k}=(\d+)", s).group(1))
d = {k: field(after, k) - field(before, k)
     for k in ("prompt_tokens", "prefill_cached_tokens", "decode_cached_tokens")}
# Prompt tokens placed less those the computing node (prefill or
# colocated) took from its prefix cache.
computed = d['prompt_tokens'] - int(hit)
# Requests that hit a prefix cache, medians: their client TTFT, the
# server's prefill time (prefill node or colocated node), and the rest of
# the router's TTFT past the nodes' queue, prefill and KV transfer (RPC
# legs between router and nodes).
def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")
hits = [q for q in r.get("requests", []) if q["status"] == "OK" and q["cached_prompt_tokens"] > 0]
hit_ttft = median([q["ttft_ms"] for q in hits])
hit_prefill = median([q["server_timings_ms"]["prefill_ms"] for q in hits])
def rest(t):
    return t["ttft_ms"] - t["queue_ms"] - t["prefill_ms"] - t.get("transfer_ms", 0.0)
hit_rest = median([rest(q["server_timings_ms"]) for q in hits])
print(f"{topo:<10} {caching:<8} {r['median_ttft_ms']:10.1f} {r['p99_ttft_ms']:10.1f} {d['prompt_tokens']:12d} "
      f"{computed:14d} {int(sent) / 1e6:14.1f} {d['decode_cached_tokens']:10d} {hit_ttft:10.1f} {hit_prefill:10.1f} "
      f"{hit_rest:10.2f}")
EOF
  stop_all
  sleep 2
}

for t in $TOPOLOGIES; do
  for c in off on; do
    run_setup "$t" "$c"
  done
done
# The same prefill alone in one process, GPU otherwise idle: the suffix
# after a cached prefix (what a hit computes) and the whole prompt, each
# next to its floor; the gap to the served TTFT is the serving path's.
if [[ "$BACKEND" == cuda && -x "$BIN/duet-model-bench" ]]; then
  echo "single process (duet-model-bench, --prefill_cached):" >>"$OUT/summary.txt"
  "$BIN/duet-model-bench" --model "$MODEL" --iters 8 --batches 0 \
    --prefill "$SUFFIX,$((PREFIX + SUFFIX))" --prefill_cached "0,$PREFIX" \
    2>&1 | sed -n '/^prompt/,$p' >>"$OUT/summary.txt" || true
fi
cat "$OUT/summary.txt"
