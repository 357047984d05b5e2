"""Benchmark: training-step time of each ``--stem`` (and, optionally, each ``--mixed_precision``,
batch size and batch normalisation: Keras's layer or the fused kernel of ``--fused_batchnorm``)
against the first one, in one process.

Step times swing about 2x over minutes on the shared 2-core machine, so the variants take turns
(``--rounds`` rounds of ``--steps`` steps each, after a warm-up) and the figure that means
something is the ratio measured in the same run: to the ImageNet stem of the same precision and
batch, and, per training image, to the first variant. One line per variant:

    BENCH {"figure": "stem_step_time", "stem": "small_pool", "mixed_precision": "float32", "batch_size": 32,
           "batchnorm": "fused", "seconds_per_step": ..., "ratio_to_imagenet": ...,
           "ratio_to_first_per_image": ...}

(lines without "batchnorm" were made before the fused kernel existed: Keras's layer).

    python bench/stem_speed.py --method=scl_amp --image_size=52 --output=bench/results/stem_speed.jsonl
    python bench/stem_speed.py --stems=small_pool --mixed_precisions=float32,mixed_bfloat16 \
        --batch_sizes=32,64 --output=bench/results/stem_speed.jsonl
    python bench/stem_speed.py --stems=small_pool --batchnorms=keras,fused --output=bench/results/stem_speed.jsonl
"""
from __future__ import annotations

import argparse
import itertools
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="scl_amp", choices=("scl_amp", "ce"))
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--image_size", type=int, default=52)
    parser.add_argument("--stems", default="imagenet,small_pool,small")
    parser.add_argument("--mixed_precisions", default="float32")
    parser.add_argument("--batch_sizes", default="32")
    parser.add_argument("--batchnorms", default="fused", help="keras (Keras's layer), fused (the fused kernel)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    if set(args.batchnorms.split(",")) - {"keras", "fused"}:
        parser.error(f"--batchnorms={args.batchnorms}: give keras, fused or both")

    import scl_amp_tf  # noqa: F401  (quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    import numpy as np
    import tensorflow as tf

    from scl_amp_tf import data as data_lib
    from scl_amp_tf import input_pipeline, train_config, training

    images = data_lib.load("synthetic_wafers", image_size=args.image_size, synthetic_per_class=10, seed=0)
    strategy = tf.distribute.get_strategy()
    runs = {}
    for variant in itertools.product(args.stems.split(","), args.mixed_precisions.split(","),
                                     [int(b) for b in args.batch_sizes.split(",")], args.batchnorms.split(",")):
        stem, precision, batch_size, batchnorm = variant
        config = train_config.TrainConfig(
            model_dir="/tmp/unused", method=args.method, backbone=args.backbone, stem=stem,
            image_size=args.image_size, arc_on_views=True, mixed_precision=precision, batch_size=batch_size,
            fused_batchnorm=batchnorm == "fused")
        model, _, _, views = training.build_model(config, strategy, images.images.shape[1:], images.num_classes)
        dataset = input_pipeline.pipeline(images, batch_size=batch_size, views=views, seed=0, shuffle=True,
                                          drop_remainder=True).repeat()
        model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # warm-up: tracing, first steps
        runs[variant] = (model, dataset)
    times = {variant: [] for variant in runs}
    for _ in range(args.rounds):
        for variant, (model, dataset) in runs.items():
            start = time.perf_counter()
            model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
            times[variant].append((time.perf_counter() - start) / args.steps)
    step = {variant: float(np.median(values)) for variant, values in times.items()}
    first = next(iter(step))
    for (stem, precision, batch_size, batchnorm), seconds in step.items():
        imagenet = step.get(("imagenet", precision, batch_size, batchnorm))
        line = {"figure": "stem_step_time", "method": args.method, "backbone": args.backbone,
                "image_size": args.image_size, "stem": stem, "mixed_precision": precision, "batch_size": batch_size,
                "batchnorm": batchnorm,
                "steps": args.steps, "rounds": args.rounds, "seconds_per_step": round(seconds, 4),
                "ratio_to_imagenet": None if imagenet is None else round(seconds / imagenet, 3),
                "ratio_to_first_per_image": round(seconds / batch_size / (step[first] / first[2]), 3),
                **bench_lines.provenance()}
        bench_lines.emit(line, args.output)


if __name__ == "__main__":
    main()
