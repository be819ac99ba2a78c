#!/usr/bin/env bash
# The demo: builds duet, writes the tiny synthetic Qwen3 checkpoint and runs a
# prompt through the engine, printing the generated token ids and per-phase
# timings (prefill, each decode step).
#   scripts/demo.sh [--prompt-ids 1,2,3] [--max-tokens 16] [duet-run flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DUET_BUILD_DIR:-build}
DUET_BUILD_DIR=$BUILD_DIR DUET_BUILD_TARGETS="duet-make-model duet-run" scripts/build.sh
MODEL_DIR="$BUILD_DIR/models/tiny"
if [[ ! -f "$MODEL_DIR/config.json" ]]; then
  "$BUILD_DIR/tools/duet-make-model" --preset tiny --out "$MODEL_DIR"
fi
# A sample prompt of 8 token ids (text prompts arrive with the tokenizer issue).
exec "$BUILD_DIR/tools/duet-run" --model "$MODEL_DIR" \
  --prompt-ids 9707,11,1879,0,576,3974,13876,38835 --max-tokens 16 "$@"
