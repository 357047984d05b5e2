"""Draws the lines of bench/learning_curve.py: test accuracy against optimizer steps, one PNG per
setting (dataset, split, backbone, size, tag), one curve per method and settings, mean over the
seeds with a band of +- one population std, and prints the same figures as a markdown table.

    python bench/plot_learning_curves.py bench/results/learning_curve_*.jsonl --output_dir=bench/results

A ``.json`` path is a table of ``python -m scl_amp_tf.reproduce`` instead: each of its runs is one
point, at the steps its row trained (``--set=steps=N`` gives a table per step count). With a rate
that decays to 0 at the last step (``lr_schedule=cosine``), a snapshot of one long run is not what
a shorter run gives, so such curves are drawn from one table per step count, tagged "one run per
point"; ``--cells`` keeps those tables' runs of the given cells only.

    python bench/plot_learning_curves.py results/table_6_3200steps.json OUT_1600/table_6.json ... --cells=20shot \
        --methods=ce,scl_amp_recipe
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import bench_lines
import numpy as np


def setting_of(row):
    split = (f"{row['shots_per_class']} per class" if row.get("shots_per_class")
             else f"{row.get('train_fraction')} of each class")
    return f"{row['dataset'].split('/')[-1]}, {split}, {row['backbone']} {row['image_size']} px" + (
        f", {row['tag']}" if row.get("tag") else "")


def curve_of(row):
    if row.get("curve"):
        return row["curve"]
    extra = row.get("extra") or {}
    scl_only = {"arc_on_views", "class_aware_negatives", "unlabeled_data", "alpha", "beta"}
    shown = {k: v for k, v in extra.items() if row["method"] == "scl_amp" or k not in scl_only}
    return ("SCL-AMP" if row["method"] == "scl_amp" else "CE") + (
        " " + " ".join(f"{k}={v}" for k, v in sorted(shown.items())) if shown else "")


def table_rows(path, cells=None, methods=None):
    """The runs of a ``reproduce`` table (its ``.json``) as learning-curve lines, one curve per
    row of the table (named as the table names it): the step is the steps the run's row trained,
    the settings those the row adds to the budget's."""
    from scl_amp_tf import tables

    table = json.load(open(path))
    conditions = table["conditions"]
    cells_of_table = {cell.key: cell for cell in tables.TABLES[conditions["table"]][2]}
    rows = []
    for run in table["runs"]:
        if ((cells and run["cell"] not in cells) or (methods and run["method"] not in methods)
                or run.get("test_accuracy") is None):  # Table IV's runs are measured k-shot, not here
            continue
        extra = dict(conditions.get("row_settings", {}).get(run["method"], {}))
        # the row's steps (a budget's, or --set steps); a budget of epochs: the steps the run made
        steps = extra.pop("steps", None) or conditions["settings"].get("steps") or run["steps"]
        cell = cells_of_table[run["cell"]]
        paper = cell.paper.get("scl_amp")
        rows.append({"dataset": cell.dataset, **cell.split,
                     "paper_scl_amp": paper if isinstance(paper, (int, float)) else None,
                     "backbone": conditions["settings"]["backbone"],
                     "image_size": conditions["settings"]["image_size"], "tag": "one run per point",
                     "method": tables.ROWS[run["method"]].method, "curve": tables.ROWS[run["method"]].name,
                     "extra": extra, "seed": run["seed"],
                     "step": steps, "test_accuracy": run["test_accuracy"]})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--output_dir", default=None, help="write one PNG per setting here")
    parser.add_argument("--cells", default=None, help="of the tables (.json), only these cells, e.g. 20shot")
    parser.add_argument("--methods", default=None, help="of the tables (.json), only these rows: ce,scl_amp_recipe")
    args = parser.parse_args()
    cells = args.cells.split(",") if args.cells else None
    methods = args.methods.split(",") if args.methods else None
    rows = [r for path in args.paths
            for r in (table_rows(path, cells, methods) if path.endswith(".json")
                      else bench_lines.read(path, "learning_curve"))]
    settings = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(dict)))
    paper = {}  # setting -> the paper's SCL-AMP figure (tables only), drawn as a dashed line
    for r in rows:
        by_seed = settings[setting_of(r)][curve_of(r)][r["step"]]
        if r["seed"] in by_seed:
            print(f"warning: {setting_of(r)}, {curve_of(r)}, step {r['step']}, seed {r['seed']} given twice: "
                  "the later one is drawn", file=sys.stderr)
        by_seed[r["seed"]] = r["test_accuracy"] * 100
        if r.get("paper_scl_amp"):
            paper[setting_of(r)] = r["paper_scl_amp"]
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
            if setting in paper:
                ax.axhline(paper[setting], color="gray", linestyle="--",
                           label=f"the paper's SCL-AMP ({paper[setting]})")
            ax.set_xscale("log", base=2)
            ax.set_xticks(steps, [str(s) for s in steps])
            ax.minorticks_off()
            ax.set_xlabel("optimizer steps (batch 32)")
            ax.set_ylabel("test accuracy %")
            ax.set_title(setting, fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            name = "learning_curve_" + "".join(c if c.isalnum() else "_" for c in setting).strip("_") + ".png"
            os.makedirs(args.output_dir, exist_ok=True)
            fig.savefig(os.path.join(args.output_dir, name), dpi=100)
            plt.close(fig)
            print(f"\n![{setting}]({name})")


if __name__ == "__main__":
    main()
