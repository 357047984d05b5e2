"""Benchmark: training-step time of SCL-AMP vs the cross-entropy baseline.

Same backbone, global batch and input size, one process, in-memory random data (the input
pipeline is not what is measured). SCL-AMP pushes three views per image through the encoder,
so about 3.0 is the floor of the ratio SCL-AMP step / CE step. Prints one line per figure:

    BENCH {"figure": "step_seconds", "method": "scl_amp", ...}
    BENCH {"figure": "step_ratio_scl_over_ce", "value": ...}

    python bench/step_time.py --backbone=resnet50 --image_size=64 --batch_size=32 --steps=10
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timing rounds per method")
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import keras
    import tensorflow as tf

    from scl_amp_tf import models

    rng = np.random.default_rng(0)
    shape = (args.image_size, args.image_size, args.channels)
    x = [tf.constant(rng.random((args.batch_size, *shape)), tf.float32) for _ in range(3)]
    y = tf.constant(rng.integers(0, args.num_classes, args.batch_size))

    def build(method):
        keras.utils.set_random_seed(0)
        features = models.build_features(shape, args.backbone, bn_momentum=0.9)
        if method == "scl_amp":
            model = models.SclAmpModel(models.build_encoder(features), args.num_classes)
            model.build()
            model.compile(optimizer=keras.optimizers.Adam(5e-4))
            batch = (tuple(x), y)
        else:
            model = models.build_classifier(features, args.num_classes)
            model.compile(optimizer=keras.optimizers.Adam(5e-4),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            batch = (x[1], y)
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
        model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
        return model, dataset

    built = {m: build(m) for m in ("scl_amp", "ce")}
    times = {m: [] for m in built}
    for _ in range(args.repeats):  # alternate, so both methods see the same machine conditions
        for method, (model, dataset) in built.items():
            start = time.perf_counter()
            model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
            times[method].append((time.perf_counter() - start) / args.steps)
    common = {"backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size,
              "channels": args.channels, "steps": args.steps, "repeats": args.repeats}
    for method, values in times.items():
        print("BENCH " + json.dumps({"figure": "step_seconds", "method": method, **common,
                                     "mean": round(float(np.mean(values)), 4),
                                     "std": round(float(np.std(values)), 4),
                                     "images_per_second": round(args.batch_size / float(np.mean(values)), 1)}))
    ratios = np.array(times["scl_amp"]) / np.array(times["ce"])
    print("BENCH " + json.dumps({"figure": "step_ratio_scl_over_ce", **common,
                                 "mean": round(float(ratios.mean()), 3), "std": round(float(ratios.std()), 3)}))


if __name__ == "__main__":
    main()
