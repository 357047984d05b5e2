"""Command line: classify image files with a trained run or an exported model.

    python -m scl_amp_tf.predict --model_dir=runs/mine --images=/data/new_parts --output=predictions.csv
    python -m scl_amp_tf.predict --export_dir=exports --images=part_0042.png --output=-
    python -m scl_amp_tf.predict --model_dir=runs/mine --images=/data/new --reject_threshold=0.6 --output=p.csv

``--images`` is one file or a folder (searched recursively). The CSV has one row per image:
``file, class, score, second_class, second_score`` (mean cosine similarity to the class's
references, to their mean direction with ``--prototypes=normalised``, or the CE softmax
probability); ``class`` is ``unknown`` when the best score is under the reject threshold
(``--reject_threshold`` with a run; an export applies the threshold and the rule it was exported
with). A file that cannot be read or decoded is named on stderr and skipped; the others are
classified and written, and the exit code is 1 (0 when every file was classified, 2 for a usage
or model error). See :mod:`scl_amp_tf.predicting`.
"""
from __future__ import annotations

import sys

from absl import app, flags

from scl_amp_tf import command_flags

flags.DEFINE_string("model_dir", None, "A finished training run (python -m scl_amp_tf.train).")
flags.DEFINE_string("export_dir", None, "Root of exported models (python -m scl_amp_tf.export); the newest "
                    "version unless --version.")
flags.DEFINE_string("model_name", None, "Model under --export_dir (needed only when it holds several).")
flags.DEFINE_integer("version", None, "Exported version to use (default the newest).")
command_flags.define_images()
flags.DEFINE_string("output", "predictions.csv", "The CSV file to write; - for standard output.")
command_flags.define_reject_threshold("are 'unknown' (with --model_dir of an SCL-AMP run; an export applies "
                                      "the threshold it was exported with).")
command_flags.define_prototypes("With --model_dir; an export scores by the rule it was exported with.")
flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
flags.mark_flag_as_required("images")

flags.adopt_module_key_flags(command_flags)  # --help lists the shared flags too
FLAGS = flags.FLAGS


def main(argv):
    command_flags.begin(argv, quiet_logging=False)
    if (FLAGS.model_dir is None) == (FLAGS.export_dir is None):
        print("error: give one of --model_dir (a training run) and --export_dir (an exported model).", file=sys.stderr)
        return 2
    if FLAGS.batch_size < 1:
        print(f"error: --batch_size={FLAGS.batch_size} must be at least 1.", file=sys.stderr)
        return 2
    import keras

    from scl_amp_tf import data as data_lib
    from scl_amp_tf import open_set, predicting

    try:
        paths = data_lib.list_images(FLAGS.images)
        if FLAGS.model_dir:
            predictor = predicting.RunPredictor(FLAGS.model_dir, open_set.parse_threshold(FLAGS.reject_threshold),
                                               FLAGS.reject_quantile, FLAGS.prototypes)
        else:
            if FLAGS.reject_threshold != "none":
                raise ValueError("--reject_threshold goes with --model_dir; an export applies the threshold it "
                                 "was exported with (python -m scl_amp_tf.export --reject_threshold=...).")
            if FLAGS["prototypes"].present:
                raise ValueError("--prototypes goes with --model_dir; an export scores by the rule it was exported "
                                 "with (python -m scl_amp_tf.export --prototypes=...).")
            predictor = predicting.ExportPredictor(FLAGS.export_dir, FLAGS.model_name, FLAGS.version)
    except ValueError as e:  # DataError, ExportError: a message for the user
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar = keras.utils.Progbar(len(paths), unit_name="image", verbose=1 if sys.stderr.isatty() else 0)
    predictions, failures = predicting.predict(predictor, paths, FLAGS.batch_size, progress=bar.update)
    for path, reason in failures.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if FLAGS.output == "-":
        predicting.write_csv(predictions, sys.stdout)
    else:
        predicting.write_csv(predictions, FLAGS.output)
        print(f"{len(predictions)} of {len(paths)} images classified; written to {FLAGS.output}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
