#!/usr/bin/env bash
# Starts a duet router. Every flag is passed through; common ones:
#   --listen HOST:PORT (default 127.0.0.1:50051; 0.0.0.0:PORT for other hosts)
#   --heartbeat-interval-ms, --node-timeout-ms, --request-timeout-ms
# Binaries come from $DUET_BIN (default: build/ of this checkout).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUET_BIN:-$ROOT/build}
exec "$BIN/router/duet-router" "$@"
