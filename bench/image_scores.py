"""Benchmark: what the ``auto`` augmentation rules see in a dataset's training images.

For each seed's draw of k training images per class (the split training uses), prints the frame
score (:func:`scl_amp_tf.augmentation.frame_score`, which ``--crop_scale_min=auto`` reads) and the
orientation score (:func:`scl_amp_tf.augmentation.orientation_score`, ``--rotations=auto``) and
what each rule chooses, with each class's mean anisotropy and share of images whose horizontal
gradients dominate (:func:`scl_amp_tf.augmentation.anisotropy` above 0), one line per draw:

    BENCH {"figure": "image_scores", "dataset": "neu", "shots_per_class": 10, "seed": 0,
           "frame_score": ..., "orientation_score": ..., "crop_scale_min": 0.25, "rotations": "half", ...}

No training: seconds per draw. Example (NEU, 10, 20 and 50 per class, seeds 0-2):

    python bench/image_scores.py --dataset=neu --manual_dir=../shared/data/neu --image_size=64 \
        --shots_per_class=10,20,50 --seeds=0,1,2 --output=bench/results/image_scores.jsonl
"""
from __future__ import annotations

import argparse

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--shots_per_class", default="10,20,50", help="comma-separated k")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", default=None, help="append each BENCH line to this .jsonl")
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import bench_lines

    from scl_amp_tf import augmentation
    from scl_amp_tf import data as data_lib

    for seed in [int(s) for s in args.seeds.split(",")]:
        data = data_lib.load_dataset(args.dataset, args.image_size, manual_dir=args.manual_dir, seed=seed)
        for shots in [int(k) for k in args.shots_per_class.split(",")]:
            train_idx, _ = data_lib.split(data, seed=seed, shots_per_class=shots)
            images, labels = data.images[train_idx], data.labels[train_idx]
            scale_min, frame = augmentation.auto_crop_scale_min(images)
            rotations, orientation = augmentation.auto_rotations(images, labels)
            a = augmentation.anisotropy(images)
            per_class = {name: {"mean_anisotropy": round(float(a[labels == c].mean()), 4),
                                "share_positive": round(float(np.mean(a[labels == c] > 0)), 4)}
                         for c, name in enumerate(data.class_names) if np.any(labels == c)}
            bench_lines.emit({
                "figure": "image_scores", "dataset": args.dataset, "image_size": args.image_size,
                "shots_per_class": shots, "seed": seed, "num_images": int(len(train_idx)),
                "frame_score": round(frame, 4), "crop_scale_min": scale_min,
                "orientation_score": round(orientation, 4), "rotations": rotations, "per_class": per_class,
                **bench_lines.provenance()}, args.output)


if __name__ == "__main__":
    main()
