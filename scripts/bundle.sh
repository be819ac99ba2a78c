#!/usr/bin/env bash
# Makes a relocatable bundle of duet for machines without the -dev packages
# (e.g. GPU nodes): the binaries plus every non-glibc shared library they
# load, except the CUDA driver and toolkit libraries, which the target
# machine provides (/usr/local/cuda/lib64 and the driver).
#   scripts/bundle.sh [OUT_DIR]      (default: build/bundle)
# Run on the target as:
#   LD_LIBRARY_PATH=OUT_DIR/lib:/usr/local/cuda/lib64 OUT_DIR/bin/duet-router ...
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DUET_BUILD_DIR:-$ROOT/build}
OUT=${1:-$BUILD/bundle}
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib"
BINS=(router/duet-router prefill_node/duet-prefill decode_node/duet-decode
      client/duet-cli client/duet-bench tools/duet-run tools/duet-make-model
      tools/duet-model-bench tokenizer/duet-tokenizer-bench)
found=0
for b in "${BINS[@]}"; do
  if [[ -x "$BUILD/$b" ]]; then
    cp "$BUILD/$b" "$OUT/bin/"
    found=1
  fi
done
((found)) || { echo "bundle.sh: no binaries in $BUILD; build first" >&2; exit 1; }
strip --strip-unneeded "$OUT"/bin/* 2>/dev/null || true
# glibc, the dynamic loader, and CUDA's libraries stay with the target system.
SKIP='^(libc|libm|libdl|librt|libpthread|libresolv|ld-linux[^ ]*|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia[^ ]*)\.so'
for b in "$OUT"/bin/*; do
  ldd "$b" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ ! "$name" =~ $SKIP ]]; then cp -L "$path" "$OUT/lib/$name"; fi
done
cp -r "$ROOT/assets" "$OUT/" 2>/dev/null || true
cp "$ROOT/scripts/run_router.sh" "$ROOT/scripts/run_prefill.sh" \
   "$ROOT/scripts/run_decode.sh" "$OUT/"
du -sh "$OUT"
echo "bundle in $OUT: run with LD_LIBRARY_PATH=$OUT/lib:/usr/local/cuda/lib64"
