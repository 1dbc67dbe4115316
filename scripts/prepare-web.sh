#!/usr/bin/env bash
# Installs what building the page needs, once (idempotent): the wasm32 target, wasm-bindgen-cli
# (the version in Cargo.lock), trunk 0.21.14 (crates.io), binaryen's wasm-opt 132 and
# playwright-core (npm, tests/browser/node_modules). With --browser also Debian's Chromium, which
# the browser tests drive. Put tests/browser/node_modules/.bin first on PATH before `trunk build`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null && command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
(cd tests/browser && { [ -x node_modules/.bin/wasm-opt ] && [ -d node_modules/playwright-core ] || PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null; })
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " $bindgen_version\$"; then
  # Not --locked: the registry lacks one of its locked transitive versions.
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
if ! trunk --version 2>/dev/null | grep -q "0.21.14"; then
  cargo install --locked trunk@0.21.14
fi
