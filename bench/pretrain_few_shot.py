"""Benchmark: contrastive pre-training on the unlabeled images, then a few-shot run from it.

For each seed: one ``--method=contrastive`` run on the training images (labels unread) plus the
dataset's images that are neither training nor test images (``--unlabeled_data=rest``: the test
images are never seen), then, for each method, a few-shot run of ``--finetune_steps`` steps on the
same split that starts from the pre-trained backbone (``--init_from``). Lines appended to
``--output`` as each run ends:

    BENCH {"figure": "pretrain", "seed": 0, "steps": 2400, "test_accuracy": ...}       # probe: reference DB
    BENCH {"figure": "accuracy", "method": "scl_amp", "seed": 0, "init": "pretrained", ...}

``--inits=pretrained,scratch`` also trains each method from scratch with the same split, steps and
settings (``"init": "scratch"``), so that the comparison sits in one file, made on one machine.
``--self_training_ratio=r`` adds, per seed, a student that combines both uses of the pool: SCL-AMP
from the same pre-trained backbone, plus the pool images that the pre-trained SCL-AMP run, as
teacher, labels with the largest margin (``--pseudo_labels_from``, ``--pseudo_label_ratio=r``, as
``bench/self_training.py`` does from scratch; ``"init": "pretrained+self_training"``).
Resumable: runs already in ``--output`` are skipped, and an interrupted run resumes from its
checkpoint in ``--work_dir``. ``--report`` trains nothing: it prints BENCHMARKS.md's table of the
lines in ``--output`` (per method, start and seed: from scratch, from that start, and the
difference).

    python bench/pretrain_few_shot.py --dataset=mixed_wm38 --manual_dir=../shared/data/mixedwm38 \\
        --shots_per_class=20 --test_fraction=0.2 --image_size=52 --seeds=0,1 \\
        --pretrain_steps=2400 --finetune_steps=1600 --set arc_on_views=True crop_scale_min=0.8 \\
        --output=bench/results/pretrain_wm38_20shot.jsonl
    python bench/pretrain_few_shot.py --output=bench/results/pretrain_wm38_20shot.jsonl --report
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import numpy as np

import bench_lines


LABEL_ONLY = ("arc_on_views", "class_aware_negatives", "alpha", "beta", "margin", "arc_scale", "steps", "epochs")
INITS = ("scratch", "pretrained")
SELF_TRAINED = "pretrained+self_training"  # the init of --self_training_ratio's students
SETTING = ("dataset", "shots_per_class", "test_fraction", "backbone", "image_size")  # a line's split and network


def run_dir(root, name, key, settings=None):
    """A run's folder under ``root``: named by its line's key (and ``settings``, for a pre-training,
    whose line does not record them), so that runs which differ in pre-training or fine-tuning
    steps or settings never share a checkpoint. A line, though, is found by its key alone: keep one
    set of pre-training settings per ``--output``."""
    digest = hashlib.sha1(json.dumps([key, settings], sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(root, f"{name}_seed{key['seed']}_{digest}")


def report(records):
    """The markdown table of BENCHMARKS.md: per method, settings, steps, start (pre-trained, or
    pre-trained plus self-training) and pre-training steps, each seed's accuracy from scratch and
    from that start and their difference, then mean ± sample std over the seeds that have both
    (:func:`scl_amp_tf.table_markdown.cell_text`); and the pre-training runs themselves (their
    reference database of the labelled images: the probe)."""
    from scl_amp_tf.table_markdown import cell_text, stats

    scratch, started = {}, {}
    for r in records:
        if r.get("figure") == "accuracy":
            group = (r["method"], json.dumps({k: r.get(k) for k in SETTING}, sort_keys=True),
                     json.dumps(r.get("extra", {}), sort_keys=True), r["steps"])
            init = r.get("init", "pretrained")  # lines before --inits were all pre-trained
            if init == "scratch":
                scratch[group + (r["seed"],)] = r
            else:
                start = init + (f" (ratio {r['self_training_ratio']:g})" if init == SELF_TRAINED else "")
                started.setdefault(group + (start, r["pretrain_steps"]), {})[r["seed"]] = r
    lines = ["| method | settings | steps | start | pre-training steps | seed | from scratch | this start | "
             "this start − scratch |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (method, setting, settings, steps, start, pretrain_steps), by_seed in sorted(started.items()):
        pairs = {seed: (bench_lines.exact_accuracy(scratch[(method, setting, settings, steps, seed)]),
                        bench_lines.exact_accuracy(r))
                 for seed, r in sorted(by_seed.items()) if (method, setting, settings, steps, seed) in scratch}
        head = f"| {method} | {settings} | {steps} | {start} | {pretrain_steps} |"
        for seed, (before, after) in pairs.items():
            lines.append(f"{head} {seed} | {100 * before:.2f} | {100 * after:.2f} | {100 * (after - before):+.2f} |")
        if len(pairs) > 1:
            before, after = zip(*pairs.values())
            gains = np.subtract(after, before)
            gain, gain_std, _ = stats(gains)
            lines.append(f"{head} mean ± sample std | {cell_text(before)} | {cell_text(after)} | "
                         f"{gain:+.2f} ± {gain_std:.2f} ({int(np.sum(gains > 0))} of {len(pairs)} seeds better) |")
    probes = [r for r in records if r.get("figure") == "pretrain"]
    if probes:
        lines += ["", "| pre-training steps | seed | images (labels unread) | passes | seconds | "
                  "probe: reference DB of the labelled images on its embeddings |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in sorted(probes, key=lambda r: (r["steps"], r["seed"])):
            lines.append(f"| {r['steps']} | {r['seed']} | {r['pool_images']:,} | {r['epochs']} | "
                         f"{r['seconds']:.0f} | {100 * r['test_accuracy']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--shots_per_class", type=int)
    parser.add_argument("--test_fraction", type=float)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default="scl_amp,ce")
    parser.add_argument("--inits", default="pretrained", help="pretrained and/or scratch, comma-separated")
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--pretrain_steps", type=int, default=2400)
    parser.add_argument("--finetune_steps", type=int, default=1600)
    parser.add_argument("--self_training_ratio", type=float, default=0.0,
                        help="Also train, per seed, SCL-AMP from the pre-trained backbone plus this many times "
                             "the labelled count of pseudo-labelled pool images, the pre-trained SCL-AMP run "
                             "being the teacher; 0: none.")
    parser.add_argument("--set", nargs="*", default=[], help="TrainConfig fields of the few-shot runs, key=value")
    parser.add_argument("--output", required=True)
    parser.add_argument("--work_dir", default="/tmp/pretrain_few_shot")
    parser.add_argument("--report", action="store_true", help="Print the table of --output's lines; train nothing.")
    args = parser.parse_args()

    if args.report:
        print(report(bench_lines.read(args.output)))
        return
    inits = args.inits.split(",")
    if not set(inits) <= set(INITS):
        parser.error(f"--inits: a comma-separated subset of {','.join(INITS)}, not {args.inits!r}")
    missing = [f"--{name}" for name in ("dataset", "shots_per_class", "test_fraction")
               if getattr(args, name) is None]
    if missing:
        parser.error(f"training needs {', '.join(missing)}")
    if args.self_training_ratio and ("pretrained" not in inits or "scl_amp" not in args.methods.split(",")):
        parser.error("--self_training_ratio's teacher is the pre-trained SCL-AMP run: --inits and --methods "
                     "must include pretrained and scl_amp")

    import scl_amp_tf  # noqa: F401  (it quiets TensorFlow's C++ log before TF loads)
    import keras

    from scl_amp_tf.train_config import parse_overrides
    from scl_amp_tf.train_config import TrainConfig
    from scl_amp_tf.training import train_and_evaluate

    extra = parse_overrides(args.set)
    common = dict(dataset=args.dataset, manual_dir=args.manual_dir, shots_per_class=args.shots_per_class,
                  test_fraction=args.test_fraction, backbone=args.backbone, image_size=args.image_size, verbose=0)
    base = {"dataset": args.dataset, "shots_per_class": args.shots_per_class, "test_fraction": args.test_fraction,
            "backbone": args.backbone, "image_size": args.image_size}
    root = os.path.join(args.work_dir, os.path.basename(args.output).replace(".jsonl", ""))
    for seed in [int(s) for s in args.seeds.split(",")]:
        key = {**base, "figure": "pretrain", "seed": seed, "steps": args.pretrain_steps}
        # The same data and augmentation as the few-shot runs; no label-only settings.
        shared = {k: v for k, v in extra.items() if k not in LABEL_ONLY}
        pretrain_dir = run_dir(root, "pretrain", key, shared)
        if "pretrained" in inits and not bench_lines.written(args.output, key):
            start = time.time()
            metrics = train_and_evaluate(TrainConfig(
                model_dir=pretrain_dir, method="contrastive", unlabeled_data="rest", steps=args.pretrain_steps,
                seed=seed, **common, **shared))
            keras.backend.clear_session()
            bench_lines.emit({**key, "test_accuracy": round(metrics["test_accuracy"], 4),
                              "reference_db_accuracy_on_features": round(
                                  metrics["reference_db_accuracy_on_features"], 4),
                              "pool_images": metrics["fit_images"], "epochs": metrics["epochs"],
                              "seconds": round(time.time() - start, 1), **bench_lines.provenance()}, args.output)
        runs = [(method, init) for init in inits for method in args.methods.split(",")]
        if args.self_training_ratio:
            runs.append(("scl_amp", SELF_TRAINED))
        dirs = {}
        for method, init in runs:
            key = {**base, "figure": "accuracy", "method": method, "seed": seed, "init": init,
                   "steps": args.finetune_steps, "extra": extra}
            run_settings = {}
            if init != "scratch":
                key["pretrain_steps"] = args.pretrain_steps
                run_settings = {"init_from": pretrain_dir}
            if init == SELF_TRAINED:  # the teacher: the pre-trained SCL-AMP run just above
                key["self_training_ratio"] = args.self_training_ratio
                run_settings.update(unlabeled_data="rest", pseudo_label_ratio=args.self_training_ratio,
                                    pseudo_labels_from=dirs["scl_amp", "pretrained"])
            dirs[method, init] = run_dir(root, f"{method}_{init.replace('+', '_')}", key)
            if bench_lines.written(args.output, key):
                continue
            start = time.time()
            metrics = train_and_evaluate(TrainConfig(
                model_dir=dirs[method, init], method=method, seed=seed, steps=args.finetune_steps,
                **run_settings, **common, **extra))
            keras.backend.clear_session()
            pseudo = metrics.get("pseudo_labels")
            bench_lines.emit({**key, "test_accuracy": round(metrics["test_accuracy"], 4),
                              "reference_db_accuracy_on_features": round(
                                  metrics["reference_db_accuracy_on_features"], 4),
                              "num_test": metrics["num_test"], "seconds": round(time.time() - start, 1),
                              **({"pseudo_labels": pseudo["count"], "pool": pseudo["pool"],
                                  "pseudo_label_precision": round(pseudo["precision"], 4)} if pseudo else {}),
                              **bench_lines.provenance()}, args.output)


if __name__ == "__main__":
    main()
