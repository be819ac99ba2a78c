#!/usr/bin/env bash
# Starts a duet decode node. Required: --model DIR --router HOST:PORT and
# --tls-cert F --tls-key F --tls-ca F (scripts/make_certs.sh) or --insecure.
# Common: --backend auto|cpu|cuda, --device N (GPU index), --listen HOST:PORT (0.0.0.0:PORT plus --advertise MYHOST:PORT for
# other hosts), --num-kv-blocks, --block-size, --max-num-seqs,
# --reservation-ttl-ms, --kv-transport. Prefill nodes write KV into this
# node over CUDA IPC on one host, else UCX.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# Inside a bundle made by scripts/bundle.sh: its own binaries and libraries.
if [[ -x "$HERE/bin/duet-decode" ]]; then
  export LD_LIBRARY_PATH="$HERE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  exec "$HERE/bin/duet-decode" "$@"
fi
ROOT=$(cd "$HERE/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
exec "$BIN/decode_node/duet-decode" "$@"
