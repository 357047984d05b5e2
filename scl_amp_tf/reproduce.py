"""Command line: regenerate the paper's Tables II-VI (section IV), SCL-AMP against the CE baseline.

    python -m scl_amp_tf.reproduce --table=3 --seeds=0,1,2 --budget=cpu \\
        --neu_manual_dir=/data/NEU-CLS --output=results/
    python -m scl_amp_tf.reproduce --table=6 --seeds=0,1,2 --budget=paper \\
        --wm38_manual_dir=/data/MixedWM38            # a GPU job

Every cell of the table is trained for each seed and method (``--methods``) in its own model
directory under ``OUTPUT/runs/`` and skipped when already finished (an interrupted reproduction
continues where it stopped; an interrupted run resumes from its checkpoint; a finished run made
with other settings is an error, not a silent mix). The methods are the rows of every cell
(:data:`scl_amp_tf.tables.ROWS`): ``ce``, the CE baseline; ``scl_amp``, SCL-AMP with the paper's
recipe; ``scl_amp_recipe``, SCL-AMP with the small-data recipe (:mod:`scl_amp_tf.recipes`). Then
``OUTPUT/table_N.md`` (mean +- std over seeds, the paper's value beside it, the conditions) and
``OUTPUT/table_N.json`` (every run's figures) are written.

Tables (the cells of section IV):
  2  NEU, 60 / 70 / 80 % of each class for training (the rest is the test set).
  3  NEU, 10 / 20 / 50 images per class for training (the rest is the test set).
  4  NEU few-shot: train on every image of Pa, In and RS; then, for k = 1, 3, 5, episodes of k
     references per class of Cr, Sc and PS, every other image of those classes a query.
     Also: open-set rejection of an unseen class (AUROC; ours, beyond the paper).
  5  MixedWM38, 80 % of each class for training: per-class accuracy of the 38 classes and the
     averages of the 1-, 2-, 3- and 4-defect groups.
  6  MixedWM38, 20 / 50 / 100 maps per class for training, tested on a stratified 20 % held out.

Budgets (``--budget``): ``paper`` is Table I (ResNet-50 from ImageNet weights, 100 epochs, NEU at
200 px; a GPU job). ``cpu`` is the reduced setting that finishes
on 2 CPU cores in 5-15 minutes per run: the small ``resnet_tiny`` backbone from scratch, NEU at
64 px, MixedWM38 at its native 52 px, and the step budget of the small-data recipe for every run
(``recipes.SMALL_DATA["steps"]``, where the learning curves of BENCHMARKS.md flatten; epochs =
ceil(steps / steps per epoch)). Any training setting can be changed with
``--set key=value`` (recorded in the conditions and the run paths).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np
from absl import app, flags, logging

from scl_amp_tf.tables import BUDGETS, FEW_SHOT_KS, ROWS, TABLES

flags.DEFINE_enum("table", None, [str(t) for t in TABLES], "Which table of section IV to reproduce.")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds (split, initialisation, augmentation, episodes).")
flags.DEFINE_enum("budget", "cpu", list(BUDGETS), "paper: Table I settings (GPU); cpu: the reduced setting.")
flags.DEFINE_string("output", "results", "Folder of table_N.md / table_N.json; the runs go to OUTPUT/runs/.")
flags.DEFINE_string("methods", ",".join(ROWS), "Methods (rows of every cell) to run: " + ", ".join(
    f"{key} ({row.name})" for key, row in ROWS.items()) + ".")
flags.DEFINE_string("cells", None, "Only these cells (comma-separated keys, e.g. 10shot,20shot); default all.")
flags.DEFINE_multi_string("set", [], "Extra training setting, key=value (repeatable), e.g. --set=epochs=50.")
flags.DEFINE_string("neu", "neu", "Dataset spec for the NEU tables (default the TFDS builder; or folder:/path).")
flags.DEFINE_string("mixed_wm38", "mixed_wm38", "Dataset spec for the MixedWM38 tables.")
flags.DEFINE_string("neu_manual_dir", None, "Folder of the NEU-CLS images (TFDS manual dir).")
flags.DEFINE_string("wm38_manual_dir", None, "Folder of Wafer_Map_Datasets.npz (TFDS manual dir).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default ~/tensorflow_datasets).")
flags.DEFINE_integer("episodes", 100, "Table IV: few-shot episodes per seed and k.")
flags.DEFINE_bool("report_only", False, "Train nothing: write the table from the runs finished so far.")
flags.DEFINE_integer("synthetic_per_class", 100, "Maps per class when a dataset is synthetic_wafers (tests).")

FLAGS = flags.FLAGS


def run_config(cell, row, seed, budget, overrides, options):
    """The TrainConfig of one run of one cell (its model dir under ``options['runs_dir']``).

    Settings, later ones winning: the budget's, the cell's split, the row's (:data:`ROWS`), the
    budget's step count (``--set=epochs=N`` without ``steps`` turns it off), ``--set``.
    """
    from scl_amp_tf.training import TrainConfig

    kind = cell.dataset
    settings = {**BUDGETS[budget][kind], **cell.split, **ROWS[row].settings}
    if BUDGETS[budget]["steps"] is not None and "epochs" not in overrides:
        settings["steps"] = BUDGETS[budget]["steps"]
    spec = options["neu"] if kind == "neu" else options["mixed_wm38"]
    manual_dir = options["neu_manual_dir"] if kind == "neu" else options["wm38_manual_dir"]
    settings.update(dataset=spec, manual_dir=manual_dir, data_dir=options["data_dir"],
                    synthetic_per_class=options["synthetic_per_class"])
    settings.update(overrides)
    tag = budget + (f"-{BUDGETS[budget]['steps']}steps" if BUDGETS[budget]["steps"] else "") + (
        "-" + hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8] if overrides else "")
    model_dir = os.path.join(options["runs_dir"], f"table_{options['table']}", tag, cell.key, f"{row}_seed{seed}")
    return TrainConfig(model_dir=model_dir, seed=seed, method=ROWS[row].method, verbose=0, **settings)


def few_shot(config, episodes):
    """Table IV on a run trained on the base classes: few-shot accuracy on the unseen classes and
    open-set rejection of an unseen class (AUROC, and the rates at the ``auto`` threshold)."""
    import keras

    from scl_amp_tf import data as data_lib
    from scl_amp_tf import evaluation, inference, run_folder

    data = data_lib.load_dataset(config.dataset, config.image_size, data_dir=config.data_dir,
                              manual_dir=config.manual_dir, synthetic_per_class=config.synthetic_per_class,
                              seed=config.seed)
    base = [n.strip() for n in config.classes.split(",")]
    novel_ids = [i for i, n in enumerate(data.class_names) if n not in base]
    novel = np.isin(data.labels, novel_ids)
    settings, train_data, _ = run_folder.load_run(config.model_dir, data_dir=config.data_dir,
                                                  manual_dir=config.manual_dir)
    tta = run_folder.tta_of(settings)
    encoder = keras.models.load_model(os.path.join(config.model_dir, run_folder.ENCODER))
    representations = {"backbone": inference.features_of(encoder)}
    if config.method == "scl_amp":
        representations["embedding"] = encoder
    out = {"novel_classes": [data.class_names[i] for i in novel_ids], "episodes": episodes, "representations": {}}
    for name, model in representations.items():
        z = inference.embed(model, data.images[novel], tta=tta)
        threshold = evaluation.calibrate_threshold(inference.embed(model, train_data.images, tta=tta),
                                                   train_data.labels)
        entry = {"threshold": threshold}
        for k in FEW_SHOT_KS:
            entry[f"accuracy_k{k}"] = evaluation.few_shot_accuracies(z, data.labels[novel], k, episodes,
                                                                     config.seed).tolist()
            rejection = evaluation.open_set_auroc(z, data.labels[novel], k, max(1, episodes // 10), config.seed,
                                                  threshold=threshold)
            entry[f"open_set_k{k}"] = {key: value.tolist() for key, value in rejection.items()}
        out["representations"][name] = entry
    return out


def hardware():
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} CPU cores ({cpu})" + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU")
            + f"; TensorFlow {tf.__version__}, Python {platform.python_version()}")


def run_table(table, seeds, budget, output, methods=tuple(ROWS), cells=None, overrides=None,
              episodes=100, report_only=False, log=print, **data_options):
    """Runs (or skips, when finished) every run of the table, then writes table_N.md and .json.

    ``report_only``: trains nothing; the table is written from the runs finished so far.

    ``data_options``: neu, mixed_wm38, neu_manual_dir, wm38_manual_dir, data_dir, synthetic_per_class.
    Returns the path of the markdown file.
    """
    import keras

    from scl_amp_tf import training
    from scl_amp_tf.files import write_json

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
    runs = []
    for cell in chosen:
        for seed in seeds:
            for method in methods:
                config = run_config(cell, method, seed, budget, overrides, options)
                config.validate()
                metrics_path = os.path.join(config.model_dir, "metrics.json")
                if os.path.exists(metrics_path):
                    training.check_model_dir(config)  # finished with these settings, or an error
                    with open(metrics_path) as f:
                        config = dataclasses.replace(config, epochs=json.load(f).get("epochs", config.epochs))
                    log(f"table {table} {cell.key} {method} seed {seed}: finished earlier, kept")
                elif report_only:
                    log(f"table {table} {cell.key} {method} seed {seed}: not finished, left out")
                    continue
                else:
                    log(f"table {table} {cell.key} {method} seed {seed}: training ({config.backbone}, "
                        f"{config.image_size} px, " + (f"{config.steps} steps" if config.steps else
                                                       f"{config.epochs} epochs") + f") in {config.model_dir}")
                    start = time.time()
                    training.train_and_evaluate(config)
                    keras.backend.clear_session()
                    log(f"  done in {time.time() - start:.0f} s")
                with open(metrics_path) as f:
                    metrics = json.load(f)
                run = {"cell": cell.key, "method": method, "seed": seed, "epochs": config.epochs,
                       "steps": metrics.get("steps"),
                       "test_accuracy": metrics["test_accuracy"], "num_train": metrics["num_train"],
                       "num_test": metrics["num_test"], "per_class_accuracy": metrics["per_class_accuracy"],
                       "class_names": metrics["class_names"],
                       "reference_db_accuracy_on_features": metrics.get("reference_db_accuracy_on_features"),
                       "dataset_description": metrics.get("dataset_description"),
                       "train_seconds": metrics.get("train_seconds"), "model_dir": config.model_dir}
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
    conditions = {
        "table": table, "title": title, "budget": budget, "budget_description": BUDGETS[budget]["description"],
        "overrides": overrides, "settings": settings, "seeds": list(seeds), "methods": list(methods),
        "hardware": hardware(), "date": datetime.date.today().isoformat(),
        "dataset": sorted({r["dataset_description"] or "" for r in runs}),
        # the command that trains the table (--report_only only rewrites it)
        "command": ("python -m scl_amp_tf.reproduce " + " ".join(a for a in sys.argv[1:] if a != "--report_only")
                    if sys.argv[0].endswith("reproduce.py") else None),
    }
    write_json(os.path.join(output, f"table_{table}.json"), {"conditions": conditions, "runs": runs})
    from scl_amp_tf import tables

    markdown = tables.render(table, chosen, runs, conditions)
    from scl_amp_tf.files import atomic_write

    path = os.path.join(output, f"table_{table}.md")
    atomic_write(path, lambda tmp: open(tmp, "w").write(markdown))
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:  # TFDS's INFO lines on every dataset load say nothing useful here
        logging.set_verbosity(logging.WARNING)
    if FLAGS.table is None:
        print("error: --table is required (2, 3, 4, 5 or 6).", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in FLAGS.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds={FLAGS.seeds!r} must be comma-separated integers.", file=sys.stderr)
        return 2
    from scl_amp_tf.training import parse_overrides  # TensorFlow loads here, after the flags

    try:
        path = run_table(int(FLAGS.table), seeds, FLAGS.budget, FLAGS.output,
                         methods=[m.strip() for m in FLAGS.methods.split(",") if m.strip()],
                         cells=[c.strip() for c in FLAGS.cells.split(",")] if FLAGS.cells else None,
                         overrides=parse_overrides(FLAGS.set), episodes=FLAGS.episodes, report_only=FLAGS.report_only,
                         neu=FLAGS.neu, mixed_wm38=FLAGS.mixed_wm38, neu_manual_dir=FLAGS.neu_manual_dir,
                         wm38_manual_dir=FLAGS.wm38_manual_dir, data_dir=FLAGS.data_dir,
                         synthetic_per_class=FLAGS.synthetic_per_class)
    except ValueError as e:  # bad flags, data problems (DataError), a run dir with other settings
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(path) as f:
        print(f.read())
    print(f"Written to {path}")
    return 0


if __name__ == "__main__":
    app.run(main)
