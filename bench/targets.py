"""Issue #15's accuracy targets against what the committed results say, as one Markdown table.

Reads the reproduced tables (``results/table_3.json``: NEU, ``results/table_6.json``: MixedWM38;
a row whose cell is not in those yet comes from the table made at an earlier budget,
``results/table_N_<steps>steps.json``, the most steps first, and the row says its steps per run)
and the demo's raw ``BENCH`` lines, and prints, for each target cell, the recommended recipe's
mean ± sample std over the seeds it has (and, in a second row, the recipe with self-training
where the cell has unlabeled images and that row was run), the CE baseline's on the same seeds and splits, how many
seeds the recipe beats CE on, and how far the mean is from the target. Nothing is trained: the
table is only as complete as the runs committed so far, and it says which seeds it has.

    python bench/targets.py                      # the committed results
    python bench/targets.py --results=/tmp/out   # another reproduce --output
    python bench/targets.py --update README.md BENCHMARKS.md   # rewrite their targets blocks

``--update`` replaces, in each file, the lines between ``<!-- targets-start -->`` and
``<!-- targets-end -->`` with the table, so the figures in the docs are the ones the results give.
"""
import argparse
import glob
import json
import os
import re

import bench_lines
from scl_amp_tf.files import atomic_write
from scl_amp_tf.table_markdown import cell_text, stats

# (table, cell, target in %) from issue #15: the paper's SCL-AMP on MixedWM38, round figures on NEU.
TARGETS = [
    (6, "20shot", 92.3), (6, "50shot", 96.9), (6, "100shot", 97.8),
    (3, "10shot", 93.0), (3, "20shot", 95.0), (3, "50shot", 98.0),
]
DATASETS = {3: "NEU", 6: "MixedWM38 (89 % copy)"}
SELF_TRAINING = "scl_amp_self_training"  # the recipe with its own run as teacher (reproduce's row)
DEMO_TARGET = 90.0
DEMO_SECONDS = 180.0


def tables_of(results_dir, table):
    """``[(conditions, runs)]`` of the table's results: the current budget's ``table_N.json``, then
    those kept from earlier budgets (``table_N_<steps>steps.json``), the most steps first."""
    kept = {}
    for path in glob.glob(os.path.join(results_dir, f"table_{table}_*steps.json")):
        match = re.fullmatch(rf"table_{table}_(\d+)steps\.json", os.path.basename(path))
        if match:
            kept[int(match.group(1))] = path
    out = []
    for path in [os.path.join(results_dir, f"table_{table}.json"), *(kept[k] for k in sorted(kept, reverse=True))]:
        if os.path.exists(path):
            with open(path) as f:
                results = json.load(f)
            out.append((results.get("conditions", {}), results["runs"]))
    return out


def first_with(tables, method, cell):
    """The conditions and runs of the first table where ``method`` and CE share a seed in ``cell``
    (a row pairs runs of one budget), or ``({}, [])``."""
    return next(((conditions, runs) for conditions, runs in tables
                 if set(by_seed(runs, method, cell=cell)) & set(by_seed(runs, "ce", cell=cell))), ({}, []))


def steps_text(conditions, method):
    """The steps per run of ``method``'s row: the budget's, or the row's own where it trains more
    (the self-training row's student), with the budget's as its teacher's."""
    budget = conditions.get("settings", {}).get("steps")
    row = conditions.get("row_settings", {}).get(method, {}).get("steps", budget)
    if not budget:
        return ""
    return f"{budget:,}" if row == budget else f"{row:,} (teacher {budget:,})"


def test_accuracy(row):
    return row["test_accuracy"]


def by_seed(rows, method, value=test_accuracy, **match):
    """``{seed: value(row)}`` (the test accuracy by default) of one method's rows that match every
    ``key=value``."""
    return {r["seed"]: value(r) for r in rows
            if r["method"] == method and all(r.get(k) == v for k, v in match.items())}


def paired_row(label, target, target_text, ours, ce, budget):
    """One Markdown row: ours and CE over the seeds both have, the paired wins, the gap to ``target``;
    ``budget``: the text of the steps (or time) per run."""
    seeds = sorted(set(ours) & set(ce))
    if not seeds:
        return f"| {label} | {target_text} | | not run yet | | | | |"
    mean, _, n = stats([ours[s] for s in seeds])
    wins = sum(ours[s] > ce[s] for s in seeds)
    return (f"| {label} | {target_text} | {budget} | {cell_text([ours[s] for s in seeds])} | {mean - target:+.2f} | "
            f"{cell_text([ce[s] for s in seeds])} | {wins} of {n} | {','.join(str(s) for s in seeds)} |")


def cell_row(tables, table, cell, target, method="scl_amp_recipe", suffix=""):
    """A reproduced cell's row: the recommended recipe (or ``method``) against CE, from the first of
    ``tables`` (:func:`_tables`) that pairs the method with CE in the cell."""
    conditions, runs = first_with(tables, method, cell)
    return paired_row(f"{DATASETS[table]}, {cell[:-4]} / class{suffix}", target, f"{target:.1f}",
                      by_seed(runs, method, cell=cell), by_seed(runs, "ce", cell=cell),
                      steps_text(conditions, method))


def demo_row(path, tag):
    """The demo's row from bench/small_data.py lines of ``tag``: SCL-AMP (the demo's settings) against CE."""
    rows = [r for r in bench_lines.read(path, "accuracy") if r.get("tag") == tag]
    epochs = ", ".join(sorted({f"{r['epochs']} epochs" for r in rows if "epochs" in r}))
    return paired_row("demo (`configs/demo.cfg`)", DEMO_TARGET, f"{DEMO_TARGET:.1f} in {DEMO_SECONDS:.0f} s",
                      by_seed(rows, "scl_amp"), by_seed(rows, "ce"), epochs)


def targets_table(results, demo_lines, demo_tag):
    """The Markdown table's lines."""
    lines = ["| cell | target % | steps per run | recommended recipe % | − target | CE % (same seeds) | recipe > CE "
             "| seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for table, cell, target in TARGETS:
        tables = tables_of(results, table)
        lines.append(cell_row(tables, table, cell, target))
        if first_with(tables, SELF_TRAINING, cell)[1]:  # where the cell has an unlabeled pool and the row was run
            lines.append(cell_row(tables, table, cell, target, SELF_TRAINING,
                                  ", + self-training on the unlabeled maps"))
    if os.path.exists(demo_lines):
        lines.append(demo_row(demo_lines, demo_tag))
    return lines


START, END = "<!-- targets-start -->", "<!-- targets-end -->"


def with_block(path, text, lines, start=START, end=END):
    """``text`` (the file ``path``'s) with the lines between its ``start`` and ``end`` markers (the
    targets block's by default) replaced by ``lines``. An error unless it has each marker exactly
    once, start before end, so that a renamed or stray marker is never skipped or overwritten
    silently. Line endings are kept as they are."""
    starts, ends = text.count(start), text.count(end)
    if starts != 1 or ends != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"{path}: {starts} {start} and {ends} {end} markers; expected one of each, "
                         "start first.")
    newline = "\r\n" if "\r\n" in text else "\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + newline + "".join(line + newline for line in lines) + end + tail


def update_blocks(paths, lines, start=START, end=END):
    """Rewrites the block between ``start`` and ``end`` (the targets block by default) of every file,
    after checking them all (a bad file changes none); each file is read once and replaced atomically."""
    texts = {}
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            old = f.read()
        texts[path] = old, with_block(path, old, lines, start, end)
    for path, (old, new) in texts.items():
        if new != old:
            def write(tmp, new=new):
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    f.write(new)
            atomic_write(path, write)
        print(f"{path}: {'updated' if new != old else 'unchanged'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="a reproduce --output folder")
    parser.add_argument("--demo_lines", default="bench/results/demo_recipe_synthetic_wafers.jsonl")
    parser.add_argument("--demo_tag", default="demo_fused_20ep")
    parser.add_argument("--update", nargs="+", metavar="FILE",
                        help="rewrite the targets block of these files instead of printing the table")
    args = parser.parse_args(argv)
    lines = targets_table(args.results, args.demo_lines, args.demo_tag)
    if args.update:
        update_blocks(args.update, lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
