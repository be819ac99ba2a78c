#!/usr/bin/env bash
# Configures and builds duet into ${DUET_BUILD_DIR:-build}. Installs the
# dependencies first (scripts/setup.sh, idempotent). Extra arguments go to
# cmake's configure step, e.g. scripts/build.sh -DDUET_WITH_CUDA=OFF.
# DUET_BUILD_TARGETS="a b" builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${DUET_BUILD_DIR:-build}
GENERATOR=()
if command -v ninja >/dev/null && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  GENERATOR=(-G Ninja)
fi
cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
TARGETS=()
for t in ${DUET_BUILD_TARGETS:-}; do TARGETS+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j "$(nproc)" "${TARGETS[@]}"
