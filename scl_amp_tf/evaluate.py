"""Command line: evaluate a trained run on its test split.

    python -m scl_amp_tf.evaluate --model_dir=runs/neu_20shot
    python -m scl_amp_tf.evaluate --model_dir=runs/neu_20shot --reference_shots=5 --seed=3
    python -m scl_amp_tf.evaluate --model_dir=runs/neu_20shot --reject_threshold=auto

SCL-AMP runs classify by the reference database (section IV.A): ``--reference_shots=k``
references per class drawn at random from the training set (seeded by ``--seed``; default every
training image), each test image goes to the class of highest mean cosine similarity (with
``--prototypes=normalised``, of highest cosine to the references' mean direction, as an export
with that option serves). CE runs classify by their softmax (or, with
``--representation=backbone``, by a reference database on the pooled backbone features, as
SCL-AMP runs can too). ``--reject_threshold`` (SCL-AMP and
reference databases only) reports queries under a similarity threshold as unknown defects
(``auto``: calibrated on the run's validation images, which the network did not fit, see
:func:`scl_amp_tf.run_folder.auto_reject_threshold`).

Writes into ``MODEL_DIR/evaluation/``: ``evaluation.json`` (accuracy, balanced accuracy,
precision / recall / F1 per class and their macro means, the confusion matrix, settings; with a
threshold, the open-set AUROC), ``confusion_matrix.md``, ``confusion_matrix.png`` and
``misclassified.png`` (the misclassified test images with their scores); and the
embeddings of the test and reference images to TensorBoard's projector in
``MODEL_DIR/logs/projector/`` (``tensorboard --logdir MODEL_DIR/logs``, tab "Projector"), with
their class and split as labels. Prints a short table.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from scl_amp_tf import command_flags
from scl_amp_tf.evaluating import REPRESENTATIONS  # NumPy only: TensorFlow loads in main

flags.DEFINE_string("model_dir", None, "A finished training run (python -m scl_amp_tf.train).")
flags.DEFINE_integer("reference_shots", None,
                     "References per class drawn from the training set (default: every training image).")
flags.DEFINE_integer("seed", 0, "Seed of the reference draw.")
flags.DEFINE_enum("representation", "embedding", list(REPRESENTATIONS),
                  "embedding: the run's output (SCL-AMP embedding, CE softmax); backbone: a reference "
                  "database on the pooled backbone features (either method).")
command_flags.define_prototypes("As export --prototypes: evaluate the rule an export will serve.")
command_flags.define_reject_threshold("are reported as unknown (reference databases only).")
flags.DEFINE_enum("tta", None, ["none", "dihedral"],
                  "Test-time augmentation of every reference and query (default: the run's --tta): dihedral "
                  "averages each image's 8 rotations and flips (refused on a run whose views turned by half "
                  "turns only).")
flags.DEFINE_bool("projector", True, "Write the embeddings to TensorBoard's projector.")
flags.DEFINE_integer("projector_max_images", 2000, "At most this many test images in the projector (seeded draw).")
flags.DEFINE_string("output_dir", None, "Where the results go (default MODEL_DIR/evaluation).")
command_flags.define_recorded_data_location()

flags.adopt_module_key_flags(command_flags)  # --help lists the shared flags too
FLAGS = flags.FLAGS


def main(argv):
    command_flags.begin(argv)
    if not FLAGS.model_dir:
        print("error: --model_dir is required (a finished run of python -m scl_amp_tf.train).", file=sys.stderr)
        return 2
    from scl_amp_tf import open_set
    from scl_amp_tf.evaluating import evaluate_run, short_table, write_projector, write_results

    try:
        threshold = open_set.parse_threshold(FLAGS.reject_threshold)
        result, _, _, embeddings = evaluate_run(
            FLAGS.model_dir, reference_shots=FLAGS.reference_shots, seed=FLAGS.seed,
            representation=FLAGS.representation, reject_threshold=threshold,
            reject_quantile=FLAGS.reject_quantile, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
            tta=FLAGS.tta, prototypes=FLAGS.prototypes)
    except ValueError as e:  # not a finished run, data problems, bad flag values
        print(f"error: {e}", file=sys.stderr)
        return 2
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "evaluation")
    write_results(output_dir, result, embeddings)
    if FLAGS.projector:
        write_projector(os.path.join(FLAGS.model_dir, "logs", "projector"), embeddings,
                        FLAGS.projector_max_images, FLAGS.seed)
    print(short_table(result))
    print(f"Written to {output_dir}" + (f" and {os.path.join(FLAGS.model_dir, 'logs', 'projector')}"
                                       if FLAGS.projector else ""))
    return 0


if __name__ == "__main__":
    app.run(main)
