# Shared by the one-GPU cluster benchmarks (goodput_bench.sh,
# prefix_cache_bench.sh); sourced, not run. Expects ROOT, BUNDLE (may be
# empty: build and bundle here), OUT and BACKEND to be set.

# BIN and LD_LIBRARY_PATH from the bundle (built first when none is given),
# and MODEL: DUET_GPU_MODEL, or a qwen3-4b-shape checkpoint made once.
bench_setup() {
  if [[ -z "$BUNDLE" ]]; then
    (cd "$ROOT" && DUET_BUILD_TARGETS="duet-router duet-prefill duet-decode duet-cli duet-bench duet-make-model" \
       scripts/build.sh)
    BUNDLE=$OUT/bundle
    "$ROOT/scripts/bundle.sh" "$BUNDLE"
  fi
  BIN=$BUNDLE/bin
  export LD_LIBRARY_PATH=$BUNDLE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  MODEL=${DUET_GPU_MODEL:-/tmp/duet-qwen3-4b}
  [[ -f "$MODEL/config.json" ]] || "$BIN/duet-make-model" --preset qwen3-4b --out "$MODEL" >/dev/null
}

# The KV pool's share of the GPU (the CPU backend sizes its pool itself).
mem() { [[ $BACKEND == cuda ]] && echo "--kv-cache-memory-fraction $1" || true; }

# Processes of the running set-up; stop_all ends them (also at exit).
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

# Waits up to 3 minutes for `duet-cli health` at router $1 to print a line
# matching "serving=true $2"; fails otherwise.
wait_serving() {
  for _ in $(seq 900); do
    if "$BIN/duet-cli" health --insecure --router "$1" --timeout-ms 1000 2>/dev/null |
        grep -q "serving=true $2"; then return 0; fi
    sleep 0.2
  done
  return 1
}
