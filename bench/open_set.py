"""Benchmark: open-set rejection with ``--reject_threshold=auto`` (issue #16), against its promise.

The promise (``evaluate --help``, README): the automatic threshold accepts about 95 % of the
images of known classes (``--reject_quantile=0.05``). It is calibrated on the run's validation
images (``--validation_fraction``: training images held out from fitting, references of the
database afterwards). For each seed this trains a run of the small-data recipe
(``scl_amp_tf.recipes.SMALL_DATA``; ``--steps`` and ``--set`` override it) and measures on its test
images:

* ``known_accepted``: the fraction of the known-class test images the threshold accepts (promise: 0.95);
* ``unseen_rejected``: each class in turn left out of the reference database, the fraction of its
  test images the same threshold rejects, averaged over the classes (the threshold stays the one
  calibrated with every class known, as a deployed model has it);
* ``open_set_auroc``: the mean leave-one-class-out AUROC of known vs unseen (no threshold).

One line per seed; seeds already in ``--output`` are skipped and finished runs in ``--work_dir``
are reused (the command resumes):

    BENCH {"figure": "open_set", "dataset": ..., "seed": 0, "known_accepted": ..., "unseen_rejected": ..., ...}

    python bench/open_set.py --dataset=neu --manual_dir=../shared/data/neu --shots_per_class=20 \
        --image_size=64 --steps=800 --seeds=0,1,2 --work_dir=/tmp/open_set --output=bench/results/open_set.jsonl
"""
from __future__ import annotations

import argparse
import os

import numpy as np


def unseen_rejected(reference, reference_labels, queries, query_labels, threshold):
    """Mean over classes c of the fraction of c's queries whose best mean cosine similarity to the
    other classes' prototypes is below ``threshold`` (c left out of the database)."""
    from scl_amp_tf import open_set

    rates = [float(np.mean(best[query_labels == c] < threshold))
             for c, best in open_set.left_out_best_scores(reference, reference_labels, queries)
             if np.any(query_labels == c)]
    return float(np.mean(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--shots_per_class", type=int, default=20)
    parser.add_argument("--test_fraction", type=float, default=None)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--validation_fraction", type=float, default=0.2)
    parser.add_argument("--reject_quantile", type=float, default=0.05)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", nargs="*", default=[], help="extra TrainConfig fields, key=value")
    parser.add_argument("--work_dir", required=True, help="the runs are kept here (reused when finished)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    from scl_amp_tf import evaluating, recipes, run_folder
    from scl_amp_tf.train_config import parse_overrides
    from scl_amp_tf.train_config import TrainConfig
    from scl_amp_tf.training import train_and_evaluate

    settings = {**recipes.SMALL_DATA, **({"steps": args.steps} if args.steps else {}), **parse_overrides(args.set)}
    done = {(r["dataset"], r["shots_per_class"], r["seed"], r["steps"])
            for r in bench_lines.read(args.output, "open_set")}
    for seed in (int(s) for s in args.seeds.split(",")):
        if (args.dataset, args.shots_per_class, seed, settings["steps"]) in done:
            continue
        dataset = args.dataset.replace(":", "_").replace("/", "_")
        name = f"{dataset}_{args.shots_per_class}shot_{settings['steps']}steps_seed{seed}"
        model_dir = os.path.join(args.work_dir, name)
        if not os.path.exists(os.path.join(model_dir, run_folder.METRICS)):
            train_and_evaluate(TrainConfig(
                model_dir=model_dir, dataset=args.dataset, manual_dir=args.manual_dir, image_size=args.image_size,
                shots_per_class=args.shots_per_class, test_fraction=args.test_fraction, seed=seed,
                validation_fraction=args.validation_fraction, verbose=0, **settings))
        result, labels, _, embeddings = evaluating.evaluate_run(model_dir, reject_threshold="auto",
                                                              reject_quantile=args.reject_quantile)
        bench_lines.emit({
            "figure": "open_set", "dataset": args.dataset, "shots_per_class": args.shots_per_class, "seed": seed,
            "image_size": args.image_size, "validation_fraction": args.validation_fraction,
            "reject_quantile": args.reject_quantile, "promised_known_accepted": 1 - args.reject_quantile,
            "settings": settings, "steps": settings["steps"], "threshold": result["reject_threshold"],
            "test_accuracy": result["accuracy"], "num_test": int(len(labels)),
            "known_accepted": 1.0 - result["rejected"] / len(labels),
            "unseen_rejected": unseen_rejected(embeddings["reference"], embeddings["reference_labels"],
                                               embeddings["test"], embeddings["test_labels"],
                                               result["reject_threshold"]),
            "open_set_auroc": result["open_set_auroc"]["mean"], **bench_lines.provenance()}, args.output)


if __name__ == "__main__":
    main()
