"""Benchmark: test accuracy against optimizer steps, SCL-AMP and the CE baseline on the same splits.

Each (method, seed) is one training run of ``max(--steps)`` steps; when the optimizer reaches a
step of ``--steps`` the run is evaluated on its test images the way ``train`` evaluates (SCL-AMP:
the reference database of the training images on the embeddings, and on the pooled backbone
features; CE: its softmax, and the reference database on its backbone features) and one line is
appended to ``--output`` at once:

    BENCH {"figure": "learning_curve", "method": "scl_amp", "seed": 0, "step": 400, "test_accuracy": ...}

A learning curve measures: it selects nothing (settings are chosen on a validation split carved
from the training images, never on these test figures). The learning rate schedule is part of a
curve's settings: with ``lr_schedule=cosine`` the rate depends on the run's last step, so the
points before the last are not what a shorter run would give; the paper's constant rate (the
default) gives a curve whose every point is a shorter run.

Resumable: runs live in ``--work_dir`` (default ``/tmp/learning_curves``); rerunning the command
skips the steps already in ``--output`` and resumes an unfinished run from its last
checkpoint (``--checkpoint_seconds``; the evaluation points already written are not measured again).

    python bench/learning_curve.py --dataset=mixed_wm38 --manual_dir=../shared/data/mixedwm38 \\
        --shots_per_class=20 --test_fraction=0.2 --image_size=52 --seeds=0,1 \\
        --steps=200,400,800,1600,3200 --output=bench/results/learning_curve_wm38_20shot.jsonl
    python bench/plot_learning_curves.py bench/results/learning_curve_wm38_20shot.jsonl
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--shots_per_class", type=int, default=None)
    parser.add_argument("--train_fraction", type=float, default=None)
    parser.add_argument("--test_fraction", type=float, default=None)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default="scl_amp,ce")
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--steps", default="200,400,800,1600,3200")
    parser.add_argument("--tag", default="", help="free text copied into every line (part of a run's identity)")
    parser.add_argument("--set", nargs="*", default=[], help="extra TrainConfig fields, key=value")
    parser.add_argument("--output", required=True, help="the .jsonl file the lines are appended to")
    parser.add_argument("--work_dir", default="/tmp/learning_curves")
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    import keras

    from scl_amp_tf import data as data_lib
    from scl_amp_tf import evaluation, inference, train_config, training
    from scl_amp_tf.train_config import parse_overrides

    extra = parse_overrides(args.set)
    steps = sorted({int(s) for s in args.steps.split(",")})
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for method in args.methods.split(","):
            identity = {"dataset": args.dataset, "shots_per_class": args.shots_per_class,
                        "train_fraction": args.train_fraction, "test_fraction": args.test_fraction,
                        "method": method, "seed": seed, "backbone": args.backbone,
                        "image_size": args.image_size, "tag": args.tag, "extra": extra}
            done = {r["step"] for r in bench_lines.read(args.output, "learning_curve")
                    if all(r.get(k) == v for k, v in identity.items())}
            wanted = [s for s in steps if s not in done]
            if not wanted:
                print(f"{method} seed {seed}: every step already in {args.output}", flush=True)
                continue
            run_name = "_".join(str(v) for v in (args.tag or "curve", method, f"seed{seed}"))
            config = train_config.TrainConfig(
                model_dir=os.path.join(args.work_dir, os.path.basename(args.output).replace(".jsonl", ""), run_name),
                dataset=args.dataset, manual_dir=args.manual_dir, shots_per_class=args.shots_per_class,
                train_fraction=args.train_fraction, test_fraction=args.test_fraction, seed=seed, method=method,
                backbone=args.backbone, image_size=args.image_size, verbose=0, steps=steps[-1], **extra)
            data = data_lib.load_dataset(config.dataset, config.image_size, manual_dir=config.manual_dir,
                                      synthetic_per_class=config.synthetic_per_class, seed=seed,
                                      classes=config.classes)
            train_idx, test_idx = data_lib.split(data, seed=seed, shots_per_class=config.shots_per_class,
                                                 train_fraction=config.train_fraction,
                                                 test_fraction=config.test_fraction)
            train_data, test_data = data.subset(train_idx), data.subset(test_idx)
            start = time.time()

            class Measure(keras.callbacks.Callback):
                """Evaluates on the test images at each wanted step and writes its line at once."""

                epoch = 0

                def on_epoch_begin(self, epoch, logs=None):
                    self.epoch = epoch + 1

                def on_train_batch_end(self, batch, logs=None):
                    step = int(self.model.optimizer.iterations.numpy())
                    if step in wanted:
                        self.measure(step, logs)
                    if step >= steps[-1]:
                        self.model.stop_training = True

                def measure(self, step, logs):
                    scl = method == "scl_amp"
                    network = self.model.encoder if scl else self.model
                    features = inference.features_of(network)

                    def reference_accuracy(model):
                        predictions, _, _ = evaluation.reference_predictions(
                            inference.embed(model, train_data.images), train_data.labels,
                            inference.embed(model, test_data.images), train_data.class_names)
                        return float(np.mean(predictions == test_data.labels))

                    accuracy = (reference_accuracy(network) if scl else
                                float(np.mean(np.argmax(inference.embed(network, test_data.images), 1)
                                              == test_data.labels)))
                    line = {"figure": "learning_curve", **identity, "step": step, "epoch": self.epoch,
                            "test_accuracy": round(accuracy, 4),
                            "reference_db_accuracy_on_features": round(reference_accuracy(features), 4),
                            "num_train": int(len(train_idx)), "num_test": int(len(test_idx)),
                            "train_metrics": {k: round(float(v), 4) for k, v in (logs or {}).items()},
                            "seconds": round(time.time() - start, 1), **bench_lines.provenance()}
                    bench_lines.emit(line, args.output)

            training.train_and_evaluate(config, callbacks=[Measure()])
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
