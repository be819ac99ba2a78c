#!/usr/bin/env bash
# One-shot GPU session for the CUDA backend (see bundle_for_gpu.sh): unpacks
# the bundle, runs the test groups in parallel processes (a crash in one
# group cannot hide the others' results), the timing suite, and
# compute-sanitizer memcheck on a subset. Logs go to $OUT (or ./gpu_out).
#
#   tests/kernels/cuda/gpu_run.sh .cudabundle/b.tar.xz [memcheck-filter]
#       [racecheck-filter]      (a filter of "none" skips that tool)
set -uo pipefail
tarball=${1:?bundle tarball}
mc_filter=${2:-'CudaVsCpuTest.*:AttentionTest.PrefillGrid:AttentionTest.DecodeGrid:Presets/*'}
rc_filter=${3:-none}
out=${OUT:-gpu_out}
mkdir -p "$out" /tmp/duet_cuda
tar -C /tmp/duet_cuda -xJf "$tarball"
bin=/tmp/duet_cuda/b/kernels_cuda_test
export LD_LIBRARY_PATH=/tmp/duet_cuda/b/lib:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"

declare -A groups=(
  [ops]='CudaVsCpuTest.*'
  [prefill]='AttentionTest.Prefill*'
  [decode]='AttentionTest.Decode*'
  [model]='Presets/*'
)
start=$(date +%s)
for g in "${!groups[@]}"; do
  timeout 240 "$bin" --gtest_color=no --gtest_filter="${groups[$g]}" \
    > "$out/test_$g.log" 2>&1 &
done
wait
echo "tests took $(( $(date +%s) - start )) s"

DUET_CUDA_BENCH=1 timeout 120 "$bin" --gtest_color=no \
  --gtest_filter='CudaBench.*' > "$out/bench.log" 2>&1
echo "bench rc=$?"

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ "$mc_filter" != none ]; then
  timeout 120 "$sanitizer" --tool memcheck --leak-check no --print-limit 20 \
    "$bin" --gtest_color=no --gtest_filter="$mc_filter" > "$out/memcheck.log" 2>&1
  echo "memcheck rc=$?"
fi
if [ "$rc_filter" != none ]; then
  timeout 150 "$sanitizer" --tool racecheck --racecheck-report hazard \
    --print-limit 20 "$bin" --gtest_color=no --gtest_filter="$rc_filter" \
    > "$out/racecheck.log" 2>&1
  echo "racecheck rc=$?"
fi

for g in "${!groups[@]}"; do
  echo "== $g: $(grep -E '^\[  (PASSED|FAILED) ' "$out/test_$g.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]|Failure$|FAIL$|error:' "$out/test_$g.log" | head -20
  tail -3 "$out/test_$g.log" | grep -v '^\[' || true
done
grep -hE '^\[compare\]' "$out"/test_*.log |
  awk -F'worst_err/tol=' '{print $2 "\t" $0}' | sort -g -r | cut -f2 | head -12
grep -h '^\[model\]' "$out"/test_model.log
grep '^\[bench\]' "$out/bench.log"
for tool in memcheck racecheck; do
  [ -f "$out/$tool.log" ] &&
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) ' "$out/$tool.log" |
    sed "s/^/$tool: /" | tail -4
done
exit 0
