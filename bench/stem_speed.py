"""Benchmark: training-step time of each ``--stem`` against the ImageNet stem, in one process.

Step times swing about 2x over minutes on the shared 2-core machine, so the stems take turns
(``--rounds`` rounds of ``--steps`` steps each, after a warm-up) and the figure that means
something is the ratio to the ImageNet stem measured in the same run. One line per stem:

    BENCH {"figure": "stem_step_time", "stem": "small_pool", "seconds_per_step": ..., "ratio_to_imagenet": ...}

    python bench/stem_speed.py --method=scl_amp --image_size=52 --output=bench/results/stem_speed.jsonl
"""
from __future__ import annotations

import argparse
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="scl_amp", choices=("scl_amp", "ce"))
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--image_size", type=int, default=52)
    parser.add_argument("--stems", default="imagenet,small_pool,small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    import numpy as np
    import tensorflow as tf

    from scl_amp_tf import data as data_lib
    from scl_amp_tf import input_pipeline, train_config, training

    images = data_lib.load("synthetic_wafers", image_size=args.image_size, synthetic_per_class=10, seed=0)
    strategy = tf.distribute.get_strategy()
    runs = {}
    for stem in args.stems.split(","):
        config = train_config.TrainConfig(model_dir="/tmp/unused", method=args.method, backbone=args.backbone,
                                          stem=stem, image_size=args.image_size, arc_on_views=True)
        model, _, _, views = training.build_model(config, strategy, images.images.shape[1:], images.num_classes)
        dataset = input_pipeline.pipeline(images, batch_size=32, views=views, seed=0, shuffle=True,
                                    drop_remainder=True).repeat()
        model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # warm-up: tracing, first steps
        runs[stem] = (model, dataset)
    times = {stem: [] for stem in runs}
    for _ in range(args.rounds):
        for stem, (model, dataset) in runs.items():
            start = time.perf_counter()
            model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
            times[stem].append((time.perf_counter() - start) / args.steps)
    base = float(np.median(times["imagenet"])) if "imagenet" in times else None
    for stem, values in times.items():
        line = {"figure": "stem_step_time", "method": args.method, "backbone": args.backbone,
                "image_size": args.image_size, "stem": stem, "steps": args.steps, "rounds": args.rounds,
                "seconds_per_step": round(float(np.median(values)), 4),
                "ratio_to_imagenet": None if base is None else round(float(np.median(values)) / base, 3),
                **bench_lines.provenance()}
        bench_lines.emit(line, args.output)


if __name__ == "__main__":
    main()
