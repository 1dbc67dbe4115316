#!/usr/bin/env bash
# The main job: OVSegmentor learns to segment from captions alone, then segments in the browser.
#  1. installs what it needs: the pretrained MiniLM text encoder (PyPI), the wasm toolchain
#     (trunk, wasm-bindgen-cli from crates.io; wasm-opt from npm);
#  2. `ovseg synth` writes a caption world: 2000 training pictures with captions, 100 held-out
#     pictures with pixel-exact ground truth in the PASCAL VOC layout; the world, the model and
#     the recipes are those of configs/experiments/main-job.json (OVSEG_REGIME), the regime
#     docs/experiments.md found best: flat backdrops, one colour per kind, captions naming the
#     objects, their counts and how they stand; grouping after two blocks and none after it;
#  3. trains stage 1 and stage 2 of that regime from captions alone;
#  4. scores zero-shot mIoU on the held-out split next to the image-level baseline, with the
#     caption words and with synonyms no caption contains;
#  5. exports the browser model, builds the page and serves it on 127.0.0.1 with that model and
#     held-out pictures preloaded.
# A rerun reuses every finished step made from the same inputs (a killed training run resumes
# from its checkpoint).
#   OVSEG_OUT=out/demo   where everything goes
#   PORT=8080            the port it serves on
#   OVSEG_BIN=path       use this ovseg binary instead of building the release one
#   OVSEG_REGIME=file    another experiment file (world, model, recipes) to run
#   --no-serve           stop once the site is built
#   --smoke              the same steps at toy size (200 pairs, a few training steps): the test
#                        command's check that the whole job runs; its model is not meant to segment
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
export PATH="$HOME/.cargo/bin:$root/tests/browser/node_modules/.bin:$PATH"
out="${OVSEG_OUT:-out/demo}"
port="${PORT:-8080}"
serve=1
smoke=0
train_pairs=2000
val_pictures=100
steps=()
for arg in "$@"; do
  case "$arg" in
    --no-serve) serve=0 ;;
    --smoke) serve=0 smoke=1 train_pairs=200 val_pictures=8 steps=(--max-steps 4) ;;
    *) echo "usage: $0 [--no-serve] [--smoke]" >&2; exit 2 ;;
  esac
done
minilm="${OVSEG_MINILM_DIR:-$HOME/.cache/ovseg/minilm}"

echo "== prerequisites"
.ci/fetch-minilm
bash scripts/prepare-web.sh
mkdir -p "$out"
if [ -n "${OVSEG_BIN:-}" ]; then
  # An ovseg already built (the test command passes the one its tests built, so the smoke run
  # costs no release build).
  cp "$OVSEG_BIN" "$out/ovseg"
else
  # Release: burn's generic tensor code is instantiated in our crates, so their optimisation
  # sets the training speed (stage 1 here: 45 images/s in release, ~23 in the dev profile).
  cargo build --locked --release -p ovseg-trainer --bin ovseg
  # A copy of its own: other checkouts sharing the target folder cannot swap it mid-run.
  cp "$CARGO_TARGET_DIR/release/ovseg" "$out/ovseg"
fi
ovseg="$out/ovseg"

echo "== the caption world"
# The regime (world, model, recipes) is one experiment file, the one docs/experiments.md found
# best; scripts/experiment.py trains the same file over seeds.
regime="${OVSEG_REGIME:-configs/experiments/main-job.json}"
python3 scripts/experiment.py "$regime" --materialise "$out/regime"
world_args=()
while read -r arg; do world_args+=("$arg"); done <"$out/regime/synth.args"
train_args=()
while read -r arg; do train_args+=("$arg"); done <"$out/regime/train.args"
if [ "$smoke" = 1 ]; then
  # Toy size: the same world with fewer pictures.
  for i in "${!world_args[@]}"; do
    case "${world_args[$i]}" in
      --train) world_args[i + 1]=$train_pairs ;;
      --val) world_args[i + 1]=$val_pictures ;;
    esac
  done
fi
"$ovseg" synth --out "$out/world" "${world_args[@]}"
data="$out/world/train/meta.jsonl"

# What a stage is trained from: the world, its arguments, the files they name and the inputs of
# the stage it starts from. A stage whose inputs changed (a new recipe, another world, a
# retrained stage 1) is trained again rather than reused.
inputs_of() {
  {
    cat "$out/world/synth.json"
    printf '%s\n' "$@" "${steps[@]}"
    for arg in "$@"; do
      case "$arg" in
        *.mpk) cat "$(dirname "$arg")/inputs.sha256" 2>/dev/null || true ;;
        *) if [ -f "$arg" ]; then cat "$arg"; fi ;;
      esac
    done
  } | sha256sum | cut -d' ' -f1
}

train() {
  local dir=$1
  shift
  local inputs
  inputs=$(inputs_of "$@")
  if [ -d "$dir" ] && [ "$(cat "$dir/inputs.sha256" 2>/dev/null)" != "$inputs" ]; then
    echo "$dir was trained from other inputs: training it again"
    rm -rf "$dir"
  fi
  if [ -f "$dir/model.mpk" ]; then
    echo "$dir/model.mpk exists: reused"
    return
  fi
  mkdir -p "$dir"
  echo "$inputs" >"$dir/inputs.sha256"
  local resume=()
  [ -f "$dir/checkpoints/latest" ] && resume=(--resume)
  "$ovseg" train --out "$dir" --data "$data" "$@" "${steps[@]}" "${resume[@]}"
}
echo "== stage 1: matching and masked-entity losses (MiniLM frozen)"
train "$out/stage1" --recipe "$out/regime/stage1.json" --model "$out/regime/model.json" \
  --bert "$minilm" "${train_args[@]}"
echo "== stage 2: adds the cross-image mask consistency"
train "$out/stage2" --recipe "$out/regime/stage2.json" --init "$out/stage1/model.mpk" "${train_args[@]}"
model="$out/stage2/model.mpk"

echo "== zero-shot segmentation of the held-out pictures"
for list in classes-caption classes; do
  report="$out/eval-$list"
  if [ ! -f "$report.json" ] || [ "$report.json" -ot "$model" ]; then
    "$ovseg" eval --model "$model" --dataset voc --root "$out/world/val" \
      --classes "$out/world/val/$list.txt" --baseline --out "$report.json" >"$report.txt"
  fi
  echo "-- class names: $list.txt"
  cat "$report.txt"
done

echo "== the page"
wasm=dist/ovseg-web_bg.wasm
if [ ! -f "$wasm" ] || [ -n "$(find web web-cpu model www Trunk.toml Cargo.lock -newer "$wasm" -type f | head -n 1)" ]; then
  TRUNK_SKIP_VERSION_CHECK=true trunk build --release
fi
site="$out/site"
rm -rf "$site"
cp -r dist "$site"
# The world's words are precomputed: the page's first segmentations need only the image pack.
words=$(tail -n +2 "$out/world/val/classes-caption.txt" | paste -sd, -)
"$ovseg" export-web --model "$model" --out "$site/demo" --labels "$words"
mkdir -p "$site/demo/examples"
cp "$out/world/examples/"*.jpg "$site/demo/examples/"
python3 - "$out/world" "$site/demo/demo.json" <<'PY'
import json, sys
world, dest = sys.argv[1], sys.argv[2]
examples = json.load(open(f"{world}/examples/examples.json"))
classes = [c.strip() for c in open(f"{world}/val/classes-caption.txt") if c.strip()][1:]
json.dump({
    "labels": ", ".join(classes),
    "background": True,
    "examples": [{"name": " + ".join(e["classes"]), "image": f"examples/{e['file']}"} for e in examples],
}, open(dest, "w"), indent=1)
PY
echo "site: $site (the trained model is its default, demo/image.ovsegpack)"
[ "$serve" = 1 ] || exit 0
echo "serving on http://127.0.0.1:$port/ (Ctrl-C stops)"
exec python3 -m http.server --bind 127.0.0.1 --directory "$site" "$port"
