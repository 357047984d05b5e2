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
recipe; ``scl_amp_recipe``, SCL-AMP with the small-data recipe (:mod:`scl_amp_tf.recipes`);
``scl_amp_self_training``, the same recipe again with the ``scl_amp_recipe`` run of its cell and
seed as teacher, trained on the labelled images plus the images it labels with confidence among
those that are neither training nor test images (:mod:`scl_amp_tf.pseudo_labels`; only in the
cells that hold out a test set beside the k shots, Table VI's; its teacher is trained first), for
twice a step budget's steps (it fits five times the images). Then
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
on 2 CPU cores in about 8-40 minutes per run (CE the shortest, the self-training row's student the
longest): the small ``resnet_tiny`` backbone from scratch, NEU at
64 px, MixedWM38 at its native 52 px, and the step budget of the small-data recipe for every run
(``recipes.SMALL_DATA["steps"]``, where both methods' learning curves under the decaying rate flatten,
BENCHMARKS.md; epochs =
ceil(steps / steps per epoch); the self-training row's student twice that). Any training setting can be changed with
``--set key=value`` (recorded in the conditions and the run paths).
"""
from __future__ import annotations

import sys

from absl import app, flags

from scl_amp_tf import command_flags
from scl_amp_tf.tables import BUDGETS, ROWS, TABLES

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


def main(argv):
    command_flags.begin(argv)
    if FLAGS.table is None:
        print("error: --table is required (2, 3, 4, 5 or 6).", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in FLAGS.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds={FLAGS.seeds!r} must be comma-separated integers.", file=sys.stderr)
        return 2
    from scl_amp_tf.reproducing import run_table  # TensorFlow loads here, after the flags
    from scl_amp_tf.train_config import parse_overrides

    try:
        path = run_table(int(FLAGS.table), seeds, FLAGS.budget, FLAGS.output,
                         methods=[m.strip() for m in FLAGS.methods.split(",") if m.strip()],
                         cells=[c.strip() for c in FLAGS.cells.split(",")] if FLAGS.cells else None,
                         overrides=parse_overrides(FLAGS.set), episodes=FLAGS.episodes, report_only=FLAGS.report_only,
                         neu=FLAGS.neu, mixed_wm38=FLAGS.mixed_wm38, neu_manual_dir=FLAGS.neu_manual_dir,
                         wm38_manual_dir=FLAGS.wm38_manual_dir, data_dir=FLAGS.data_dir,
                         synthetic_per_class=FLAGS.synthetic_per_class,
                         # what trains the table (--report_only only rewrites it)
                         command="python -m scl_amp_tf.reproduce " + " ".join(
                             a for a in sys.argv[1:] if a != "--report_only"))
    except ValueError as e:  # bad flags, data problems (DataError), a run dir with other settings
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(path) as f:
        print(f.read())
    print(f"Written to {path}")
    return 0


if __name__ == "__main__":
    app.run(main)
