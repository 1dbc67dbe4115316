#!/usr/bin/env bash
# The main job until the trained embedded default exists: build ovseg, convert the reference
# checkpoint (../shared/fixtures/reference-tiny, the released PyTorch layout) into an ovseg model
# file, and segment the bundled picture with the 20 PASCAL VOC words. Outputs land in ./out.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
fixtures="${OVSEG_FIXTURES:-../shared/fixtures}"
tiny="$fixtures/reference-tiny"
if [ ! -f "$tiny/checkpoint.pth" ]; then
  echo "error: reference checkpoint not found in $tiny (set OVSEG_FIXTURES)" >&2
  exit 1
fi
cargo build --locked -p ovseg-trainer --bin ovseg
ovseg="$CARGO_TARGET_DIR/debug/ovseg"
mkdir -p out
"$ovseg" convert --checkpoint "$tiny/checkpoint.pth" --config "$tiny/model.json" --out out/reference-tiny.mpk
"$ovseg" segment --model out/reference-tiny.mpk --image "$tiny/seg_image.png" \
  --labels "aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor" \
  --out-mask out/seg_image.mask.png --out-overlay out/seg_image.overlay.png
echo "wrote out/seg_image.mask.png (label indices) and out/seg_image.overlay.png"
