#!/usr/bin/env bash
# Soak: a local CPU cluster (1 router, 2 prefill, 2 decode nodes, tiny
# model) under mixed load for SECONDS: duet-bench with Poisson arrivals and
# varied lengths, plus clients that give up early (short deadlines: the
# router cancels their requests mid-stream). Every 2 s it samples each
# process's RSS and every node's free KV blocks into OUT/samples.csv.
# At the end it waits for the cluster to drain and fails (exit 1) when a
# node's free blocks do not return to its total, or a process's RSS grew by
# more than 25% + 32 MiB between the first sample after warm-up and the
# last. Prints RSS at start and end and requests by status.
#   scripts/soak.sh [SECONDS [OUT_DIR]]     (default 300 s, /tmp/duet-soak)
# DUET_BIN: a build tree (default build/).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
SECONDS_TOTAL=${1:-300}
OUT=${2:-/tmp/duet-soak}
rm -rf "$OUT"
mkdir -p "$OUT"
MODEL=$OUT/tiny
"$BIN/tools/duet-make-model" --preset tiny --out "$MODEL" >/dev/null
PORT=$((20000 + RANDOM % 20000))
ROUTER=127.0.0.1:$PORT
DECODE_ARGS="--num-kv-blocks 256 --release-quarantine-ms 1500" \
PREFILL_ARGS="--num-kv-blocks 256" \
  "$ROOT/scripts/local_cluster.sh" --model "$MODEL" --backend cpu --prefill 2 \
  --decode 2 --port "$PORT" --log-dir "$OUT/logs" >"$OUT/cluster.out" 2>&1 &
CLUSTER=$!
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  kill "$CLUSTER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 300); do
  grep -q "cluster ready" "$OUT/cluster.out" && break
  sleep 0.2
done
grep -q "cluster ready" "$OUT/cluster.out" || { cat "$OUT/cluster.out"; exit 1; }
TLS=(--tls-ca "$OUT/logs/certs/ca.pem")
procs() {  # "name pid" of the cluster's processes
  for name in duet-router duet-prefill duet-decode; do
    pgrep -f "$name .*127.0.0.1:$PORT" | awk -v n="$name" '{print n, $1}'
  done
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
free_blocks() {  # "free/total" per node, space separated
  "$BIN/client/duet-cli" nodes "${TLS[@]}" --router "$ROUTER" --timeout-ms 2000 |
    awk 'NR > 1 {printf "%s ", $4}'
}

echo "t_s,process,pid,rss_kb" >"$OUT/samples.csv"
echo "t_s,free_blocks" >"$OUT/blocks.csv"
# Mixed load: rates well inside capacity, lengths from 16 to 400 in and
# 8 to 96 out, for the whole run.
REQUESTS=$((SECONDS_TOTAL * 8))
"$BIN/client/duet-bench" "${TLS[@]}" --router "$ROUTER" --request-rate 8 \
  --num-requests "$REQUESTS" --input-len 16 --input-len-max 400 \
  --output-len 8 --output-len-max 96 --vocab-limit 100000 --seed 7 \
  --json-out "$OUT/bench.json" >"$OUT/bench.txt" 2>&1 &
PIDS+=($!)
BENCH=$!
# Impatient clients: 60 ms deadlines on 200-token streams.
(
  n=0 cancelled=0
  while :; do
    if "$BIN/client/duet-cli" generate "${TLS[@]}" --router "$ROUTER" \
        --prompt-ids 1,2,3,4,5,6,7,8 --max-tokens 200 --ignore-eos \
        --timeout-ms 60 >/dev/null 2>&1; then :; else cancelled=$((cancelled + 1)); fi
    n=$((n + 1))
    echo "$n $cancelled" >"$OUT/impatient.txt"
    sleep 0.2
  done
) &
IMPATIENT=$!
PIDS+=($IMPATIENT)
START=$(date +%s)
while (($(date +%s) - START < SECONDS_TOTAL)) && kill -0 "$BENCH" 2>/dev/null; do
  t=$(($(date +%s) - START))
  while read -r name pid; do
    echo "$t,$name,$pid,$(rss_kb "$pid")" >>"$OUT/samples.csv"
  done < <(procs)
  echo "$t,$(free_blocks)" >>"$OUT/blocks.csv"
  sleep 2
done
kill "$IMPATIENT" 2>/dev/null || true
wait "$IMPATIENT" 2>/dev/null || true
# The bench ends on its own (it writes its report then), within a minute.
for _ in $(seq 120); do kill -0 "$BENCH" 2>/dev/null || break; sleep 0.5; done
kill "$BENCH" 2>/dev/null || true
wait "$BENCH" 2>/dev/null || true
PIDS=()

# Drain: quarantined blocks (1.5 s) and cancelled streams come back.
ok=1
for _ in $(seq 60); do
  blocks=$(free_blocks)
  if [[ -n "$blocks" ]] && awk '{for (i = 1; i <= NF; i++) {split($i, a, "/"); if (a[1] != a[2]) exit 1}}' <<<"$blocks"; then
    break
  fi
  sleep 0.5
done
echo "free blocks after drain: $blocks"
awk '{for (i = 1; i <= NF; i++) {split($i, a, "/"); if (a[1] != a[2]) exit 1}}' <<<"$blocks" ||
  { echo "soak: KV blocks did not all come back" >&2; ok=0; }
python3 - "$OUT" <<'EOF' || ok=0
import csv, json, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
last_t = max(int(r["t_s"]) for r in rows)
warm = min(10, last_t // 3)  # first sample after warm-up
by = {}
for r in rows:
    by.setdefault((r["process"], r["pid"]), []).append((int(r["t_s"]), int(r["rss_kb"])))
bad = False
for (name, pid), s in sorted(by.items()):
    s.sort()
    start = next((kb for t, kb in s if t >= warm), s[0][1])
    end = s[-1][1]
    grew = end > start * 1.25 + 32 * 1024
    bad |= grew
    print(f"{name} {pid}: RSS {start / 1024:.1f} MiB at {warm} s -> {end / 1024:.1f} MiB at {s[-1][0]} s{'  GREW' if grew else ''}")
b = json.load(open(f"{out}/bench.json")) if __import__("os").path.exists(f"{out}/bench.json") else {}
imp = open(f"{out}/impatient.txt").read().split() if __import__("os").path.exists(f"{out}/impatient.txt") else ["0", "0"]
print(f"bench: {b.get('completed', 0)} completed, {b.get('failed', 0)} failed "
      f"{b.get('failures', {})}; impatient clients: {imp[0]} sent, {imp[1]} ended by their deadline")
sys.exit(1 if bad else 0)
EOF
if ((ok)); then echo "soak: ok"; else echo "soak: FAILED (see $OUT)" >&2; exit 1; fi
