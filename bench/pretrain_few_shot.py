"""Benchmark: contrastive pre-training on the unlabeled images, then a few-shot run from it.

For each seed: one ``--method=contrastive`` run on the training images (labels unread) plus the
dataset's images that are neither training nor test images (``--unlabeled_data=rest``: the test
images are never seen), then, for each method, a few-shot run of ``--finetune_steps`` steps on the
same split that starts from the pre-trained backbone (``--init_from``). Lines appended to
``--output`` as each run ends:

    BENCH {"figure": "pretrain", "seed": 0, "steps": 2400, "test_accuracy": ...}       # probe: reference DB
    BENCH {"figure": "accuracy", "method": "scl_amp", "seed": 0, "init": "pretrained", ...}

Compare with runs from scratch at the same steps and settings (e.g. the lines of
bench/learning_curve.py). Resumable: runs already in ``--output`` are skipped, and an interrupted
run resumes from its checkpoint in ``--work_dir``.

    python bench/pretrain_few_shot.py --dataset=mixed_wm38 --manual_dir=../shared/data/mixedwm38 \\
        --shots_per_class=20 --test_fraction=0.2 --image_size=52 --seeds=0,1 \\
        --pretrain_steps=2400 --finetune_steps=1600 --set arc_on_views=True crop_scale_min=0.8 \\
        --output=bench/results/pretrain_wm38_20shot.jsonl
"""
from __future__ import annotations

import argparse
import os
import time


LABEL_ONLY = ("arc_on_views", "class_aware_negatives", "alpha", "beta", "margin", "arc_scale", "steps", "epochs")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--shots_per_class", type=int, required=True)
    parser.add_argument("--test_fraction", type=float, required=True)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default="scl_amp,ce")
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--pretrain_steps", type=int, default=2400)
    parser.add_argument("--finetune_steps", type=int, default=1600)
    parser.add_argument("--set", nargs="*", default=[], help="TrainConfig fields of the few-shot runs, key=value")
    parser.add_argument("--output", required=True)
    parser.add_argument("--work_dir", default="/tmp/pretrain_few_shot")
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import bench_lines
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
        done = bench_lines.read(args.output)
        pretrain_dir = os.path.join(root, f"pretrain_seed{seed}")
        key = {**base, "figure": "pretrain", "seed": seed, "steps": args.pretrain_steps}
        if not any(all(r.get(k) == v for k, v in key.items()) for r in done):
            start = time.time()
            # The same data and augmentation as the few-shot runs; no label-only settings.
            shared = {k: v for k, v in extra.items() if k not in LABEL_ONLY}
            metrics = train_and_evaluate(TrainConfig(
                model_dir=pretrain_dir, method="contrastive", unlabeled_data="rest", steps=args.pretrain_steps,
                seed=seed, **common, **shared))
            keras.backend.clear_session()
            bench_lines.emit({**key, "test_accuracy": round(metrics["test_accuracy"], 4),
                              "reference_db_accuracy_on_features": round(
                                  metrics["reference_db_accuracy_on_features"], 4),
                              "pool_images": metrics["fit_images"], "epochs": metrics["epochs"],
                              "seconds": round(time.time() - start, 1), **bench_lines.provenance()}, args.output)
        for method in args.methods.split(","):
            key = {**base, "figure": "accuracy", "method": method, "seed": seed, "init": "pretrained",
                   "pretrain_steps": args.pretrain_steps, "steps": args.finetune_steps, "extra": extra}
            if any(all(r.get(k) == v for k, v in key.items()) for r in bench_lines.read(args.output)):
                continue
            start = time.time()
            metrics = train_and_evaluate(TrainConfig(
                model_dir=os.path.join(root, f"{method}_seed{seed}"), method=method, seed=seed,
                init_from=pretrain_dir, steps=args.finetune_steps, **common, **extra))
            keras.backend.clear_session()
            bench_lines.emit({**key, "test_accuracy": round(metrics["test_accuracy"], 4),
                              "reference_db_accuracy_on_features": round(
                                  metrics["reference_db_accuracy_on_features"], 4),
                              "num_test": metrics["num_test"], "seconds": round(time.time() - start, 1),
                              **bench_lines.provenance()}, args.output)


if __name__ == "__main__":
    main()
