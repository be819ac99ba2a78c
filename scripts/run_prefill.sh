#!/usr/bin/env bash
# Starts a duet prefill node. Required: --model DIR --router HOST:PORT.
# Common: --listen HOST:PORT (0.0.0.0:PORT plus --advertise MYHOST:PORT for
# other hosts), --max-num-batched-tokens, --num-kv-blocks, --block-size,
# --kv-transfer-timeout-ms. KV goes to decode nodes over UCX; set UCX_TLS
# (e.g. UCX_TLS=tcp, or rc,sm for RDMA) to choose UCX transports.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
exec "$BIN/prefill_node/duet-prefill" "$@"
