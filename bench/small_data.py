"""Benchmark: SCL-AMP vs the cross-entropy baseline with k labelled images per class.

Trains both methods on the same splits and seeds, in one process (so the two are compared
under the same machine conditions), and prints one machine-readable line per run and one per
summary figure:

    BENCH {"figure": "accuracy", "method": "scl_amp", "seed": 0, ...}
    BENCH {"figure": "accuracy_summary", "method": "scl_amp", "mean": ..., "std": ..., "n": 3}

Example (NEU, 20 per class, the setting of the paper's Table III):

    python bench/small_data.py --dataset=folder:../shared/data/neu --shots_per_class=20 \
        --seeds=0,1,2 --backbone=resnet50 --image_size=64 --epochs=30

Any other training flag can be passed after ``--set``: ``--set bn_momentum=0.99 margin=0.3``;
``--output=bench/results/NAME.jsonl`` appends every line to that file as soon as its run ends;
a rerun with the same ``--output`` skips the runs it already holds, and with ``--keep_dirs`` a run
that was stopped resumes from its checkpoint.

Settings are chosen on a validation split, never on the test images: ``--set
validation_fraction=0.8`` with ``--shots_per_class=50`` fits 10 of each class's 50 training
images and classifies the other 40 (each line then holds ``validation``: their accuracy and each
class's recall, for the weights the run ends with, and the accuracy of every validated epoch;
``validation_every=N`` validates every N-th epoch only, which matters when an epoch is a step or two).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--shots_per_class", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="scl_amp,ce")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--tag", default="", help="free text copied into every line")
    parser.add_argument("--set", nargs="*", default=[], help="extra TrainConfig fields, key=value")
    parser.add_argument("--keep_dirs", default=None, help="keep model dirs under this folder")
    parser.add_argument("--output", default=None, help="append each BENCH line to this .jsonl as its run ends")
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    import keras

    from scl_amp_tf.train_config import parse_overrides
    from scl_amp_tf.train_config import TrainConfig
    from scl_amp_tf.training import train_and_evaluate

    try:
        extra = parse_overrides(args.set)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    results = {}
    root = args.keep_dirs or tempfile.mkdtemp(prefix="bench_")
    for method in args.methods.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            key = {"figure": "accuracy", "method": method, "seed": seed, "tag": args.tag, "dataset": args.dataset,
                   "shots_per_class": args.shots_per_class, "backbone": args.backbone,
                   "image_size": args.image_size, "epochs": args.epochs, "extra": extra}
            done = [r for r in bench_lines.read(args.output, "accuracy") if bench_lines.matches(r, key)]
            if done:
                print(f"{method} seed {seed}: already in {args.output}, kept", flush=True)
                results.setdefault(method, []).append(done[-1]["test_accuracy"])
                continue
            model_dir = os.path.join(root, f"{method}_seed{seed}")
            if not args.keep_dirs:  # a kept folder resumes from its checkpoint (same settings only)
                shutil.rmtree(model_dir, ignore_errors=True)
            config = TrainConfig(model_dir=model_dir, dataset=args.dataset, manual_dir=args.manual_dir,
                                 shots_per_class=args.shots_per_class, seed=seed, method=method,
                                 backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                                 verbose=0, **extra)
            start = time.time()
            metrics = train_and_evaluate(config)
            keras.backend.clear_session()
            line = {**key, "test_accuracy": round(metrics["test_accuracy"], 4),
                    "num_test": metrics["num_test"], "seconds": round(time.time() - start, 1),
                    **bench_lines.provenance()}
            if metrics.get("final_train_metrics"):  # the last epoch's losses: is L_arc still pulling?
                line["final_train_metrics"] = {k: round(v, 4) for k, v in metrics["final_train_metrics"].items()}
            if "reference_db_accuracy_on_features" in metrics:
                line["reference_db_accuracy_on_features"] = round(metrics["reference_db_accuracy_on_features"], 4)
            if metrics.get("validation"):
                held = metrics["validation"]
                line["validation"] = {
                    "num_images": held["num_images"], "accuracy": round(held["final"]["accuracy"], 4),
                    "per_class_recall": {c: round(r, 4) for c, r in held["final"]["per_class_recall"].items()},
                    "best_epoch": held["best_epoch"], "best_accuracy": round(held["best_val_accuracy"], 4),
                    "restored_best": held["restored_best"], "validated_epochs": held["validated_epochs"],
                    "history": [round(a, 4) for a in held["history"]]}
            bench_lines.emit(line, args.output)
            results.setdefault(method, []).append(metrics["test_accuracy"])
    for method, accs in results.items():
        bench_lines.emit({
            "figure": "accuracy_summary", "method": method, "tag": args.tag, "dataset": args.dataset,
            "shots_per_class": args.shots_per_class, "backbone": args.backbone,
            "image_size": args.image_size, "epochs": args.epochs, "extra": extra,
            "mean": round(float(np.mean(accs)), 4), "std": round(float(np.std(accs)), 4), "n": len(accs)},
            args.output)
    if not args.keep_dirs:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
