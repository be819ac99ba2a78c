#!/usr/bin/env bash
# Builds duet with its tests and runs them all with ctest. CUDA tests build
# when nvcc is present and skip, with a message, when no GPU is visible.
# Then builds the libFuzzer targets (clang + ASan + UBSan, in build-fuzz/)
# and runs each for DUET_FUZZ_SECONDS seconds (default 30; 0 skips this):
# a crash, leak, sanitizer report or per-input timeout fails the run
# (scripts/fuzz.sh, fuzz/README.md). The seed is fixed (DUET_FUZZ_SEED,
# default 1) so this gate is reproducible; exploring with fresh seeds is
# scripts/fuzz.sh's job, run by hand for longer.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DUET_BUILD_DIR:-build}
DUET_BUILD_DIR=$BUILD_DIR scripts/build.sh -DDUET_BUILD_TESTS=ON
# Tokenizer files the tests compare against (Llama-3's is fetched, not
# committed, for licence reasons; see assets/README.md).
scripts/fetch_tokenizer.sh
scripts/fetch_npm_test_deps.sh  # the openai SDK for e2e_openai_http_test
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 900
FUZZ_SECONDS=${DUET_FUZZ_SECONDS:-30}
if ((FUZZ_SECONDS > 0)); then
  DUET_FUZZ_SEED=${DUET_FUZZ_SEED:-1} scripts/fuzz.sh "$FUZZ_SECONDS"
fi
