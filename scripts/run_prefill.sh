#!/usr/bin/env bash
# Starts a duet prefill node. Required: --model DIR --router HOST:PORT and
# --tls-cert F --tls-key F --tls-ca F (scripts/make_certs.sh) or --insecure.
# Common: --backend auto|cpu|cuda, --device N (GPU index), --listen HOST:PORT (0.0.0.0:PORT plus --advertise MYHOST:PORT for
# other hosts), --max-num-batched-tokens, --num-kv-blocks, --block-size,
# --kv-transfer-timeout-ms, --kv-push, --kv-transport. KV goes to decode
# nodes over CUDA IPC on one host, else UCX; set UCX_TLS
# (e.g. UCX_TLS=tcp, or rc,sm for RDMA) to choose UCX transports.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# Inside a bundle made by scripts/bundle.sh: its own binaries and libraries.
if [[ -x "$HERE/bin/duet-prefill" ]]; then
  export LD_LIBRARY_PATH="$HERE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  exec "$HERE/bin/duet-prefill" "$@"
fi
ROOT=$(cd "$HERE/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
exec "$BIN/prefill_node/duet-prefill" "$@"
