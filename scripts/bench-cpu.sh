#!/usr/bin/env bash
# CPU speed of ovseg beside PyTorch eager on the same architecture, measured in one run: for each
# preset, `ovseg bench` (Flex) and `torch_ovseg.py bench` take turns, ROUNDS times, with the
# same thread count, and a table of both with their ratio is printed (docs/benchmarks.md).
#   bash scripts/bench-cpu.sh                      # paper and vits-minilm, 2 threads, 2 rounds
#   OVSEG_BENCH_PRESETS=vits-minilm OVSEG_BENCH_ROUNDS=3 bash scripts/bench-cpu.sh
# Installs PyTorch, numpy and transformers (torch_ovseg.py imports them) from PyPI into
# ~/.cache/torch-venv on first use (torch's default wheel, which brings the CUDA libraries, ~6 GB,
# and runs on the CPU). Needs ../shared/tools/torch_ovseg.py (or $OVSEG_TORCH_OVSEG). Pause other jobs first: both sides share the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
presets="${OVSEG_BENCH_PRESETS:-paper vits-minilm}"
rounds="${OVSEG_BENCH_ROUNDS:-2}"
threads="${OVSEG_BENCH_THREADS:-2}"
torch_ovseg="${OVSEG_TORCH_OVSEG:-$(cd .. && pwd)/shared/tools/torch_ovseg.py}"
venv="$HOME/.cache/torch-venv"
[ -f "$torch_ovseg" ] || { echo "error: $torch_ovseg not found (set OVSEG_TORCH_OVSEG)" >&2; exit 1; }
if ! "$venv/bin/python" -c 'import torch, numpy, transformers' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy transformers
fi
cargo build --release --locked --bin ovseg >&2
ovseg="$CARGO_TARGET_DIR/release/ovseg"
torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for round in $(seq "$rounds"); do
  for preset in $presets; do
    # | preset | flex | window s | prompts s | images/s |
    read -r window prompts < <(RAYON_NUM_THREADS="$threads" "$ovseg" bench --preset "$preset" \
      --backend flex --repeats 5 | awk -F'|' -v p="$preset" '$2 ~ " "p" " {print $4, $5}')
    read -r twindow tprompts < <("$venv/bin/python" "$torch_ovseg" bench "$preset" "$threads" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["window448"], r["prompts20"])')
    echo "$round $preset $window $twindow $prompts $tprompts" >>"$rows"
  done
done

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $threads threads each, $(date -u +%F)"
echo "| round | preset | measure | ovseg, Flex (s) | PyTorch $torch_version eager (s) | ovseg / PyTorch |"
echo "|---|---|---|---|---|---|"
while read -r round preset window twindow prompts tprompts; do
  for m in "448x448 window, image encoder:$window:$twindow" "20 class prompts, text side:$prompts:$tprompts"; do
    IFS=: read -r name ours theirs <<<"$m"
    ratio=$(python3 -c "print(f'{$ours / $theirs:.2f}x')")
    echo "| $round | $preset | $name | $ours | $theirs | $ratio |"
  done
done <"$rows"
