"""Reproducing the paper's Tables II-VI: the library behind ``python -m scl_amp_tf.reproduce``
(whose docstring describes the tables, the rows and the budgets).

:func:`run_config` gives the ``TrainConfig`` of one run of one cell (budget, split, row, overrides);
:func:`run_table` trains every run not finished yet, each in its own model directory (so a
reproduction resumes), then writes ``table_N.md`` and ``table_N.json``; :func:`few_shot` adds
Table IV's episodes on the classes a run never saw.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from scl_amp_tf import provenance
from scl_amp_tf.tables import BUDGETS, FEW_SHOT_KS, ROWS, TABLES


def run_config(cell, row, seed, budget, overrides, options):
    """The TrainConfig of one run of one cell (its model dir under ``options['runs_dir']``).

    Settings, later ones winning: the budget's, the cell's split, the row's (:data:`ROWS`), the
    budget's step count times the row's ``steps_factor`` (``--set=epochs=N`` without ``steps``
    turns it off), ``--set``.
    """
    from scl_amp_tf.train_config import TrainConfig

    kind = cell.dataset
    settings = {**BUDGETS[budget][kind], **cell.split, **ROWS[row].settings}
    steps = row_steps(row, budget, overrides)
    if steps is not None:
        settings["steps"] = steps
    spec = options["neu"] if kind == "neu" else options["mixed_wm38"]
    manual_dir = options["neu_manual_dir"] if kind == "neu" else options["wm38_manual_dir"]
    settings.update(dataset=spec, manual_dir=manual_dir, data_dir=options["data_dir"],
                    synthetic_per_class=options["synthetic_per_class"])
    settings.update(overrides)
    tag = budget_tag(budget) + (
        "-" + hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8] if overrides else "")
    model_dir = os.path.join(options["runs_dir"], f"table_{options['table']}", tag, cell.key, f"{row}_seed{seed}")
    if ROWS[row].teacher is not None:  # self-training: the teacher is the same cell and seed's run of its row
        settings["pseudo_labels_from"] = run_config(cell, ROWS[row].teacher, seed, budget, overrides,
                                                    options).model_dir
    return TrainConfig(model_dir=model_dir, seed=seed, method=ROWS[row].method, verbose=0, **settings)


def budget_tag(budget):
    """The folder name of a budget's runs: its name and, under a step budget, its steps (``cpu-12800steps``),
    so that runs made before the budget moved are never taken for its runs."""
    return budget + (f"-{BUDGETS[budget]['steps']}steps" if BUDGETS[budget]["steps"] else "")


def check_steps(config, metrics):
    """A finished run kept for a row made the row's steps, or an error. ``check_model_dir`` lets
    steps differ (a run may be resumed for more), so it would keep, say, a 3,200-step student as a
    row that trains 6,400. A run trains whole epochs: at least ``config.steps``, less than one
    epoch more. Runs that recorded no steps are not checked. (An unfinished run is resumed to the
    row's steps, as ``--steps`` allows; its rate schedule then follows the new step count from
    the checkpoint on.)"""
    made, epochs = metrics.get("steps"), metrics.get("epochs")
    if config.steps is None or not made or not epochs or config.steps <= made < config.steps + made // epochs:
        return
    raise ValueError(f"{config.model_dir} is finished with {made} steps, but this row trains {config.steps}: "
                     "move that run away (or delete it) to train the row anew.")


def row_steps(row, budget, overrides):
    """The steps a row's runs train: the budget's times the row's ``steps_factor``, or ``--set
    steps``; None when the budget counts epochs or ``--set`` gives epochs without steps."""
    if "steps" in overrides:
        return overrides["steps"]
    if BUDGETS[budget]["steps"] is None or "epochs" in overrides:
        return None
    return BUDGETS[budget]["steps"] * ROWS[row].steps_factor


def few_shot(config, episodes):
    """Table IV on a run trained on the base classes: few-shot accuracy on the unseen classes and
    open-set rejection of an unseen class (AUROC, and the rates at the ``auto`` threshold)."""
    import keras

    from scl_amp_tf import evaluation, inference, open_set, run_folder

    settings, train_data, _, data = run_folder.load_run(config.model_dir, data_dir=config.data_dir,
                                                        manual_dir=config.manual_dir, every_class=True)
    base = [n.strip() for n in config.classes.split(",")]
    novel_ids = [i for i, n in enumerate(data.class_names) if n not in base]
    novel = np.isin(data.labels, novel_ids)
    tta = run_folder.tta_of(settings)
    encoder = keras.models.load_model(os.path.join(config.model_dir, run_folder.ENCODER))
    representations = {"backbone": inference.features_of(encoder)}
    if config.method == "scl_amp":
        representations["embedding"] = encoder
    out = {"novel_classes": [data.class_names[i] for i in novel_ids], "episodes": episodes, "representations": {}}
    for name, model in representations.items():
        z = inference.embed(model, data.images[novel], tta=tta)
        threshold = open_set.calibrate_threshold(inference.embed(model, train_data.images, tta=tta),
                                                   train_data.labels)
        entry = {"threshold": threshold}
        for k in FEW_SHOT_KS:
            entry[f"accuracy_k{k}"] = evaluation.few_shot_accuracies(z, data.labels[novel], k, episodes,
                                                                     config.seed).tolist()
            rejection = open_set.open_set_auroc(z, data.labels[novel], k, max(1, episodes // 10), config.seed,
                                                  threshold=threshold)
            entry[f"open_set_k{k}"] = {key: value.tolist() for key, value in rejection.items()}
        out["representations"][name] = entry
    return out


def run_table(table, seeds, budget, output, methods=tuple(ROWS), cells=None, overrides=None,
              episodes=100, report_only=False, log=print, command=None, **data_options):
    """Runs (or skips, when finished) every run of the table, then writes table_N.md and .json.

    ``report_only``: trains nothing; the table is written from the runs finished so far.
    ``command``: the command line that trains the table, recorded in its conditions.

    ``data_options``: neu, mixed_wm38, neu_manual_dir, wm38_manual_dir, data_dir, synthetic_per_class.
    Returns the path of the markdown file.
    """
    import keras

    from scl_amp_tf import training
    from scl_amp_tf.files import write_json
    from scl_amp_tf.train_config import check_model_dir

    if table not in TABLES:
        raise ValueError(f"--table={table}: one of {', '.join(map(str, TABLES))}.")
    if budget not in BUDGETS:
        raise ValueError(f"--budget={budget!r}: one of {', '.join(BUDGETS)}.")
    unknown = [m for m in methods if m not in ROWS]
    if unknown or not methods:
        raise ValueError(f"--methods={','.join(methods)}: use some of {', '.join(ROWS)}.")
    if not seeds:
        raise ValueError("--seeds: give one seed at least.")
    overrides = dict(overrides or {})
    title, _, all_cells = TABLES[table]
    chosen = [c for c in all_cells if cells is None or c.key in cells]
    if cells is not None and len(chosen) != len(set(cells)):
        raise ValueError(f"--cells={','.join(cells)}: table {table} has the cells "
                         f"{', '.join(c.key for c in all_cells)}.")
    options = {"neu": "neu", "mixed_wm38": "mixed_wm38", "neu_manual_dir": None, "wm38_manual_dir": None,
               "data_dir": None, "synthetic_per_class": 100, **data_options,
               "runs_dir": os.path.join(output, "runs"), "table": table}
    os.makedirs(output, exist_ok=True)

    def finished(cell, method, seed):
        """The run's config and metrics once it is finished (trained now unless it was), or None
        for the metrics when ``report_only`` leaves it out. A self-training row's teacher is
        finished first, and a run finished earlier is kept only with this row's settings and steps
        (the teacher's too)."""
        config = run_config(cell, method, seed, budget, overrides, options)
        config.validate()
        metrics_path = os.path.join(config.model_dir, "metrics.json")
        if os.path.exists(metrics_path):
            check_model_dir(config)  # finished with these settings, or an error
            with open(metrics_path) as f:
                metrics = json.load(f)
            check_steps(config, metrics)
            log(f"table {table} {cell.key} {method} seed {seed}: finished earlier, kept")
            return config, metrics
        if report_only:
            log(f"table {table} {cell.key} {method} seed {seed}: not finished, left out")
            return config, None
        if ROWS[method].teacher is not None and finished(cell, ROWS[method].teacher, seed)[1] is None:
            return config, None
        log(f"table {table} {cell.key} {method} seed {seed}: training ({config.backbone}, "
            f"{config.image_size} px, " + (f"{config.steps} steps" if config.steps else
                                           f"{config.epochs} epochs") + f") in {config.model_dir}")
        start = time.time()
        training.train_and_evaluate(config)
        keras.backend.clear_session()
        log(f"  done in {time.time() - start:.0f} s")
        with open(metrics_path) as f:
            return config, json.load(f)

    runs = []
    for cell in chosen:
        for seed in seeds:
            for method in methods:
                if not ROWS[method].applies_to(cell):
                    log(f"table {table} {cell.key} {method}: no row here (every image beside the training "
                        "images is a test image: no unlabeled pool)")
                    continue
                config, metrics = finished(cell, method, seed)
                if metrics is None:
                    continue
                # the epochs the run made (a step budget sets them from the training set's size)
                run = {"cell": cell.key, "method": method, "seed": seed,
                       "epochs": metrics.get("epochs", config.epochs),
                       "steps": metrics.get("steps"),
                       "test_accuracy": metrics["test_accuracy"], "num_train": metrics["num_train"],
                       "num_test": metrics["num_test"], "per_class_accuracy": metrics["per_class_accuracy"],
                       "class_names": metrics["class_names"],
                       "reference_db_accuracy_on_features": metrics.get("reference_db_accuracy_on_features"),
                       "dataset_description": metrics.get("dataset_description"),
                       "train_seconds": metrics.get("train_seconds"), "model_dir": config.model_dir,
                       "made": metrics.get("made"),  # the machine and date of the run (None before recorded)
                       # every process that trained it (a resumed run's, perhaps on other machines)
                       "training_sessions": metrics.get("training_sessions"),
                       # a student's teacher, as it trained: this table's run, or one made elsewhere
                       "teacher": (metrics.get("pseudo_labels") or {}).get("teacher")}
                if ROWS[method].teacher is not None and run["teacher"]:
                    own = run_config(cell, ROWS[method].teacher, seed, budget, overrides, options).model_dir
                    run["teacher_elsewhere"] = os.path.abspath(run["teacher"]) != os.path.abspath(own)
                if table == 4:
                    path = os.path.join(config.model_dir, "few_shot.json")
                    if not os.path.exists(path):
                        write_json(path, few_shot(config, episodes))
                    with open(path) as f:
                        run["few_shot"] = json.load(f)
                runs.append(run)
    if not runs:
        raise ValueError(f"Table {table}: no finished run under {options['runs_dir']} to report.")
    settings = {**BUDGETS[budget][chosen[0].dataset], "steps": BUDGETS[budget]["steps"], **overrides}

    def row_settings(row):
        """The settings a row adds to the budget's, as trained: --set wins over the row's own, and
        a row of other steps than the budget's shows them."""
        added = {k: overrides.get(k, v) for k, v in ROWS[row].settings.items()}
        steps = row_steps(row, budget, overrides)
        return added | ({"steps": steps} if ROWS[row].steps_factor != 1 and steps else {})

    conditions = {
        "table": table, "title": title, "budget": budget, "budget_description": BUDGETS[budget]["description"],
        "overrides": overrides, "settings": settings, "seeds": list(seeds), "methods": list(methods),
        "row_settings": {m: row_settings(m) for m in methods},
        **provenance.made(),  # where and when this table was written
        "dataset": sorted({r["dataset_description"] or "" for r in runs}),
        "command": command,  # the command that trains the table (given by the command line)
    }
    write_json(os.path.join(output, f"table_{table}.json"), {"conditions": conditions, "runs": runs})
    from scl_amp_tf import table_markdown

    markdown = table_markdown.render(table, chosen, runs, conditions)
    from scl_amp_tf.files import atomic_write

    path = os.path.join(output, f"table_{table}.md")
    atomic_write(path, lambda tmp: open(tmp, "w").write(markdown))
    return path
