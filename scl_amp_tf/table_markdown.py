"""The markdown of a reproduced table (:mod:`scl_amp_tf.reproduce`): our mean +- std over seeds
beside the paper's figure (:mod:`scl_amp_tf.tables`), with the conditions the numbers were made under.

Spread is the sample standard deviation over seeds (n - 1 in the denominator; 0 for one seed);
"SCL-AMP - CE" is the mean and spread of the per-seed differences (same split and seed).
"""
from __future__ import annotations

import numpy as np

from scl_amp_tf.tables import (FEW_SHOT_KS, METHOD_NAMES, PAPER_TABLE_V, PAPER_TABLE_V_CLASSES,
                               PAPER_TABLE_V_GROUPS, ROWS, SCL_ROWS, TABLES)


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


def _made_text(runs, conditions):
    """The machines, dates and code commits of the runs (recorded by each run when it finished, and
    by each session that trained it), and where and when this table was written; runs from before
    those records are counted as such, and runs trained on more than one machine or commit (resumed
    elsewhere) or partly where no record says are named: a seeded run repeats exactly on one
    machine only."""
    made = [r.get("made") for r in runs]
    known = [m for m in made if m]
    written = f"table written on {conditions['machine']}, {conditions['date']}"
    if not known:
        return f"* Hardware and date: {written}; the runs do not record theirs (made before runs recorded them)."
    sessions = [s for r in runs for s in r.get("training_sessions") or []]
    machines = {m["machine"] for m in known} | {s["machine"] for s in sessions if s.get("machine")}
    dates = sorted({m["date"] for m in known} | {s["date"] for s in sessions if s.get("date")})
    text = (f"* Hardware of the runs: {'; '.join(sorted(machines))}; dates of the runs: "
            + (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"))
    if len(known) < len(made):
        text += f" ({len(made) - len(known)} of the {len(made)} runs were made before runs recorded these)"
    commits = sorted({m["commit"] for m in [*known, *sessions] if m.get("commit")})
    if commits:
        text += f"; code of the runs: {', '.join(commits)}"
    mixed = [r for r in runs
             if len({(s.get("machine"), s.get("commit")) for s in r.get("training_sessions") or []}) > 1]
    if mixed:
        text += (f"; {len(mixed)} run(s) were trained on more than one machine or code, or partly where no record "
                 f"says (resumed; `training_sessions` in their metrics.json): {', '.join(_run_name(r) for r in mixed)}")
    return text + f"; {written}."


def _run_name(run):
    return f"{run['cell']} {run['method']} seed {run['seed']}"


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
                          for m in conditions["methods"] if _by(runs, method=m)) + ".",
              *_teacher_note(runs),
              f"* Data: {datasets}."
              + (" **This MixedWM38 copy is partial: 33,815 of the 38,015 maps (89 %)**; every figure "
                 "above uses it." if partial else ""),
              _made_text(runs, conditions),
              ]
    if conditions.get("command"):
        lines.append(f"* Command: `{conditions['command']}`")
    if conditions["budget"] != "paper":
        lines += ["", "## Why these numbers differ from the paper", "",
                  "The paper trains ResNet-50, almost surely from ImageNet weights, at full resolution for "
                  "100 epochs on a GPU. These runs start from random weights (ImageNet weights cannot be "
                  "downloaded on the machine that made them), use a smaller backbone, a lower resolution "
                  "and some thousands of optimizer steps, so that every run finishes on a 2-core CPU. "
                  "The comparison that holds is the one inside this table: every method under the same "
                  "budget, splits and seeds. `--budget=paper` runs Table I's settings."]
    return "\n".join(lines) + "\n"
