"""Benchmark: where the demo's errors are, and whether the synthetic maps could explain them.

Two figures, one ``BENCH`` line each:

* ``demo_error_kinds`` (per finished run): the run's test errors sorted by how the predicted
  class's defect set differs from the true one (MixedWM38 classes are sets of the 8 defect types):
  one type missed, one type added, one type swapped for another (and which pair), or more.
* ``component_visibility`` (per class and defect type): how many fail dies the type adds that
  neither the background speckle nor the class's other types already failed, over maps drawn as
  :func:`scl_amp_tf.synthetic_wafers.generate` draws them. A type that adds almost nothing is
  invisible, and no classifier could tell its class from the class without it; the share of maps
  where that happens bounds the accuracy any method can reach.

    python bench/demo_errors.py --per_class=1000 --output=bench/results/demo_errors.jsonl runs/demo
"""
from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np


def error_kinds(metrics):
    """Counts of the run's errors by how the predicted defect set differs from the true one."""
    names = metrics["class_names"]
    sets = [frozenset() if n == "Normal" else frozenset(n.split("+")) for n in names]
    confusion = np.asarray(metrics["confusion_matrix"])
    kinds = collections.Counter()
    for t, p in zip(*np.nonzero(confusion)):
        if t == p:
            continue
        missed, added = sorted(sets[t] - sets[p]), sorted(sets[p] - sets[t])
        if len(missed) == 1 and not added:
            kind = f"missed {missed[0]}"
        elif len(added) == 1 and not missed:
            kind = f"added {added[0]}"
        elif len(missed) == 1 and len(added) == 1:
            kind = "swapped " + "<->".join(sorted((missed[0], added[0])))
        else:
            kind = "more than one type"
        kinds[kind] += int(confusion[t, p])
    return kinds, int(confusion.sum() - np.trace(confusion)), int(confusion.sum())


def component_visibility(per_class, seed, size=52, thresholds=(10, 20)):
    """Per class and defect type: the new fail dies the type adds (median) and the share of maps
    where it adds fewer than each threshold. Draws as ``generate`` does, keeping the parts apart."""
    from scl_amp_tf import synthetic_wafers as sw

    rng = np.random.default_rng(seed)
    yy, xx, radius = sw._geometry(size)
    wafer = yy * yy + xx * xx <= radius * radius
    rows = []
    for name in sw.CLASS_NAMES:
        parts = sw._components_of(name)
        background = 0.01 + 0.17 * rng.beta(2.0, 3.0, per_class)
        fail = sw._bernoulli(rng, np.broadcast_to(background[:, None, None], (per_class, size, size)))
        masks = {part: sw._DRAW[part](rng, per_class, yy, xx, radius) & wafer for part in parts}
        for part in parts:
            others = fail.copy()
            for other in parts:
                if other != part:
                    others |= masks[other]
            added = (masks[part] & ~others).sum(axis=(1, 2))
            rows.append({"class": name, "type": part, "median_new_dies": float(np.median(added)),
                         **{f"share_below_{t}": float(np.mean(added < t)) for t in thresholds}})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="*", help="finished demo runs (their metrics.json)")
    parser.add_argument("--per_class", type=int, default=1000, help="maps per class for the visibility figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import bench_lines

    for model_dir in args.model_dirs:
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        kinds, errors, total = error_kinds(metrics)
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        bench_lines.emit({"figure": "demo_error_kinds", "model_dir": os.path.relpath(os.path.abspath(model_dir)),
                          "method": metrics["method"], "seed": config.get("seed"),
                          "test_accuracy": metrics["test_accuracy"], "errors": errors, "num_test": total,
                          "kinds": dict(kinds.most_common()), **bench_lines.provenance()}, args.output)
    rows = component_visibility(args.per_class, args.seed)
    bench_lines.emit({"figure": "component_visibility", "per_class": args.per_class, "seed": args.seed,
                      "rows": rows, **bench_lines.provenance()}, args.output)


if __name__ == "__main__":
    main()
