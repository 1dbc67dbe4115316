#!/usr/bin/env bash
# Browser tests: build the page with trunk, serve it on 127.0.0.1 with the fixture model as its
# demo model, and drive Debian's headless Chromium (playwright-core) on both the WebGPU path
# (--enable-unsafe-webgpu, SwiftShader) and the CPU fallback; the label maps are compared with
# the native CLI's. Installs what it needs once (apt chromium, npm packages, trunk,
# wasm-bindgen-cli). Screenshots land in tests/browser/artifacts/.
#   --bench     also print the budgets table (wasm size, bytes before the first segmentation,
#               512x512 segmentation time on each backend); with OVSEG_BENCH_MODEL=model.mpk
#               (and OVSEG_BENCH_PRECISION, default int8) also for that model, exported by
#               export-web, e.g. a vits-minilm one
#   --prepare   only install the prerequisites (CI does this first)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
export PATH="$HOME/.cargo/bin:$PATH"
bench=0
prepare=0
[ "${1:-}" = "--bench" ] && bench=1
[ "${1:-}" = "--prepare" ] && prepare=1
fixtures="${OVSEG_FIXTURES:-../shared/fixtures}"
tiny="$fixtures/reference-tiny"
[ -f "$tiny/checkpoint.pth" ] || { echo "error: fixtures not found in $fixtures (set OVSEG_FIXTURES)" >&2; exit 1; }

# --- prerequisites (idempotent)
bash scripts/prepare-web.sh --browser
export PATH="$root/tests/browser/node_modules/.bin:$PATH" # wasm-opt 132 (binaryen from npm)
[ "$prepare" = 1 ] && { echo "browser test prerequisites: ok"; exit 0; }

# --- build: the page (release, wasm-opt) and the native CLI
TRUNK_SKIP_VERSION_CHECK=true trunk build --release
cargo build --locked -p ovseg-trainer --bin ovseg
# OVSEG_BIN: another ovseg binary (e.g. when several checkouts share one target folder).
ovseg="${OVSEG_BIN:-$CARGO_TARGET_DIR/debug/ovseg}"

# --- the site: dist plus the fixture model as the demo model, exported as the main job exports
# its model (int8 image pack first, text pack on demand, preset embeddings)
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
site="$work/site"
cp -r dist "$site"
mkdir -p "$site/demo"
"$ovseg" convert --checkpoint "$tiny/checkpoint.pth" --config "$tiny/model.json" --out "$work/tiny.ovseg" >/dev/null
"$ovseg" export-web --model "$work/tiny.ovseg" --out "$site/demo" >/dev/null
cp "$work/tiny.ovseg" "$site/demo/model.ovseg"
# The RoBERTa fixture (the second released model's kind): its byte-level BPE tokenizer travels
# inside the model file and, exported, inside the text pack; the page fetches no tokenizer.json.
roberta="$fixtures/reference-roberta"
"$ovseg" convert --checkpoint "$roberta/checkpoint.pth" --config "$roberta/model.json" \
  --tokenizer "$roberta/tokenizer.json" --out "$work/roberta.ovseg" >/dev/null
"$ovseg" export-web --model "$work/roberta.ovseg" --out "$site/demo-roberta" >/dev/null
# A second demo folder with the demo.json the main job writes (examples and words of its model).
mkdir -p "$site/demo-world"
cp "$work/tiny.ovseg" "$site/demo-world/model.ovseg"
cat >"$site/demo-world/demo.json" <<'EOF'
{"labels": "cat, dog", "background": true,
 "examples": [{"name": "a cat", "image": "../examples/cat.png"},
              {"name": "coffee <b>", "image": "../examples/coffee.png"},
              {"name": "elsewhere", "image": "https://example.com/x.png"}]}
EOF

bench_model=()
if [ "$bench" = 1 ] && [ -n "${OVSEG_BENCH_MODEL:-}" ]; then
  "$ovseg" export-web --model "$OVSEG_BENCH_MODEL" --out "$site/bench-model" --precision "${OVSEG_BENCH_PRECISION:-int8}"
  bench_model=(--bench-model bench-model/image.ovsegpack)
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port/"
python3 -m http.server --bind 127.0.0.1 --directory "$site" "$port" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -fs "$base" >/dev/null 2>&1 && break; sleep 0.1; done

# --- the native reference: the same picture and words through the CLI, and its share link
voc="aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor"
cli_out=$("$ovseg" segment --model "$site/demo/image.ovsegpack" --image www/examples/astronaut.png --labels "$voc" \
  --out-mask "$work/reference.png" --share-url "$base" --share-image-url "${base}examples/astronaut.png")
# Words outside the presets, which make the page fetch the text pack.
"$ovseg" segment --model "$site/demo/image.ovsegpack" --image www/examples/cat.png --labels "cat, sky, grass" \
  --out-mask "$work/reference-words.png" >/dev/null
# The RoBERTa export with words outside its presets (the page needs its text pack and tokenizer).
"$ovseg" segment --model "$site/demo-roberta/image.ovsegpack" --image www/examples/cat.png \
  --labels "cat, sky, grass" --out-mask "$work/reference-roberta.png" >/dev/null
# The single-file model (`ovseg convert`) on the same picture and words.
"$ovseg" segment --model "$work/tiny.ovseg" --image www/examples/astronaut.png --labels "$voc" \
  --out-mask "$work/reference-f32.png" >/dev/null
cli_link=$(grep -o "${base}#ovseg1\.[A-Za-z0-9_-]*" <<<"$cli_out")
hostile_out=$("$ovseg" segment --model "$work/tiny.ovseg" --image www/examples/cat.png \
  --labels "<img src=x onerror=alert(1)>,dog" --no-background --out-mask "$work/hostile.png" --share-url "$base")
hostile_link=$(grep -o "${base}#ovseg1\.[A-Za-z0-9_-]*" <<<"$hostile_out")

rm -rf tests/browser/artifacts
status=0
node tests/browser/run.mjs --base "$base" --reference "$work/reference.png" --cli-link "$cli_link" \
  --reference-words "$work/reference-words.png" --reference-f32 "$work/reference-f32.png" \
  --reference-roberta "$work/reference-roberta.png" \
  --hostile-link "$hostile_link" --artifacts tests/browser/artifacts \
  $([ "$bench" = 1 ] && echo "--bench $work/bench.json") "${bench_model[@]}" || status=$?

if [ "$bench" = 1 ] && [ -f "$work/bench.json" ]; then
  wasm_gz=$(gzip -9c dist/ovseg-web_bg.wasm | wc -c)
  cpu_wasm_gz=$(gzip -9c dist/ovseg-web-cpu_bg.wasm | wc -c)
  js_gz=$(cat dist/*.js dist/*.css dist/index.html | gzip -9c | wc -c)
  # What the page fetches before its first segmentation with preset words: the image pack and
  # the preset embeddings (the text pack and tokenizer only come for other words).
  model=$(( $(stat -c %s "$site/demo/image.ovsegpack") + $(stat -c %s "$site/demo/classes.json") ))
  python3 - "$bench" "$wasm_gz" "$cpu_wasm_gz" "$js_gz" "$model" "$work/bench.json" <<'EOF'
import json, sys
_, _, wasm_gz, cpu_wasm_gz, js_gz, model, bench = sys.argv
gz = {"ovseg-web_bg.wasm": int(wasm_gz), "ovseg-web-cpu_bg.wasm": int(cpu_wasm_gz)}
b = json.load(open(bench))
mb = lambda n: f"{int(n) / 1e6:.2f} MB"  # MB = 10^6 bytes
print("| budget | measured |")
print("|---|---|")
print(f"| app wasm (gzip -9), full build: WebGPU + CPU | {mb(wasm_gz)} |")
print(f"| app wasm (gzip -9), CPU-only build (what the CPU path loads) | {mb(cpu_wasm_gz)} |")
print(f"| page JS, CSS, HTML (gzip -9) | {int(js_gz) / 1024:.1f} kB |")
print(f"| bytes before the first segmentation (app gzip + fixture image pack + classes.json), WebGPU | {mb(int(wasm_gz) + int(js_gz) + int(model))} |")
print(f"| same, CPU | {mb(int(cpu_wasm_gz) + int(js_gz) + int(model))} |")
for k in ("cpu", "webgpu"):
    if k in b:
        print(f"| 512x512 segmentation, {k}, headless Chromium (median of 3) | {b[k] / 1000:.2f} s |")
if "share_512_5" in b:
    print(f"| share link fragment, 512x512, 5 labels, embedded JPEG | {b['share_512_5']} characters |")
for k in ("cpu", "webgpu"):
    m = b.get(f"model_{k}")
    if not m:
        continue
    req = m["requests"]
    total = sum(req.values())
    wasm = sum(v for p, v in req.items() if p.endswith(".wasm"))
    wasm_zipped = sum(gz[p.rsplit("/", 1)[-1]] for p in req if p.endswith(".wasm"))
    pack = sum(v for p, v in req.items() if p.endswith("image.ovsegpack"))
    print(f"| bench model, {k}: bytes fetched before the first segmentation (uncompressed server) | {mb(total)} (wasm {mb(wasm)}, image pack {mb(pack)}, {len(req)} requests) |")
    print(f"| bench model, {k}: same with the wasm gzip -9 | {mb(total - wasm + wasm_zipped)} |")
    print(f"| bench model, {k}: 512x512 segmentation (median of 3) | {m['ms'] / 1000:.2f} s |")
EOF
fi
exit $status
