#!/usr/bin/env bash
# Starts a duet router. Every flag is passed through; common ones:
#   --listen HOST:PORT (default 127.0.0.1:50051; 0.0.0.0:PORT for other hosts)
#   --heartbeat-interval-ms, --node-timeout-ms, --request-timeout-ms
#   --tls-cert F --tls-key F --tls-ca F (scripts/make_certs.sh), or --insecure
#   --api-key-file F (keys clients must send)
# Binaries come from $DUET_BIN (default: build/ of this checkout).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# Inside a bundle made by scripts/bundle.sh: its own binaries and libraries.
if [[ -x "$HERE/bin/duet-router" ]]; then
  export LD_LIBRARY_PATH="$HERE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  exec "$HERE/bin/duet-router" "$@"
fi
ROOT=$(cd "$HERE/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
exec "$BIN/router/duet-router" "$@"
