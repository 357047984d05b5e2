"""Draws the lines of bench/learning_curve.py: test accuracy against optimizer steps, one PNG per
setting (dataset, split, backbone, size, tag), one curve per method and settings, mean over the
seeds with a band of +- one population std, and prints the same figures as a markdown table.

    python bench/plot_learning_curves.py bench/results/learning_curve_*.jsonl --output_dir=bench/results
"""
from __future__ import annotations

import argparse
import collections
import os

import bench_lines
import numpy as np


def setting_of(row):
    split = (f"{row['shots_per_class']} per class" if row.get("shots_per_class")
             else f"{row.get('train_fraction')} of each class")
    return f"{row['dataset'].split('/')[-1]}, {split}, {row['backbone']} {row['image_size']} px" + (
        f", {row['tag']}" if row.get("tag") else "")


def curve_of(row):
    extra = row.get("extra") or {}
    scl_only = {"arc_on_views", "class_aware_negatives", "unlabeled_data", "alpha", "beta"}
    shown = {k: v for k, v in extra.items() if row["method"] == "scl_amp" or k not in scl_only}
    return ("SCL-AMP" if row["method"] == "scl_amp" else "CE") + (
        " " + " ".join(f"{k}={v}" for k, v in sorted(shown.items())) if shown else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--output_dir", default=None, help="write one PNG per setting here")
    args = parser.parse_args()
    rows = [r for path in args.paths for r in bench_lines.read(path, "learning_curve")]
    settings = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(dict)))
    for r in rows:
        settings[setting_of(r)][curve_of(r)][r["step"]][r["seed"]] = r["test_accuracy"] * 100
    for setting, curves in sorted(settings.items()):
        print(f"\n**{setting}** (test accuracy %, mean ± std over seeds)\n")
        steps = sorted({s for c in curves.values() for s in c})
        print("| curve | seeds | " + " | ".join(str(s) for s in steps) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in steps) + " |")
        for name, points in sorted(curves.items()):
            seeds = sorted({seed for p in points.values() for seed in p})
            cells = []
            for s in steps:
                values = np.array(list(points.get(s, {}).values()))
                cells.append(f"{values.mean():.1f} ± {values.std():.1f} (n={len(values)})" if len(values) else "")
            print(f"| {name} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
        if args.output_dir:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 4.5))
            for name, points in sorted(curves.items()):
                xs = sorted(points)
                mean = np.array([np.mean(list(points[s].values())) for s in xs])
                std = np.array([np.std(list(points[s].values())) for s in xs])
                n = min(len(points[s]) for s in xs)
                ax.plot(xs, mean, marker="o", label=f"{name} ({n}+ seeds)")
                ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("optimizer steps (batch 32)")
            ax.set_ylabel("test accuracy %")
            ax.set_title(setting, fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            name = "learning_curve_" + "".join(c if c.isalnum() else "_" for c in setting).strip("_") + ".png"
            fig.savefig(os.path.join(args.output_dir, name), dpi=100)
            plt.close(fig)
            print(f"\n![{setting}]({name})")


if __name__ == "__main__":
    main()
