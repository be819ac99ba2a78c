#!/usr/bin/env bash
# Installs the npm packages the tests use (the official `openai` SDK for
# tests/e2e/openai_sdk/, pinned by its package-lock.json). Idempotent: does
# nothing when node_modules already matches the lockfile. Without npm it
# says so and succeeds (the SDK test then skips or fails with a message).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/e2e/openai_sdk
if ! command -v npm >/dev/null; then
  echo "fetch_npm_test_deps: npm not found; skipping $dir"
  exit 0
fi
# Installed already when every package of the lockfile is there at its
# locked version.
if (cd "$dir" && node -e '
  const pkgs = require("./package-lock.json").packages;
  for (const [path, p] of Object.entries(pkgs)) {
    if (path && require("./" + path + "/package.json").version !== p.version) process.exit(1);
  }' 2>/dev/null); then
  exit 0
fi
echo "fetch_npm_test_deps: npm ci in $dir"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
