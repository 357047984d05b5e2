"""Benchmark: self-training with pseudo-labels on a cell of the paper's tables.

For each seed, the cell's CE and recommended-recipe runs exactly as ``reproduce`` trains them
(into ``--work_dir``; finished runs there are read, not retrained), then, for each ratio, a
student: the recipe again on the same split, plus the pool images (``--unlabeled_data=rest``:
neither training nor test images) that the recipe run, as teacher, labels with the largest margin
(``--pseudo_labels_from``, ``--pseudo_label_ratio``; :mod:`scl_amp_tf.pseudo_labels`). The test
images are never seen. Lines appended to ``--output`` as each run ends:

    BENCH {"figure": "accuracy", "row": "ce", "seed": 0, "test_accuracy": ...}
    BENCH {"figure": "accuracy", "row": "scl_amp_recipe", "seed": 0, ...}            # the teacher
    BENCH {"figure": "accuracy", "row": "self_training", "ratio": 4.0, "seed": 0,
           "pseudo_label_precision": ..., "pseudo_labels": ..., "test_accuracy": ...}

Resumable: lines already in ``--output`` are not made again, and an interrupted run resumes
from its checkpoint in ``--work_dir``.

    python bench/self_training.py --table=6 --cell=20shot --seeds=0,1,2 --ratios=4 \\
        --wm38_manual_dir=../shared/data/mixedwm38 --output=bench/results/self_training_wm38_20shot.jsonl

``--report`` trains nothing: it prints BENCHMARKS.md's table of the lines in ``--output`` (one
row per seed that has CE, teacher and student, then their mean and sample standard deviation).

``--rounds=R``: iterated self-training (as Noisy Student iterates, ``../shared/ANCHORS.md``): the
student of round r teaches round r + 1's student, on the same split and pool with the same
ratio. Lines of round 2 on hold ``"round": 2``; a line without ``round`` is round 1. A round
needs the previous round's run folder in ``--work_dir`` (its line alone does not teach).
``--student_steps=N``: students train N steps instead of the teacher's (they fit several times
as many images); their lines hold ``"student_steps": N``. ``reproduce``'s self-training row
trains its student twice the teacher's steps (``--student_steps=25600`` at the ``cpu`` budget).
``--report`` takes both to pick its student column. Lines hold ``budget_steps``, the budget's
steps (a line without it was made at 3,200), so a moved budget makes its runs anew; ``--report``
shows the lines of ``--budget``'s steps, or of ``--budget_steps`` (``--budget_steps=3200``:
BENCHMARKS.md's tables, made before the budget moved to 12,800).

``--validation_fraction=f``: whether to self-train, decided without the test set. Teacher, student
and CE hold out the same stratified share f of the labelled images (``--validation_fraction`` of
training: the network never fits them; the same seed carves the same images in every run, and
they are not in the pool). Each line then holds ``validation_accuracy``, the accuracy on those
images after the last step, and ``--report`` shows which run the rule "self-train when the
student's validation accuracy is above the teacher's" picks, beside the test accuracies that the
rule must not see. Write such lines to their own ``--output``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

import bench_lines


ROWS = ("ce", "scl_amp_recipe", "self_training")  # CE, the teacher, the student
# A line without these fields was made without the option (bench_lines.matches); the lines written
# before they recorded the budget's steps were made at the cpu budget of 3,200 steps.
DEFAULTS = {"validation_fraction": 0.0, "round": 1, "student_steps": None, "budget_steps": 3200}


def student_key(ratio, round_=1, student_steps=None):
    """The fields that tell one student's line from another's: its ratio, and its round and step
    count where they are not the defaults (so the lines written before these options match)."""
    return {"ratio": ratio, **({"round": round_} if round_ > 1 else {}),
            **({"student_steps": student_steps} if student_steps else {})}


def report(records, ratio, validation_fraction=0.0, round_=1, student_steps=None,
           budget_steps=DEFAULTS["budget_steps"], budget=None):
    """The markdown table of BENCHMARKS.md: per seed CE, teacher, student (at ``ratio``, of round
    ``round_``, trained ``student_steps`` steps or the teacher's; of the budget ``budget``, any if
    None, of ``budget_steps`` steps, None for a budget of epochs), the student's gain over the
    teacher (the recipe run, whatever the round), the pseudo-label count and precision; then mean ±
    sample std over those seeds (:func:`scl_amp_tf.table_markdown.cell_text`, as the reproduced
    tables show them)."""
    from scl_amp_tf.table_markdown import cell_text, stats

    split = {"figure": "accuracy", "budget_steps": budget_steps, **({"budget": budget} if budget else {}),
             **({"validation_fraction": validation_fraction} if validation_fraction else {})}
    student = {**split, **student_key(ratio, round_, student_steps)}
    by_seed = {}
    for r in records:
        if bench_lines.matches(r, student if r.get("row") == "self_training" else split, DEFAULTS):
            by_seed.setdefault(r["seed"], {})[r["row"]] = r
    rows = {seed: runs for seed, runs in sorted(by_seed.items()) if set(ROWS) <= set(runs)}
    if not rows:
        return "no seed has its CE, teacher and student lines yet"
    pool = next(iter(rows.values()))["self_training"]["pool"]
    lines = [f"| seed | CE | teacher (recommended recipe) | student (+ self-training) | student − teacher | "
             f"pseudo-labels (of {pool:,}) | their precision |", "| --- | --- | --- | --- | --- | --- | --- |"]
    ce, teacher, student = ([bench_lines.exact_accuracy(runs[row]) for runs in rows.values()] for row in ROWS)
    gains = np.subtract(student, teacher)
    for k, (seed, runs) in enumerate(rows.items()):
        lines.append(f"| {seed} | {100 * ce[k]:.2f} | {100 * teacher[k]:.2f} | **{100 * student[k]:.2f}** | "
                     f"{100 * gains[k]:+.2f} | {runs['self_training']['pseudo_labels']:,} | "
                     f"{100 * runs['self_training']['pseudo_label_precision']:.1f} % |")
    if len(rows) > 1:
        gain, gain_std, _ = stats(gains)
        lines.append(f"| mean ± sample std (seeds {', '.join(str(s) for s in rows)}) | {cell_text(ce)} | "
                     f"{cell_text(teacher)} | **{cell_text(student)}** | {gain:+.2f} ± {gain_std:.2f} | | |")
    if validation_fraction:
        lines += _validation_rule(rows)
    return "\n".join(lines)


def _validation_rule(rows):
    """Lines under the table: per seed, the teacher's and the student's validation accuracy, the run
    that "self-train when the student's validation accuracy is above the teacher's" picks, and that
    run's test accuracy (the rule never sees it)."""
    from scl_amp_tf.table_markdown import cell_text

    lines = ["", "| seed | teacher, validation | student, validation | the rule picks | its test accuracy |",
             "| --- | --- | --- | --- | --- |"]
    picked = []
    for seed, runs in rows.items():
        teacher, student = runs["scl_amp_recipe"], runs["self_training"]
        chosen = student if student["validation_accuracy"] > teacher["validation_accuracy"] else teacher
        picked.append(bench_lines.exact_accuracy(chosen))
        lines.append(f"| {seed} | {100 * teacher['validation_accuracy']:.2f} ({teacher['num_validation']} images) | "
                     f"{100 * student['validation_accuracy']:.2f} | "
                     f"{'student' if chosen is student else 'teacher'} | {100 * picked[-1]:.2f} |")
    lines.append(f"| mean ± sample std | | | | {cell_text(picked)} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=int, default=6)
    parser.add_argument("--cell", default="20shot")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratios", default="4")
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--neu_manual_dir", default=None)
    parser.add_argument("--wm38_manual_dir", default=None)
    parser.add_argument("--work_dir", default="/tmp/self_training")
    parser.add_argument("--output", required=True)
    parser.add_argument("--rounds", type=int, default=1,
                        help="Rounds of self-training: the student of round r teaches round r + 1's.")
    parser.add_argument("--student_steps", type=int, default=None,
                        help="Steps of every student (default: the teacher's, the budget's).")
    parser.add_argument("--validation_fraction", type=float, default=0.0,
                        help="Hold out this share of the labelled images in every run and record the accuracy "
                             "on them (the rule's signal); 0: none.")
    parser.add_argument("--report", action="store_true", help="Print the table of --output's lines; train nothing.")
    parser.add_argument("--budget_steps", type=int, default=None,
                        help="With --report: the lines of a budget of this many steps (default: --budget's; "
                             "3200 for the lines made before the cpu budget moved to 12800).")
    args = parser.parse_args()

    from scl_amp_tf.tables import BUDGETS, TABLES

    budget_steps = BUDGETS[args.budget]["steps"]
    if args.report:
        for ratio in [float(r) for r in args.ratios.split(",")]:
            print(report(bench_lines.read(args.output), ratio, args.validation_fraction, args.rounds,
                         args.student_steps, args.budget_steps or budget_steps, args.budget))
        return
    if args.budget_steps is not None and args.budget_steps != budget_steps:
        parser.error(f"--budget_steps={args.budget_steps} reads lines only (--report): --budget={args.budget} "
                     f"trains {budget_steps} steps.")

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log before TF loads)
    import keras

    from scl_amp_tf import reproducing
    from scl_amp_tf.training import train_and_evaluate

    cell = next((c for c in TABLES[args.table][2] if c.key == args.cell), None)
    if cell is None:
        parser.error(f"--cell={args.cell}: table {args.table} has {', '.join(c.key for c in TABLES[args.table][2])}")
    data_options = {"neu_manual_dir": args.neu_manual_dir, "wm38_manual_dir": args.wm38_manual_dir}
    options = {"neu": "neu", "mixed_wm38": "mixed_wm38", "data_dir": None, "synthetic_per_class": 100,
               **data_options, "runs_dir": os.path.join(args.work_dir, "runs"), "table": args.table}
    vf = args.validation_fraction
    overrides = {"validation_fraction": vf} if vf else {}
    # the budget's steps are part of a line's key: a budget that moves makes its runs anew
    base = {"table": args.table, "cell": args.cell, "budget": args.budget, "budget_steps": budget_steps,
            **overrides}

    def have(key):
        return bench_lines.written(args.output, key, DEFAULTS)

    def line(key, config, metrics, seconds=None):
        return {**key, "test_accuracy": round(metrics["test_accuracy"], 4), "num_test": metrics["num_test"],
                "fit_images": metrics.get("fit_images"), "steps": metrics.get("steps"),
                # None when the run was resumed from a checkpoint that does not record its earlier sessions
                "train_seconds": None if metrics.get("train_seconds") is None else round(metrics["train_seconds"], 1),
                "model_dir": config.model_dir,
                **({"validation_accuracy": round(metrics["validation"]["history"][-1], 4),
                    "num_validation": metrics["validation"]["num_images"]} if vf else {}),
                **({"seconds": round(seconds, 1)} if seconds is not None else {}), **bench_lines.provenance()}

    ratios = [float(r) for r in args.ratios.split(",")]
    for seed in [int(s) for s in args.seeds.split(",")]:
        wanted = [{**base, "figure": "accuracy", "row": row, "seed": seed} for row in ("ce", "scl_amp_recipe")]
        students = {(r, n): {**base, "figure": "accuracy", "row": "self_training", "seed": seed,
                             **student_key(r, n, args.student_steps)}
                    for r in ratios for n in range(1, args.rounds + 1)}
        wanted += list(students.values())
        if all(have(key) for key in wanted):
            continue  # all its lines are written: its runs (maybe on another machine's disk) are not needed
        # CE and the teacher: reproduce's own runs of this cell (trained here unless finished)
        reproducing.run_table(args.table, [seed], args.budget, args.work_dir, methods=("ce", "scl_amp_recipe"),
                              cells=[args.cell], overrides=overrides, **data_options)
        keras.backend.clear_session()
        configs = {row: reproducing.run_config(cell, row, seed, args.budget, overrides, options)
                   for row in ("ce", "scl_amp_recipe")}
        for row, config in configs.items():
            key = {**base, "figure": "accuracy", "row": row, "seed": seed}
            if not have(key):
                with open(os.path.join(config.model_dir, "metrics.json")) as f:
                    bench_lines.emit(line(key, config, json.load(f)), args.output)
        for ratio in ratios:
            teacher = configs["scl_amp_recipe"]
            for round_ in range(1, args.rounds + 1):
                key = students[ratio, round_]
                folder = (f"ratio{ratio:g}_seed{seed}" + (f"_round{round_}" if round_ > 1 else "")
                          + (f"_steps{args.student_steps}" if args.student_steps else "")
                          + (f"_validation{vf:g}" if vf else ""))
                student = dataclasses.replace(
                    teacher, model_dir=os.path.join(args.work_dir, "runs", "self_training",
                                                    reproducing.budget_tag(args.budget), args.cell, folder),
                    unlabeled_data="rest", pseudo_labels_from=teacher.model_dir, pseudo_label_ratio=ratio,
                    **({"steps": args.student_steps} if args.student_steps else {}))
                teacher = student  # the next round's teacher
                if have(key):
                    continue
                start = time.time()
                metrics = train_and_evaluate(student)
                keras.backend.clear_session()
                record = metrics["pseudo_labels"]
                bench_lines.emit({**line(key, student, metrics, time.time() - start),
                                  "pseudo_labels": record["count"], "pool": record["pool"],
                                  "pseudo_label_precision": round(record["precision"], 4),
                                  "smallest_margin": round(record["smallest_margin"], 4)}, args.output)


if __name__ == "__main__":
    main()
