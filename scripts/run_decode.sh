#!/usr/bin/env bash
# Starts a duet decode node. Required: --model DIR --router HOST:PORT.
# Common: --listen HOST:PORT (0.0.0.0:PORT plus --advertise MYHOST:PORT for
# other hosts), --num-kv-blocks, --block-size, --max-batch-size,
# --reservation-ttl-ms. Prefill nodes write KV into this node over UCX.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
exec "$BIN/decode_node/duet-decode" "$@"
