#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, see fuzz/README.md) with clang,
# AddressSanitizer (leak detection on) and UndefinedBehaviorSanitizer into
# ${DUET_FUZZ_BUILD_DIR:-build-fuzz}, a build directory of their own (the
# libraries under test are compiled with coverage instrumentation too), then
# runs each target for SECONDS_PER_TARGET seconds starting from a scratch
# copy of its committed seed corpus (fuzz/corpus/<target>/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   # default 30, all
#
# Exits non-zero when any target crashed, leaked, hit a sanitizer report,
# ran out of memory or timed out on one input (10 s); for each failure it
# prints the target, the end of its log (the stack) and the reproducer
# path. Reproducers and logs stay in $BUILD_DIR/fuzz-artifacts/<target>/.
# Build only (no fuzzing): SECONDS_PER_TARGET=0.
# DUET_FUZZ_SEED=N fixes libFuzzer's seed: the same build then tries the same
# inputs in the same order, so a gate (scripts/test.sh) passes or fails the
# same way on every machine at least as fast as the one that checked it.
# Unset, each run explores from a fresh random seed (printed in the log).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-30}
shift || true
ALL_TARGETS=(fuzz_safetensors fuzz_safetensors_index fuzz_model_config
             fuzz_tokenizer fuzz_node_rpc fuzz_router_generate)
if (($#)); then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]" >&2
  exit 2
fi

scripts/setup.sh >/dev/null
BUILD_DIR=${DUET_FUZZ_BUILD_DIR:-build-fuzz}
SAN_FLAGS="-fsanitize=fuzzer-no-link,address,undefined"
SAN_FLAGS+=" -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
SAN_FLAGS+=" -gline-tables-only -O1"

start=$(date +%s)
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
   ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' "$BUILD_DIR/CMakeCache.txt"; then
  echo "fuzz: $BUILD_DIR was configured with another compiler; remove it" >&2
  exit 2
fi
GENERATOR=()
if command -v ninja >/dev/null && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  GENERATOR=(-G Ninja)
fi
# CUDA, UCX and NCCL off: no target needs them, and the build stays small.
cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Fuzz \
  "-DCMAKE_C_FLAGS=$SAN_FLAGS" "-DCMAKE_CXX_FLAGS=$SAN_FLAGS" \
  -DDUET_WITH_CUDA=OFF -DDUET_WITH_UCX=OFF -DDUET_WITH_NCCL=OFF \
  -DDUET_BUILD_TESTS=OFF -DDUET_BUILD_FUZZERS=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${TARGETS[@]}"
echo "fuzz: built ${#TARGETS[@]} targets in $(($(date +%s) - start)) s"
((SECONDS_PER_TARGET > 0)) || exit 0

# Readable stacks need llvm-symbolizer (Debian's llvm package).
SYMBOLIZER=$(command -v llvm-symbolizer ||
             ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | tail -n 1 || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [[ -n $SYMBOLIZER ]]; then export ASAN_SYMBOLIZER_PATH=$SYMBOLIZER; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/duet-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ARTIFACTS="$BUILD_DIR/fuzz-artifacts"
failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/fuzz/$t"
  out="$ARTIFACTS/$t"
  rm -rf "$out"
  mkdir -p "$out" "$WORK/$t"
  # A scratch copy: inputs the run finds never land in the committed corpus.
  cp -r "fuzz/corpus/$t/." "$WORK/$t/"
  log="$out/log"
  dict=()
  case $t in  # the JSON readers: keys, values and edge numbers
    fuzz_safetensors*|fuzz_model_config|fuzz_tokenizer) dict=(-dict=fuzz/json.dict) ;;
  esac
  seed=()
  if [[ -n ${DUET_FUZZ_SEED:-} ]]; then seed=(-seed="$DUET_FUZZ_SEED"); fi
  rc=0
  "$bin" "${seed[@]}" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -print_funcs=0 "${dict[@]}" \
    -artifact_prefix="$out/" "$WORK/$t" >"$log" 2>&1 || rc=$?
  stats=$(grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" |
          sed 's/^stat:://' | tr -s ' \n' ' ')
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
  used_seed=$(grep -oE 'Seed: [0-9]+' "$log" | head -n 1 || true)
  if ((rc == 0)); then
    echo "fuzz: $t: ok (${SECONDS_PER_TARGET} s; $used_seed; $cov; $stats)"
    continue
  fi
  failed+=("$t")
  repro=$(grep -oE "(Test unit written to|artifact_prefix.*written to) [^ ]+" "$log" |
          awk '{print $NF}' | tail -n 1 || true)
  echo "fuzz: $t: FAILED (exit $rc; $used_seed); log $log" >&2
  echo "------------------------------------------------------------" >&2
  # From the first report line on (sanitizer, invariant, libFuzzer).
  awk '/^==[0-9]+==|FUZZ INVARIANT|runtime error:|^ERROR: libFuzzer|^ALARM:/ {on=1}
       on && !/^stat::|^MS: |^Base64: / {print}' "$log" | head -n 80 >&2 || true
  echo "------------------------------------------------------------" >&2
  if [[ -n $repro ]]; then
    echo "fuzz: $t: reproducer $repro" >&2
    echo "fuzz: reproduce with: $bin $repro" >&2
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (artifacts in $ARTIFACTS)" >&2
  exit 1
fi
echo "fuzz: all ${#TARGETS[@]} targets ran ${SECONDS_PER_TARGET} s each without a finding"
