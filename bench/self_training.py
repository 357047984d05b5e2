"""Benchmark: self-training with pseudo-labels on a cell of the paper's tables.

For each seed, the cell's CE and recommended-recipe runs exactly as ``reproduce`` trains them
(into ``--work_dir``; finished runs there are read, not retrained), then, for each ratio, a
student: the recipe again on the same split, plus the pool images (``--unlabeled_data=rest``:
neither training nor test images) that the recipe run, as teacher, labels with the largest margin
(``--pseudo_labels_from``, ``--pseudo_label_ratio``; :mod:`scl_amp_tf.pseudo_labels`). The test
images are never seen. Lines appended to ``--output`` as each run ends:

    BENCH {"figure": "accuracy", "row": "ce", "seed": 0, "test_accuracy": ...}
    BENCH {"figure": "accuracy", "row": "scl_amp_recipe", "seed": 0, ...}            # the teacher
    BENCH {"figure": "accuracy", "row": "self_training", "ratio": 4.0, "seed": 0,
           "pseudo_label_precision": ..., "pseudo_labels": ..., "test_accuracy": ...}

Resumable: lines already in ``--output`` are not made again, and an interrupted run resumes
from its checkpoint in ``--work_dir``.

    python bench/self_training.py --table=6 --cell=20shot --seeds=0,1,2 --ratios=4 \\
        --wm38_manual_dir=../shared/data/mixedwm38 --output=bench/results/self_training_wm38_20shot.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=int, default=6)
    parser.add_argument("--cell", default="20shot")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratios", default="4")
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--neu_manual_dir", default=None)
    parser.add_argument("--wm38_manual_dir", default=None)
    parser.add_argument("--work_dir", default="/tmp/self_training")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    import keras

    from scl_amp_tf import reproducing
    from scl_amp_tf.tables import TABLES
    from scl_amp_tf.training import train_and_evaluate

    cell = next((c for c in TABLES[args.table][2] if c.key == args.cell), None)
    if cell is None:
        parser.error(f"--cell={args.cell}: table {args.table} has {', '.join(c.key for c in TABLES[args.table][2])}")
    data_options = {"neu_manual_dir": args.neu_manual_dir, "wm38_manual_dir": args.wm38_manual_dir}
    options = {"neu": "neu", "mixed_wm38": "mixed_wm38", "data_dir": None, "synthetic_per_class": 100,
               **data_options, "runs_dir": os.path.join(args.work_dir, "runs"), "table": args.table}
    base = {"table": args.table, "cell": args.cell, "budget": args.budget}

    def have(key):
        return any(all(r.get(k) == v for k, v in key.items()) for r in bench_lines.read(args.output))

    def line(key, config, metrics, seconds=None):
        return {**key, "test_accuracy": round(metrics["test_accuracy"], 4), "num_test": metrics["num_test"],
                "fit_images": metrics.get("fit_images"), "steps": metrics.get("steps"),
                "train_seconds": round(metrics.get("train_seconds") or 0, 1), "model_dir": config.model_dir,
                **({"seconds": round(seconds, 1)} if seconds is not None else {}), **bench_lines.provenance()}

    for seed in [int(s) for s in args.seeds.split(",")]:
        # CE and the teacher: reproduce's own runs of this cell (trained here unless finished)
        reproducing.run_table(args.table, [seed], args.budget, args.work_dir, methods=("ce", "scl_amp_recipe"),
                              cells=[args.cell], **data_options)
        keras.backend.clear_session()
        configs = {row: reproducing.run_config(cell, row, seed, args.budget, {}, options)
                   for row in ("ce", "scl_amp_recipe")}
        for row, config in configs.items():
            key = {**base, "figure": "accuracy", "row": row, "seed": seed}
            if not have(key):
                with open(os.path.join(config.model_dir, "metrics.json")) as f:
                    bench_lines.emit(line(key, config, json.load(f)), args.output)
        teacher = configs["scl_amp_recipe"]
        for ratio in [float(r) for r in args.ratios.split(",")]:
            key = {**base, "figure": "accuracy", "row": "self_training", "ratio": ratio, "seed": seed}
            if have(key):
                continue
            student = dataclasses.replace(
                teacher, model_dir=os.path.join(args.work_dir, "runs", "self_training", args.cell,
                                                f"ratio{ratio:g}_seed{seed}"),
                unlabeled_data="rest", pseudo_labels_from=teacher.model_dir, pseudo_label_ratio=ratio)
            start = time.time()
            metrics = train_and_evaluate(student)
            keras.backend.clear_session()
            record = metrics["pseudo_labels"]
            bench_lines.emit({**line(key, student, metrics, time.time() - start),
                              "pseudo_labels": record["count"], "pool": record["pool"],
                              "pseudo_label_precision": round(record["precision"], 4),
                              "smallest_margin": round(record["smallest_margin"], 4)}, args.output)


if __name__ == "__main__":
    main()
