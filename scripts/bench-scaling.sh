#!/usr/bin/env bash
# Data-parallel scaling measured as several machines run it: `ovseg train` on 1 worker, then on
# 2 worker processes joined through `ovseg orchestrator` over loopback, each pinned to a core of
# its own (taskset), at the same batch per worker. Prints a table (docs/benchmarks.md, "Training
# on several machines"): images/s, the step's time in the gradient all-reduce against the whole
# step, and the gradient megabytes each worker all-reduces; then the gradient size of the paper
# model (one step of the `paper` preset on 2 processes) and what a 100 Gb/s link needs for it.
#   bash scripts/bench-scaling.sh                  # main job's model, stage 1, 16 per worker
#   OVSEG_SCALING_BATCH=32 OVSEG_SCALING_STEPS=30 OVSEG_SCALING_PAPER=0 bash scripts/bench-scaling.sh
#   OVSEG_BIN=path: this ovseg binary instead of building the release one
# Pause other jobs first: each worker owns one core.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ovseg-target}"
batch="${OVSEG_SCALING_BATCH:-16}"
steps="${OVSEG_SCALING_STEPS:-20}"
paper="${OVSEG_SCALING_PAPER:-1}"
minilm="${OVSEG_MINILM_DIR:-$HOME/.cache/ovseg/minilm}"
[ "$(nproc)" -ge 2 ] || { echo "error: needs 2 cores, this machine has $(nproc)" >&2; exit 1; }
.ci/fetch-minilm >&2
if [ -n "${OVSEG_BIN:-}" ]; then
  ovseg=$OVSEG_BIN
else
  cargo build --release --locked -p ovseg-trainer --bin ovseg >&2
  ovseg="$CARGO_TARGET_DIR/release/ovseg"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The main job's world (fewer pictures) and model; its stage-1 recipe at $batch per worker.
python3 scripts/experiment.py configs/experiments/main-job.json --materialise "$work/regime" >&2
world_args=()
while read -r arg; do world_args+=("$arg"); done <"$work/regime/synth.args"
for i in "${!world_args[@]}"; do
  case "${world_args[$i]}" in
    --train) world_args[i + 1]=$((batch * 2 * 8)) ;;
    --val) world_args[i + 1]=8 ;;
  esac
done
"$ovseg" synth --out "$work/world" "${world_args[@]}" >&2
train_args=()
while read -r arg; do train_args+=("$arg"); done <"$work/regime/train.args"
python3 - "$work/regime/stage1.json" "$batch" "$steps" <<'PY'
import json, sys
path, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
recipe = json.load(open(path))
recipe.update(batch_size=batch, max_steps=steps, checkpoint_every=100000, keep_last=1, workers=1)
json.dump(recipe, open(path, "w"))
PY

# `ovseg train` on `workers` processes, process r pinned to core r; extra arguments follow.
run() {
  local name=$1 workers=$2
  shift 2
  if [ "$workers" = 1 ]; then
    taskset -c 0 "$ovseg" train --quiet --out "$work/$name" "$@" >&2
    return
  fi
  local port=$((20000 + RANDOM % 20000))
  "$ovseg" orchestrator --port "$port" >/dev/null 2>&1 &
  pids+=($!)
  local ranks=()
  for rank in $(seq 0 $((workers - 1))); do
    local data_port=$((port + 1 + rank))
    taskset -c "$rank" "$ovseg" train --quiet --out "$work/$name-$rank" "$@" \
      --nodes "$workers" --node-rank "$rank" --orchestrator "ws://127.0.0.1:$port" \
      --node-address "ws://127.0.0.1:$data_port" --data-port "$data_port" >"$work/$name-$rank.log" 2>&1 &
    ranks+=($!)
  done
  # One process failing leaves the other waiting for it: stop them all (or after 20 minutes).
  local began=$SECONDS
  while [ "${#ranks[@]}" -gt 0 ]; do
    local left=()
    for pid in "${ranks[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then
        left+=("$pid")
      elif ! wait "$pid"; then
        kill "${ranks[@]}" 2>/dev/null || true
        cat "$work/$name"-*.log >&2
        echo "error: a worker of the $name run failed" >&2
        exit 1
      fi
    done
    ranks=("${left[@]}")
    if [ "${#ranks[@]}" -gt 0 ] && [ $((SECONDS - began)) -gt 1200 ]; then
      kill "${ranks[@]}" 2>/dev/null || true
      echo "error: the $name run did not finish in 20 minutes" >&2
      exit 1
    fi
    sleep 1
  done
}

main_job=(--recipe "$work/regime/stage1.json" --model "$work/regime/model.json" --bert "$minilm"
  --data "$work/world/train/meta.jsonl" "${train_args[@]}")
run one 1 "${main_job[@]}"
run two 2 "${main_job[@]}"
if [ "$paper" = 1 ]; then
  run paper 2 --recipe stage1 --model paper --batch-size 1 --max-steps 2 --workers 1 \
    --data "$work/world/train/meta.jsonl"
fi

python3 - "$work" "$batch" "$steps" "$paper" <<'PY'
import json, os, statistics, sys
work, batch, steps, paper = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
def lines(run):
    with open(os.path.join(work, run, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]
def median(run, key, skip=3):
    return statistics.median(l[key] for l in lines(run)[skip:] if key in l)
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
print(f"{cpu}; stage 1 of the main job's model; {batch} per worker; median of steps 4-{steps}")
print("| workers | global batch | images/s | speed-up | step s | all-reduce s | share of step | MB all-reduced per worker and step |")
print("|---|---|---|---|---|---|---|---|")
one = median("one", "images_per_s")
for name, workers in (("one", 1), ("two-0", 2)):
    ips = median(name, "images_per_s")
    step = batch * workers / ips
    if workers == 1:
        reduce, share, mb = "-", "-", "-"
    else:
        r = median(name, "allreduce_s")
        reduce, share, mb = f"{r:.3f}", f"{100 * r / step:.0f} %", f"{median(name, 'allreduce_mb'):.1f}"
    print(f"| {workers} | {batch * workers} | {ips:.1f} | {ips / one:.2f}x | {step:.3f} | {reduce} | {share} | {mb} |")
if paper:
    mb = lines("paper-0")[-1]["allreduce_mb"]
    print()
    print(f"paper preset, stage 1: {mb:.0f} MB of gradient all-reduced per worker and step")
    print("| machines (8 GPUs each) | bytes each machine sends per step (ring) | at 100 Gb/s |")
    print("|---|---|---|")
    for n in (2, 4, 8, 16):
        sent = 2 * (n - 1) / n * mb * 1e6
        print(f"| {n} | {sent / 1e6:.0f} MB | {sent * 8 / 100e9 * 1e3:.0f} ms |")
PY
