"""Groups the ``BENCH`` accuracy lines of bench/small_data.py runs: mean and std over seeds.

    python bench/summarize.py bench/results/*.jsonl
"""
import collections
import json
import sys

import numpy as np

from scl_amp_tf.train_config import TrainConfig

DEFAULTS = TrainConfig(model_dir="")
SCL_ONLY = {"arc_on_views", "class_aware_negatives", "temperature", "margin", "arc_scale", "alpha", "beta", "symmetric"}


def _settings(row):
    """The non-default settings of a run, without those its method does not use."""
    extra = {k: v for k, v in row.get("extra", {}).items() if getattr(DEFAULTS, k, None) != v}
    if row["method"] != "scl_amp":
        extra = {k: v for k, v in extra.items() if k not in SCL_ONLY}
    return json.dumps(extra, sort_keys=True)


def main(paths):
    groups = collections.defaultdict(list)
    for path in paths:
        for line in open(path):
            line = line.strip()
            if line.startswith("BENCH "):
                line = line[len("BENCH "):]
            if not line:
                continue
            row = json.loads(line)
            if row.get("figure") != "accuracy":
                continue
            key = (row["dataset"], row["shots_per_class"], row["backbone"], row["image_size"], row["epochs"],
                   _settings(row), row["method"])
            groups[key].append(row)
    print("| dataset | k/class | backbone | px | epochs | extra settings | method | test accuracy % (mean ± std) "
          "| reference DB on backbone features % | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, rows in sorted(groups.items()):
        by_seed = {}
        for r in rows:  # a seed run twice must give the same figure (runs are deterministic)
            earlier = by_seed.setdefault(r["seed"], r)
            if earlier["test_accuracy"] != r["test_accuracy"]:
                raise SystemExit(f"seed {r['seed']} of {key} was run twice with different results "
                                 f"({earlier['test_accuracy']} vs {r['test_accuracy']}): keep one file")
        acc = np.array([r["test_accuracy"] for r in by_seed.values()]) * 100
        feat = np.array([r["reference_db_accuracy_on_features"] for r in by_seed.values()
                         if "reference_db_accuracy_on_features" in r]) * 100
        feat_text = f"{feat.mean():.1f} ± {feat.std():.1f}" if len(feat) else "-"
        dataset, shots, backbone, size, epochs, settings, method = key
        print(f"| {dataset} | {shots} | {backbone} | {size} | {epochs} | {settings} | {method} | "
              f"{acc.mean():.1f} ± {acc.std():.1f} | {feat_text} | {','.join(str(s) for s in sorted(by_seed))} |")


if __name__ == "__main__":
    main(sys.argv[1:])
