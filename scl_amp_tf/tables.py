"""The paper's Tables II-VI (section IV) as data, the budgets they are reproduced under, and the
markdown of a reproduced table (:mod:`scl_amp_tf.reproduce`): our mean +- std over seeds beside
the paper's figure, with the conditions the numbers were made under.

Spread is the sample standard deviation over seeds (n - 1 in the denominator; 0 for one seed);
"SCL-AMP - CE" is the mean and spread of the per-seed differences (same split and seed).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from scl_amp_tf import recipes

NEU_BASE_CLASSES = ("In", "Pa", "RS")  # Table IV trains on these, meets the others as k-shot references
FEW_SHOT_KS = (1, 3, 5)


@dataclasses.dataclass(frozen=True)
class Row:
    """One method of a table: the training method and the settings it adds to the budget's."""

    name: str
    method: str  # TrainConfig.method
    settings: dict
    # A row trained by self-training: this row's run of the same cell and seed is the teacher
    # (--pseudo_labels_from) and the cell's pool of images that are neither training nor test
    # images (--unlabeled_data=rest) the images it labels. Only cells with such a pool have it.
    teacher: str | None = None

    def applies_to(self, cell):
        """Whether ``cell`` has this row: a self-training row needs a cell with a held-out test set
        (``test_fraction``), so that the images left beside the k shots are not test images."""
        return self.teacher is None or "test_fraction" in cell.split


# The rows of every cell. CE gets the recipe's choices any method can make (recipes.FITTED, the
# settings fitted to the images, and recipes.SCHEDULE), which make CE the strongest baseline
# measured; the paper's recipe is SCL-AMP with Table I's settings; the recommended recipe adds
# recipes.CURES; self-training adds the recommended recipe's own run as teacher of a student with
# the same settings, where the cell leaves unlabeled images (scl_amp_tf.pseudo_labels).
ROWS = {
    "ce": Row("CE baseline", "ce", {**recipes.FITTED, **recipes.SCHEDULE}),
    "scl_amp": Row("SCL-AMP, paper's recipe", "scl_amp", {}),
    "scl_amp_recipe": Row("SCL-AMP, recommended recipe", "scl_amp",
                          {**recipes.CURES, **recipes.FITTED, **recipes.SCHEDULE}),
    "scl_amp_self_training": Row("SCL-AMP, recommended recipe + self-training", "scl_amp",
                                 {**recipes.CURES, **recipes.FITTED, **recipes.SCHEDULE, "unlabeled_data": "rest"},
                                 teacher="scl_amp_recipe"),
}
METHOD_NAMES = {key: row.name for key, row in ROWS.items()}
SCL_ROWS = tuple(key for key, row in ROWS.items() if row.method == "scl_amp")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of a table: a training split on one dataset, and the paper's figures for it."""

    key: str
    label: str
    dataset: str  # "neu" or "mixed_wm38"
    split: dict
    paper: dict  # method -> accuracy in % (None where the paper gives none)


TABLES = {
    2: ("Table II: NEU, share of each class used for training", "training data", [
        Cell("60pct", "60 %", "neu", {"train_fraction": 0.6}, {"scl_amp": 99.58, "ce": None}),
        Cell("70pct", "70 %", "neu", {"train_fraction": 0.7}, {"scl_amp": 99.81, "ce": None}),
        Cell("80pct", "80 %", "neu", {"train_fraction": 0.8}, {"scl_amp": 100.00, "ce": None}),
    ]),
    3: ("Table III: NEU, k labelled images per class", "images / class", [
        Cell("10shot", "10", "neu", {"shots_per_class": 10}, {"scl_amp": 98.39, "ce": 93.89}),
        Cell("20shot", "20", "neu", {"shots_per_class": 20}, {"scl_amp": 98.83, "ce": 97.72}),
        Cell("50shot", "50", "neu", {"shots_per_class": 50}, {"scl_amp": 99.72, "ce": 99.06}),
    ]),
    4: ("Table IV: NEU few-shot, unseen classes Cr, Sc, PS", "k-shot", [
        Cell("base_In_Pa_RS", "trained on every image of In, Pa, RS", "neu",
             {"train_fraction": 1.0, "classes": ",".join(NEU_BASE_CLASSES)},
             {"scl_amp": {1: 82.16, 3: 84.53, 5: 86.29}, "ce": None}),
    ]),
    5: ("Table V: MixedWM38, 80 % of each class for training", "class", [
        Cell("80pct", "80 %", "mixed_wm38", {"train_fraction": 0.8}, {"scl_amp": None, "ce": None}),
    ]),
    6: ("Table VI: MixedWM38, k maps per class for training (20 % held out for testing)", "maps / class", [
        Cell("20shot", "20", "mixed_wm38", {"shots_per_class": 20, "test_fraction": 0.2},
             {"scl_amp": 92.27, "ce": 55.36}),
        Cell("50shot", "50", "mixed_wm38", {"shots_per_class": 50, "test_fraction": 0.2},
             {"scl_amp": 96.88, "ce": 86.72}),
        Cell("100shot", "100", "mixed_wm38", {"shots_per_class": 100, "test_fraction": 0.2},
             {"scl_amp": 97.83, "ce": 89.73}),
    ]),
}

# Table V, column "Proposed", C1..C38 (the classes of PAPER_TABLE_V_CLASSES, the paper's order).
PAPER_TABLE_V_CLASSES = (
    "Normal", "C", "D", "EL", "ER", "L", "NF", "S", "R",
    "C+EL", "C+ER", "C+L", "C+S", "D+EL", "D+ER", "D+L", "D+S", "EL+L", "EL+S", "ER+L", "ER+S", "L+S",
    "C+EL+L", "C+EL+S", "C+ER+L", "C+ER+S", "C+L+S", "D+EL+L", "D+EL+S", "D+ER+L", "D+ER+S", "D+L+S",
    "EL+L+S", "ER+L+S",
    "C+L+EL+S", "C+L+ER+S", "D+L+EL+S", "D+L+ER+S")
PAPER_TABLE_V = (100.00, 100.00, 99.00, 99.00, 100.00, 100.00, 96.60, 99.00, 96.10,
                 98.00, 100.00, 100.00, 100.00, 98.00, 99.50, 97.50, 99.00, 99.00, 96.50, 98.00, 99.00, 98.50,
                 99.00, 97.80, 99.00, 99.50, 98.00, 98.50, 94.00, 99.00, 99.00, 97.50, 96.00, 95.00,
                 93.50, 98.00, 96.50, 99.50)
PAPER_TABLE_V_GROUPS = {1: 98.86, 2: 98.69, 3: 97.69, 4: 96.88, "all": 98.22}

BUDGETS = {
    "paper": {
        "description": "Table I: ResNet-50 from ImageNet weights, 100 epochs, batch 32, Adam 5e-4, "
                       "tau 0.5, m 0.5, d 128; NEU at 200 px, MixedWM38 at 64 px (a GPU job)",
        "neu": {"backbone": "resnet50", "backbone_weights": "imagenet", "image_size": 200, "epochs": 100},
        "mixed_wm38": {"backbone": "resnet50", "backbone_weights": "imagenet", "image_size": 64, "epochs": 100},
        "steps": None,
    },
    "cpu": {
        "description": f"reduced for a 2-core CPU: the small resnet_tiny backbone from scratch (no ImageNet "
                       f"weights), NEU at 64 px, MixedWM38 at its native 52 px, {recipes.SMALL_DATA['steps']} "
                       f"optimizer steps per run, where the learning curves flatten (epochs = ceil(steps / "
                       f"steps per epoch)), batch 32, Adam 5e-4, tau 0.5, m 0.5, d 128",
        "neu": {"backbone": "resnet_tiny", "backbone_weights": "none", "image_size": 64},
        "mixed_wm38": {"backbone": "resnet_tiny", "backbone_weights": "none", "image_size": 52},
        "steps": recipes.SMALL_DATA["steps"],
    },
}




def stats(values):
    """``(mean, std, n)`` of the non-None values, in percent; std is the sample std (0 for n = 1)."""
    values = np.asarray([v for v in values if v is not None], np.float64) * 100.0
    if len(values) == 0:
        return None, None, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def cell_text(values):
    """``mean ± std`` over seeds; one seed has no spread to show, so its value stands alone."""
    mean, std, n = stats(values)
    return "-" if n == 0 else f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"


def paper_text(value):
    return "-" if value is None else f"{value:.2f}"


def _by(runs, **match):
    return [r for r in runs if all(r[k] == v for k, v in match.items())]


def _paired_differences(runs, cell, method):
    """Per seed, ``method``'s accuracy minus CE's (same split and seed)."""
    ours = {r["seed"]: r["test_accuracy"] for r in _by(runs, cell=cell, method=method)}
    ce = {r["seed"]: r["test_accuracy"] for r in _by(runs, cell=cell, method="ce")}
    return [ours[s] - ce[s] for s in sorted(set(ours) & set(ce))]


def _accuracy_table(cells, runs, column):
    """One row per cell and method (CE, the paper's recipe, the recommended recipe)."""
    methods = [m for m in ROWS if _by(runs, method=m)]
    head = [column, "method", "ours", "paper", "reference DB on backbone features (ours)",
            "− CE, paired (ours)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for cell in cells:
        for m in methods:
            mine = _by(runs, cell=cell.key, method=m)
            if not mine:
                continue
            paper = cell.paper.get(ROWS[m].method)
            features = (cell_text([r["reference_db_accuracy_on_features"] for r in mine])
                        if ROWS[m].method == "scl_amp" else "-")
            diffs = _paired_differences(runs, cell.key, m) if m != "ce" else []
            better = (f"{cell_text(diffs)} ({sum(d > 0 for d in diffs)} of {len(diffs)} seeds better)"
                      if diffs else "-")
            lines.append("| " + " | ".join([
                cell.label, ROWS[m].name, cell_text([r["test_accuracy"] for r in mine]), paper_text(paper),
                features, better, ",".join(str(s) for s in sorted({r["seed"] for r in mine}))]) + " |")
    lines += ["", "\"paper\" beside an SCL-AMP row is the paper's SCL-AMP (its own recipe, Table I)."]
    return lines


def _few_shot_table(cells, runs):
    cell = cells[0]
    columns = [(m, representation, f"{ROWS[m].name}, {text} (ours)")
               for m in SCL_ROWS for representation, text in (("embedding", "embeddings"),
                                                               ("backbone", "backbone features"))]
    columns.append(("ce", "backbone", f"{ROWS['ce'].name}, backbone features (ours)"))
    columns = [c for c in columns if any(c[1] in r["few_shot"]["representations"] for r in _by(runs, method=c[0]))]

    def values(method, representation, key):
        out = []
        for r in _by(runs, method=method):
            entry = r["few_shot"]["representations"].get(representation)
            if entry is not None:
                value = entry
                for part in key:
                    value = value[part]
                out.extend(value)
        return out

    head = ["k-shot"] + [c[2] for c in columns] + ["SCL-AMP (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for k in FEW_SHOT_KS:
        row = [f"k = {k}"] + [cell_text(values(m, rep, [f"accuracy_k{k}"])) for m, rep, _ in columns]
        lines.append("| " + " | ".join(row + [paper_text(cell.paper["scl_amp"][k])]) + " |")
    seeds = sorted({r["seed"] for r in runs})
    episodes = runs[0]["few_shot"]["episodes"] if runs else 0
    novel = ", ".join(runs[0]["few_shot"]["novel_classes"]) if runs else ""
    lines += ["", f"Mean ± std over {episodes} episodes for each of the seeds {','.join(map(str, seeds))} "
                  f"(one trained model per seed and method); unseen classes: {novel}.", "",
              "**Open-set rejection (ours, beyond the paper).** Each unseen class in turn is left out of "
              "the reference database and its images are queries of an unknown defect type; the other "
              "two unseen classes are enrolled with k references. AUROC of the best mean cosine "
              "similarity, known vs unknown queries; and, at the `auto` threshold (5 % quantile of the "
              "training images' leave-one-out similarities), the share of known queries accepted and "
              "of unknown ones rejected.", ""]
    head = ["k-shot", "representation", "AUROC", "known accepted at auto threshold",
            "unknown rejected at auto threshold"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for k in FEW_SHOT_KS:
        for m, rep, name in columns:
            key = [f"open_set_k{k}"]
            lines.append("| " + " | ".join([
                f"k = {k}", name.replace(" (ours)", ""),
                cell_text(values(m, rep, key + ["auroc"])),
                cell_text(values(m, rep, key + ["known_accepted"])),
                cell_text(values(m, rep, key + ["unknown_rejected"]))]) + " |")
    lines.append("")
    lines.append("AUROC is shown in percent.")
    return lines


def _paper_class_index(name):
    """Index of a MixedWM38 class in the paper's C1..C38 (matched by its set of defect types)."""
    parts = frozenset(name.split("+")) if name != "Normal" else frozenset()
    for i, paper_name in enumerate(PAPER_TABLE_V_CLASSES):
        if (frozenset(paper_name.split("+")) if paper_name != "Normal" else frozenset()) == parts:
            return i
    return None


def _group_of(name):
    return 1 if name == "Normal" else name.count("+") + 1


def _per_class_table(runs):
    methods = [m for m in ROWS if _by(runs, method=m)]
    names = list(runs[0]["class_names"]) if runs else []
    paper_index = [_paper_class_index(n) for n in names]
    known = all(i is not None for i in paper_index) and len(names) == 38
    head = ["class"] + [f"{METHOD_NAMES[m]} (ours)" for m in methods] + ["SCL-AMP (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def group_rows(group):
        members = [n for n in names if group == "all" or _group_of(n) == group]
        row = [f"**average, {group}-defect classes**" if group != "all" else "**average, all classes**"]
        for m in methods:  # per seed: the mean over the group's classes; then mean ± std over seeds
            row.append(cell_text([np.mean([r["per_class_accuracy"][n] for n in members])
                                  for r in _by(runs, method=m)]))
        row.append(paper_text(PAPER_TABLE_V_GROUPS[group]) if known else "-")
        return "| " + " | ".join(row) + " |"

    for i, name in enumerate(names):
        label = f"C{paper_index[i] + 1} ({name})" if known else name
        row = [label] + [cell_text([r["per_class_accuracy"][name] for r in _by(runs, method=m)]) for m in methods]
        row.append(paper_text(PAPER_TABLE_V[paper_index[i]]) if known else "-")
        lines.append("| " + " | ".join(row) + " |")
        if i + 1 == len(names) or _group_of(names[i + 1]) != _group_of(name):
            lines.append(group_rows(_group_of(name)))
    lines.append(group_rows("all"))
    lines.append("")
    lines.append("Overall test accuracy (all test images): " + "; ".join(
        f"{METHOD_NAMES[m]} {cell_text([r['test_accuracy'] for r in _by(runs, method=m)])} %" for m in methods)
        + ". The paper's 98.22 % is the average over the 38 classes.")
    return lines


def _teacher_note(runs):
    """A line when some self-training runs learned from a teacher that is not this table's run of
    the same cell and seed (a run with the same settings trained elsewhere, e.g. by a benchmark)."""
    students = [r for r in runs if "teacher_elsewhere" in r]
    elsewhere = [r for r in students if r["teacher_elsewhere"]]
    if not elsewhere:
        return []
    return [f"* {len(elsewhere)} of the {len(students)} self-training runs learned from a teacher trained "
            "outside this table's run folders, with the same settings, cell and seed (its path: "
            "`pseudo_labels.teacher` in the student's metrics.json); seeded runs repeat on one machine only, "
            "so that teacher's test accuracy can differ a little from this table's row."]


def _epochs_text(cells, runs):
    """The epochs the runs made, per cell: a step budget gives every row of a cell the same epochs
    except a row that fits more images (self-training's pool), named beside the cell's figure."""
    parts = []
    for cell in cells:
        epochs = {}  # method -> its epochs ("a/b" if its seeds made different ones)
        for m in ROWS:
            made = sorted({r["epochs"] for r in runs if r["cell"] == cell.key and r["method"] == m})
            if made:
                epochs[m] = "/".join(map(str, made))
        if not epochs:
            continue
        values = list(epochs.values())
        common = max(values, key=values.count)
        others = [f"{ROWS[m].name}: {e}" for m, e in epochs.items() if e != common]
        parts.append(f"{cell.key}: {common}" + (f" ({'; '.join(others)})" if others else ""))
    return ", ".join(parts)


def render(table, cells, runs, conditions):
    """The markdown of ``table_N.md``."""
    title, column, _ = TABLES[table]
    lines = [f"# {title} (reproduced)", "",
             "Accuracy on the test images in %, mean ± std over seeds (sample std; a single seed's "
             "value stands alone). \"(paper)\" is the paper's figure for the same cell.", ""]
    if table == 4:
        lines += _few_shot_table(cells, runs)
    elif table == 5:
        lines += _per_class_table(runs)
    else:
        lines += _accuracy_table(cells, runs, column)
    datasets = "; ".join(conditions["dataset"])
    partial = any("partial" in d for d in conditions["dataset"])
    lines += ["", "## Conditions", "",
              f"* Budget `{conditions['budget']}`: {conditions['budget_description']}."
              + (f" Changed with --set: `{conditions['overrides']}`." if conditions["overrides"] else ""),
              f"* Training settings: `{conditions['settings']}`; epochs per run: " + _epochs_text(cells, runs) + ".",
              f"* Seeds: {','.join(map(str, conditions['seeds']))} (each seed draws the split, the "
              "initialisation and the augmentations); methods and the settings each adds: "
              + "; ".join(f"{ROWS[m].name} (`--method={ROWS[m].method}"
                          + "".join(f" --{k}={v}" for k, v in conditions["row_settings"][m].items()) + "`"
                          + (f" and `--pseudo_labels_from=` the {ROWS[ROWS[m].teacher].name} run of the same cell "
                             "and seed, in the cells that leave unlabeled images" if ROWS[m].teacher else "") + ")"
                          for m in conditions["methods"]) + ".",
              *_teacher_note(runs),
              f"* Data: {datasets}."
              + (" **This MixedWM38 copy is partial: 33,815 of the 38,015 maps (89 %)**; every figure "
                 "above uses it." if partial else ""),
              f"* Hardware: {conditions['hardware']}; date {conditions['date']}.",
              ]
    if conditions.get("command"):
        lines.append(f"* Command: `{conditions['command']}`")
    if conditions["budget"] != "paper":
        lines += ["", "## Why these numbers differ from the paper", "",
                  "The paper trains ResNet-50, almost surely from ImageNet weights, at full resolution for "
                  "100 epochs on a GPU. These runs start from random weights (ImageNet weights cannot be "
                  "downloaded on the machine that made them), use a smaller backbone, a lower resolution "
                  "and a few thousand optimizer steps, so that every run finishes on a 2-core CPU. "
                  "The comparison that holds is the one inside this table: every method under the same "
                  "budget, splits and seeds. `--budget=paper` runs Table I's settings."]
    return "\n".join(lines) + "\n"
