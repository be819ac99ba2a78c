#!/usr/bin/env bash
# Starts 1 router + N prefill + M decode nodes on this host and keeps them
# running until Ctrl-C (or SIGTERM), then stops them all.
#   scripts/local_cluster.sh --model DIR [--prefill N] [--decode M]
#                            [--port 50051] [--log-dir DIR]
#                            [--backend auto|cpu|cuda] [--device N]
# Prints "cluster ready: router at 127.0.0.1:PORT" once every node has
# registered. --backend auto (the default) runs the nodes on GPU --device
# when one is visible, else on the CPU; on the GPU, nodes split 80% of its
# memory evenly (--kv-cache-memory-fraction) unless the *_ARGS set it, and
# move KV over CUDA IPC (--kv-transport auto, the default, picks it for
# nodes on one host). Roles talk mutual TLS with certificates of a CA made
# for the cluster in LOG_DIR/certs (or CERT_DIR's; scripts/make_certs.sh);
# clients need --tls-ca LOG_DIR/certs/ca.pem (INSECURE=1: plaintext, every
# binary with --insecure). Extra flags: ROUTER_ARGS / PREFILL_ARGS /
# DECODE_ARGS env variables (e.g. ROUTER_ARGS="--tokenizer assets/qwen3").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
# A build tree (router/duet-router, ...) or a scripts/bundle.sh bundle (bin/).
if [[ -x "$BIN/bin/duet-router" ]]; then
  export LD_LIBRARY_PATH="$BIN/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ROUTER_BIN=$BIN/bin/duet-router PREFILL_BIN=$BIN/bin/duet-prefill
  DECODE_BIN=$BIN/bin/duet-decode CLI_BIN=$BIN/bin/duet-cli
else
  ROUTER_BIN=$BIN/router/duet-router PREFILL_BIN=$BIN/prefill_node/duet-prefill
  DECODE_BIN=$BIN/decode_node/duet-decode CLI_BIN=$BIN/client/duet-cli
fi
MODEL="" PREFILL=1 DECODE=1 PORT=50051 LOG_DIR="" BACKEND=auto DEVICE=0
while (($#)); do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --prefill) PREFILL=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --log-dir) LOG_DIR=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "local_cluster.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -n "$MODEL" ]] || { echo "local_cluster.sh: --model is required" >&2; exit 2; }
[[ "$PREFILL" =~ ^[1-9][0-9]*$ && "$DECODE" =~ ^[1-9][0-9]*$ ]] ||
  { echo "local_cluster.sh: --prefill and --decode must be >= 1" >&2; exit 2; }
[[ "$BACKEND" =~ ^(auto|cpu|cuda)$ ]] ||
  { echo "local_cluster.sh: --backend must be auto, cpu or cuda" >&2; exit 2; }
NODE_ARGS="--backend $BACKEND --device $DEVICE"
if [[ "$BACKEND" != cpu ]] && command -v nvidia-smi >/dev/null &&
    nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  if [[ "${PREFILL_ARGS:-} ${DECODE_ARGS:-}" != *kv-cache-memory-fraction* ]]; then
    NODE_ARGS+=" --kv-cache-memory-fraction $(awk -v n=$((PREFILL + DECODE)) 'BEGIN { printf "%.3f", 0.8 / n }')"
  fi
fi
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/duet-cluster.XXXXXX)}
mkdir -p "$LOG_DIR"
ROUTER=127.0.0.1:$PORT
# Mutual TLS between the roles with a CA made for this cluster (or the one
# in CERT_DIR: ca.pem, node.pem, node-key.pem); INSECURE=1 for plaintext.
if [[ -n "${INSECURE:-}" ]]; then
  TLS_ARGS="--insecure" CLIENT_TLS="--insecure"
else
  CERT_DIR=${CERT_DIR:-$LOG_DIR/certs}
  [[ -f "$CERT_DIR/node.pem" ]] || "$ROOT/scripts/make_certs.sh" "$CERT_DIR" node >/dev/null
  TLS_ARGS="--tls-cert $CERT_DIR/node.pem --tls-key $CERT_DIR/node-key.pem --tls-ca $CERT_DIR/ca.pem"
  CLIENT_TLS="--tls-ca $CERT_DIR/ca.pem"
fi

PIDS=()
stop() {
  trap - INT TERM EXIT
  if ((${#PIDS[@]})); then
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      alive=0
      for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null || true
  fi
  echo "cluster stopped (logs in $LOG_DIR)"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# shellcheck disable=SC2086
"$ROUTER_BIN" --listen "$ROUTER" $TLS_ARGS ${ROUTER_ARGS:-} >"$LOG_DIR/router.out" 2>"$LOG_DIR/router.log" &
PIDS+=($!)
for i in $(seq 0 $((PREFILL - 1))); do
  # shellcheck disable=SC2086
  "$PREFILL_BIN" --model "$MODEL" --router "$ROUTER" --rank "$i" \
    $TLS_ARGS $NODE_ARGS ${PREFILL_ARGS:-} >"$LOG_DIR/prefill$i.out" 2>"$LOG_DIR/prefill$i.log" &
  PIDS+=($!)
done
for i in $(seq 0 $((DECODE - 1))); do
  # shellcheck disable=SC2086
  "$DECODE_BIN" --model "$MODEL" --router "$ROUTER" --rank "$i" \
    $TLS_ARGS $NODE_ARGS ${DECODE_ARGS:-} >"$LOG_DIR/decode$i.out" 2>"$LOG_DIR/decode$i.log" &
  PIDS+=($!)
done

for _ in $(seq 1200); do
  # shellcheck disable=SC2086
  if "$CLI_BIN" health $CLIENT_TLS --router "$ROUTER" --timeout-ms 1000 2>/dev/null |
      grep -q "serving=true prefill_nodes=$PREFILL decode_nodes=$DECODE "; then
    cat "$LOG_DIR"/*.out
    echo "cluster ready: router at $ROUTER ($PREFILL prefill, $DECODE decode; logs in $LOG_DIR; clients: $CLIENT_TLS)"
    wait
    exit 0
  fi
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "local_cluster.sh: a process exited; see $LOG_DIR" >&2; exit 1; }
  done
  sleep 0.1
done
echo "local_cluster.sh: nodes did not register within 120 s; see $LOG_DIR" >&2
exit 1
