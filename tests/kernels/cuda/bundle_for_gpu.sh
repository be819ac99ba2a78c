#!/usr/bin/env bash
# Packs kernels_cuda_test for a GPU machine that has the CUDA toolkit but not
# this machine's other libraries: the stripped binary plus every shared
# library ldd resolves outside glibc and outside CUDA (cudart/cuBLAS come
# from the target's /usr/local/cuda/lib64).
#
#   tests/kernels/cuda/bundle_for_gpu.sh build-cuda .cudabundle
#   # on the GPU machine:
#   LD_LIBRARY_PATH=.cudabundle/lib:/usr/local/cuda/lib64 \
#     .cudabundle/kernels_cuda_test
set -euo pipefail
build=${1:?build dir}
out=${2:?bundle dir}
bin="$build/tests/kernels/cuda/kernels_cuda_test"
rm -rf "$out"
mkdir -p "$out/lib"
cp "$bin" "$out/"
strip "$out/kernels_cuda_test"
ldd "$bin" | awk '/=> \//{print $1, $3}' | while read -r name path; do
  case "$name" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*) ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*) ;;
    *) cp -L "$path" "$out/lib/$name" && strip --strip-unneeded "$out/lib/$name" ;;
  esac
done
du -sh "$out"
