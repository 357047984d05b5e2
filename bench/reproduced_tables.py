"""The paper's Tables II-VI as reproduced so far, one Markdown row per cell: CE, the paper's recipe
and the recommended recipe side by side, with the paper's figures.

Reads what ``python -m scl_amp_tf.reproduce`` wrote (``results/table_N.json`` at the current
budget; a cell not paired there yet comes from the table kept from an earlier budget,
``results/table_N_<steps>steps.json``, the most steps first, as ``bench/targets.py`` reads them),
so the README's summary is only as complete as the runs committed, and each row says its steps
per run and its seeds. Per seed, the figure is the test accuracy; for Table V the average of the
38 class accuracies (the paper's "average" row); for Table IV the accuracy on the unseen classes
with k references per class, averaged over the seed's episodes, on each row's backbone features
(the representation that carries to classes never trained on, BENCHMARKS.md). Then mean ± sample
std over the seeds; "recipe > CE" counts the seeds where the recommended recipe beats CE on the
same split.

    python bench/reproduced_tables.py                      # print the table
    python bench/reproduced_tables.py --update README.md   # rewrite its block in the README

``--update`` replaces the lines between ``<!-- reproduced-start -->`` and
``<!-- reproduced-end -->`` (one of each, start first, or an error and no file changes).
"""
import argparse

import numpy as np

import targets
from scl_amp_tf.table_markdown import cell_text, paper_text
from scl_amp_tf.tables import FEW_SHOT_KS, PAPER_TABLE_V_GROUPS, TABLES

NUMERALS = {2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
RECIPE = "scl_amp_recipe"
ROWS = ("ce", "scl_amp", RECIPE)  # the columns, in this order
START, END = "<!-- reproduced-start -->", "<!-- reproduced-end -->"
HEADER = ["| table | cell | steps per run | CE % | SCL-AMP, paper's recipe % | SCL-AMP, recommended recipe % "
          "| recipe > CE | seeds | paper: SCL-AMP / CE % |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


def _class_average(run):
    """Table V's figure: the mean of the per-class accuracies (each class counts once)."""
    return float(np.mean(list(run["per_class_accuracy"].values())))


def _few_shot(k):
    """Table IV's figure for k references per class: the mean over the run's episodes, on its backbone features."""
    return lambda run: float(np.mean(run["few_shot"]["representations"]["backbone"][f"accuracy_k{k}"]))


# The cell labels of the tables with one row per cell, and the figures that are not the test accuracy.
LABELS = {2: "NEU, {} of each class", 3: "NEU, {} images / class",
          5: "MixedWM38, {} of each class (class average)", 6: "MixedWM38, {} maps / class"}
FIGURES = {5: _class_average}


def cell_row(table_number, tables, cell_key, label, figure, paper):
    """One row: each method's mean ± std from the first of ``tables`` that pairs the recipe with CE in
    the cell (its seeds; a method with other seeds names them), the recipe's wins over CE per seed."""
    conditions, runs = targets.first_with(tables, RECIPE, cell_key)
    values = {m: targets.by_seed(runs, m, figure, cell=cell_key) for m in ROWS}
    paired = sorted(set(values[RECIPE]) & set(values["ce"]))
    if not paired:
        return f"| {NUMERALS[table_number]} | {label} | | not run yet | | | | | {paper} |"
    texts = []
    for m in ROWS:
        seeds = paired if m != "scl_amp" else sorted(values[m])
        text = cell_text([values[m][s] for s in seeds]) if seeds else "not run yet"
        if seeds and seeds != paired:
            text += f" (seeds {','.join(map(str, seeds))})"
        texts.append(text)
    wins = sum(values[RECIPE][s] > values["ce"][s] for s in paired)
    return (f"| {NUMERALS[table_number]} | {label} | {targets.steps_text(conditions, RECIPE)} | "
            f"{' | '.join(texts)} | {wins} of {len(paired)} | {','.join(map(str, paired))} | {paper} |")


def summary_table(results):
    """The Markdown table's lines: Tables II, III, IV, V, VI, every cell."""
    lines = list(HEADER)
    for number in sorted(TABLES):
        tables = targets.tables_of(results, number)
        for cell in TABLES[number][2]:
            paper_ce = paper_text(cell.paper.get("ce"))
            if number == 4:  # one row per k, the paper's figure per k
                for k in FEW_SHOT_KS:
                    lines.append(cell_row(number, tables, cell.key, f"NEU, unseen classes, k = {k} (backbone features)",
                                          _few_shot(k), f"{paper_text(cell.paper['scl_amp'][k])} / {paper_ce}"))
                continue
            scl = PAPER_TABLE_V_GROUPS["all"] if number == 5 else cell.paper.get("scl_amp")
            lines.append(cell_row(number, tables, cell.key, LABELS[number].format(cell.label),
                                  FIGURES.get(number, targets.test_accuracy), f"{paper_text(scl)} / {paper_ce}"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="a reproduce --output folder")
    parser.add_argument("--update", nargs="+", metavar="FILE",
                        help="rewrite the reproduced-tables block of these files instead of printing the table")
    args = parser.parse_args(argv)
    lines = summary_table(args.results)
    if args.update:
        targets.update_blocks(args.update, lines, START, END)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
