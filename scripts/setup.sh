#!/usr/bin/env bash
# Installs what duet needs to build and test on Debian 12 (bookworm) or newer.
# Idempotent: packages already present are skipped; safe to run every time.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  openssl  # scripts/make_certs.sh: the cluster's CA and certificates
  libabsl-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libucx-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  nlohmann-json3-dev
  libopenblas-dev
  libpcre2-dev libutf8proc-dev
  libboost-dev  # http/: Boost.Beast + Boost.Asio (header-only)
  python3-matplotlib  # scripts/plot_bench_sweep.py (duet-bench --sweep-rates)
  prometheus  # promtool: tests/e2e/metrics_test.cc checks every /metrics scrape
  # Fuzzing (scripts/fuzz.sh): clang, its sanitizer and libFuzzer runtimes
  # (libclang_rt.fuzzer*.a) and llvm-symbolizer for readable stacks.
  clang libclang-rt-dev llvm
)

# npm fetches model assets (the Qwen3 tokenizer); skip Debian's npm where a
# node/npm is already installed (the two conflict).
if ! command -v npm >/dev/null; then PKGS+=(npm); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA found: $(/usr/local/cuda/bin/nvcc --version | tail -n 2 | head -n 1)"
else
  echo "setup: no CUDA toolkit in /usr/local/cuda; building the CPU backend only"
fi
