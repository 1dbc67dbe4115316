#!/usr/bin/env python3
"""Train one configuration (world, model, recipe) with several seeds and score each on held-out
pictures; print the foreground mIoU as mean and spread beside the image-level baseline and
all-background.

    python3 scripts/experiment.py configs/experiments/plain.json [--seeds 0,1,2] [--jobs 2]

An experiment file (JSON; `configs/experiments/` holds the ones docs/experiments.md reports):

    {"about": "one line for the table",
     "world": {"train": 2000, "val": 100, "size": 128, "typical-colours": 1, "detail": 0},
     "model": "configs/demo-model.json",            # a file, the JSON itself, or
                                                    # {"base": file, "image": {changes}}
     "stage1": {"recipe": "configs/demo-stage1.json", "max_steps": 400},
     "stage2": {"recipe": "configs/demo-stage2.json"},  # optional
     "pretrain": {"world": {...}, "recipe": ...},       # optional: a first stage 1 on a
                                                    # world of its own (a curriculum)
     "train_args": ["--group-naming", "1"]}         # optional, added to both stages

`world` holds `ovseg synth` options (the world's own seed is `seed`, 0 unless given; the
training seed is what --seeds varies). A stage's keys other than `recipe` override its recipe.
Seeds run `--jobs` at a time, each on `--threads` threads (default: the cores divided among the
jobs); the same seed and thread count give the same model. Everything goes to
out/experiments/NAME/ (worlds are shared between experiments with the same world); a seed whose
scores exist is not run again. The results, and the table row, are in NAME/summary.json.
"""
import argparse
import fcntl
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASS_LISTS = {"caption": "classes-caption.txt", "synonyms": "classes.txt"}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def run(cmd, log_file, env=None):
    with open(log_file, "a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        done = subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = Path(log_file).read_text().splitlines()[-15:]
        sys.exit(f"error: {cmd[1]} failed ({log_file}):\n" + "\n".join(tail))


def load_json(value):
    """A JSON value, or the JSON file a string names (relative to the repository)."""
    if isinstance(value, str):
        path = ROOT / value
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            sys.exit(f"error: cannot read {path}: {e}")
    return value


def merged(base, changes):
    """`base` with `changes` written over it, nested objects key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def model_of(exp):
    """The model configuration: a file, the JSON itself, or {"base": file, ...changes}."""
    model = exp["model"]
    if isinstance(model, dict) and "base" in model:
        return merged(load_json(model["base"]), {k: v for k, v in model.items() if k != "base"})
    return load_json(model)


def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def synth_options(world):
    """`ovseg synth` options of an experiment's world (true: a bare flag)."""
    options = {"seed": 0, "examples": 8, **world}
    args = []
    for key, value in sorted(options.items()):
        if value is True:
            args.append(f"--{key}")
        elif value is not False:
            args += [f"--{key}", str(value)]
    return options, args


def make_world(ovseg, world, out):
    """The world's folder under out/experiments/worlds, made once per distinct world."""
    options, args = synth_options(world)
    folder = out / "worlds" / digest(options)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [ovseg, "synth", "--out", folder, *args]
    # Experiments started side by side may share a world: one makes it, the others wait.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run(cmd, folder / "synth.log")
    return folder


def write_stage(stage, seed, folder, name):
    recipe = load_json(stage["recipe"])
    recipe.update({k: v for k, v in stage.items() if k not in ("recipe", "world")})
    recipe["seed"] = seed
    path = folder / f"{name}.json"
    path.write_text(json.dumps(recipe, indent=1))
    return path


def materialise(exp, seed, folder):
    """Writes what scripts/main.sh trains from: synth.args (one option a line), model.json,
    stage1.json, stage2.json (when the experiment has a stage 2) and train.args."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synth.args").write_text("\n".join(synth_options(exp["world"])[1]) + "\n")
    (folder / "model.json").write_text(json.dumps(model_of(exp), indent=1))
    write_stage(exp["stage1"], seed, folder, "stage1")
    if exp.get("stage2"):
        write_stage(exp["stage2"], seed, folder, "stage2")
    (folder / "train.args").write_text("".join(f"{a}\n" for a in exp.get("train_args", [])))


def train_seed(ovseg, exp, world, folder, seed, threads, minilm, out):
    """Trains (unless its scores exist) and evaluates one seed; returns its scores."""
    scores_file = folder / "scores.json"
    if scores_file.exists():
        return json.loads(scores_file.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    model = folder / "model.json"
    model.write_text(json.dumps(model_of(exp), indent=1))
    extra = exp.get("train_args", [])
    data = world / "train" / "meta.jsonl"
    start = time.time()
    start_from = ["--model", model, "--bert", minilm]
    if exp.get("pretrain"):
        # A curriculum: stage 1 first on a world of its own, then on the experiment's world.
        pre = exp["pretrain"]
        pre_world = make_world(ovseg, pre["world"], out)
        recipe = write_stage(pre, seed, folder, "pretrain")
        run([ovseg, "train", "--quiet", "--out", folder / "pretrain", "--data",
             pre_world / "train" / "meta.jsonl", "--recipe", recipe, *start_from, *extra],
            folder / "train.log", env)
        start_from = ["--init", folder / "pretrain" / "model.mpk"]
    recipe = write_stage(exp["stage1"], seed, folder, "stage1")
    run([ovseg, "train", "--quiet", "--out", folder / "stage1", "--data", data, "--recipe", recipe,
         *start_from, *extra], folder / "train.log", env)
    final = folder / "stage1" / "model.mpk"
    if exp.get("stage2"):
        recipe = write_stage(exp["stage2"], seed, folder, "stage2")
        run([ovseg, "train", "--quiet", "--out", folder / "stage2", "--data", data,
             "--recipe", recipe, "--init", final, *extra], folder / "train.log", env)
        final = folder / "stage2" / "model.mpk"
    train_seconds = time.time() - start
    scores = {"seed": seed, "threads": threads, "train_seconds": round(train_seconds, 1)}
    for name, classes in CLASS_LISTS.items():
        report = folder / f"eval-{name}.json"
        run([ovseg, "eval", "--model", final, "--dataset", "voc", "--root", world / "val",
             "--classes", world / "val" / classes, "--baseline", "--out", report],
            folder / "eval.log", env)
        both = json.loads(report.read_text())
        seg, base = both["segmentation"], both["baseline"]
        scores[name] = {
            "miou": seg["miou"],
            "fg_miou": seg["fg_miou"],
            "baseline_fg_miou": base["fg_miou"],
            "all_background_miou": seg["all_background_miou"],
            "per_class": seg["per_class"],
        }
    scores_file.write_text(json.dumps(scores, indent=1))
    return scores


def spread(values):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 2), "sd": round(sd, 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def summarise(name, exp, runs):
    summary = {"experiment": name, "about": exp.get("about", ""), "seeds": [r["seed"] for r in runs],
               "train_minutes": spread([r["train_seconds"] / 60 for r in runs])}
    for lst in CLASS_LISTS:
        summary[lst] = {key: spread([r[lst][key] for r in runs])
                        for key in ("fg_miou", "baseline_fg_miou", "miou", "all_background_miou")}
    return summary


def table(summaries):
    def cell(s):
        return f"{s['mean']:.2f} ± {s['sd']:.2f}"

    lines = ["| experiment | seeds | fg mIoU, synonyms | baseline fg, synonyms | fg mIoU, caption words "
             "| baseline fg, caption words | mIoU, synonyms | all-background | train min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        syn, cap = s["synonyms"], s["caption"]
        lines.append(
            f"| {s['experiment']} | {len(s['seeds'])} | {cell(syn['fg_miou'])} | "
            f"{cell(syn['baseline_fg_miou'])} | {cell(cap['fg_miou'])} | "
            f"{cell(cap['baseline_fg_miou'])} | {cell(syn['miou'])} | "
            f"{syn['all_background_miou']['mean']:.2f} | {s['train_minutes']['mean']:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", help="experiment JSON files")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma separated")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    parser.add_argument("--threads", type=int, default=0, help="threads per job (0: cores / jobs)")
    parser.add_argument("--out", default="out/experiments", help="where runs go")
    parser.add_argument("--ovseg", default=os.environ.get("OVSEG_BIN"),
                        help="the ovseg binary (default: $OVSEG_BIN, else the release build)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: summarise the seeds already scored")
    parser.add_argument("--minilm", default=os.environ.get(
        "OVSEG_MINILM_DIR", str(Path.home() / ".cache/ovseg/minilm")))
    parser.add_argument("--materialise", metavar="DIR",
                        help="train nothing: write the experiment's world options, model and "
                             "recipes (first seed) into DIR, as scripts/main.sh reads them")
    args = parser.parse_args()
    if args.materialise:
        materialise(load_json(args.experiments[0]), int(args.seeds.split(",")[0]),
                    Path(args.materialise))
        return
    ovseg = args.ovseg or str(Path(os.environ.get(
        "CARGO_TARGET_DIR", Path.home() / ".cache/ovseg-target")) / "release" / "ovseg")
    if not args.report and not Path(ovseg).is_file():
        sys.exit(f"error: no ovseg binary at {ovseg} (cargo build --release -p ovseg-trainer)")
    if not args.report:
        # A copy of its own: a rebuild while this runs must not change the binary mid-run.
        copy = Path(args.out) / ".bin" / f"ovseg.{os.getpid()}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ovseg, copy)
        ovseg = str(copy)
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    out = Path(args.out)
    summaries = []
    for file in args.experiments:
        name = Path(file).stem
        exp = load_json(str(Path(file).resolve().relative_to(ROOT)))
        folder = out / name
        if args.report:
            runs = [json.loads(f.read_text()) for f in sorted(folder.glob("seed-*/scores.json"))]
            if not runs:
                log(f"{name}: no scored seeds in {folder}")
                continue
        else:
            world = make_world(ovseg, exp["world"], out)
            log(f"{name}: world {world}, seeds {seeds}, {args.jobs} at a time on {threads} threads")
            with ThreadPoolExecutor(args.jobs) as pool:
                runs = list(pool.map(
                    lambda s: train_seed(ovseg, exp, world, folder / f"seed-{s}", s, threads,
                                         args.minilm, out), seeds))
        summary = summarise(name, exp, runs)
        (folder / "summary.json").write_text(json.dumps(summary, indent=1))
        summaries.append(summary)
        log(table([summary]))
    print(table(summaries))
    if not args.report:
        Path(ovseg).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
