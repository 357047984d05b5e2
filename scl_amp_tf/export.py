"""Command line: export a trained model for TF Serving (SavedModel) and the edge (LiteRT).

    python -m scl_amp_tf.export --model_dir=runs/demo --export_dir=exported
    python -m scl_amp_tf.export --model_dir=runs/neu_20shot --export_dir=/models --model_name=neu \
        --formats=saved_model,tflite_fp32,tflite_int8
    python -m scl_amp_tf.export --model_dir=runs/base --export_dir=exported --representation=backbone

Writes ``EXPORT/<model_name>/<version>/`` (the next version number unless ``--version``): a
SavedModel with the signatures serving_default, classify_bytes and embed, the reference database
inside, and in its ``assets.extra/`` folder the LiteRT models, the reference database and the edge
runner; and ``EXPORT/models.config``, TF Serving's config naming every model under EXPORT. Every
artefact is checked against the Keras model before the version is published (a failed check
publishes nothing). Every artefact classifies by the reference database (section IV.A) on the
run's embeddings or, with ``--representation=backbone``, on its pooled backbone features (then a
CE run exports too); ``--prototypes=normalised`` scores a class by the cosine to its references'
mean direction instead of their mean cosine. See the README's Deployment section.
"""
from __future__ import annotations

import sys

from absl import app, flags

from scl_amp_tf import command_flags
from scl_amp_tf.evaluating import REPRESENTATIONS  # NumPy only: TensorFlow loads in main

flags.DEFINE_string("model_dir", None, "A finished training run (python -m scl_amp_tf.train): SCL-AMP, or CE with "
                    "--representation=backbone.")
flags.DEFINE_string("export_dir", None, "Root of the exported models: EXPORT/<model_name>/<version>/.")
flags.DEFINE_string("model_name", None, "Name under --export_dir (TF Serving's model name); "
                    "default: the --model_dir folder's name.")
flags.DEFINE_integer("version", None, "Version number to write (default: one more than the newest).")
flags.DEFINE_string("formats", "saved_model,tflite",
                    "saved_model, plus tflite (fp32, fp16 and int8) and/or some of tflite_fp32, tflite_fp16, "
                    "tflite_int8, tflite_int16x8 (int8 weights, int16 activations: closer to float than int8, "
                    "slower on CPU).")
flags.DEFINE_enum("representation", "embedding", list(REPRESENTATIONS),
                  "What the artefacts output and the reference database holds. embedding: an SCL-AMP run's "
                  "embeddings, best on the classes it trained on; backbone: the pooled backbone features "
                  "(SCL-AMP or CE), best on classes it never trained on, which enroll adds.")
command_flags.define_prototypes("Choose normalised for a model that will enrol classes from a few images; "
                                "enroll follows the exported rule.")
flags.DEFINE_integer("representative_images", 200,
                     "Training images (drawn with --seed) that calibrate the int8 and int16x8 quantisation.")
command_flags.define_reject_threshold("are classified as unknown (class id -1) by every artefact; enrolment "
                                      "keeps it.")
flags.DEFINE_integer("check_images", 64, "Training images every artefact is checked on before publishing.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration and check draws.")
flags.DEFINE_string("serving_base_path", "/models",
                    "Where TF Serving sees --export_dir (the container's mount point): the base_path of each "
                    "model in EXPORT/models.config, which every export rewrites.")
command_flags.define_recorded_data_location()
flags.mark_flags_as_required(["model_dir", "export_dir"])

flags.adopt_module_key_flags(command_flags)  # --help lists the shared flags too
FLAGS = flags.FLAGS


def main(argv):
    command_flags.begin(argv)
    from scl_amp_tf import exporting, open_set

    try:
        path = exporting.export_model(
            FLAGS.model_dir, FLAGS.export_dir, model_name=FLAGS.model_name, version=FLAGS.version,
            formats=FLAGS.formats, representative_images=FLAGS.representative_images,
            check_images=FLAGS.check_images, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir, seed=FLAGS.seed,
            reject_threshold=open_set.parse_threshold(FLAGS.reject_threshold), reject_quantile=FLAGS.reject_quantile,
            representation=FLAGS.representation, prototypes=FLAGS.prototypes)
    except (ValueError, OSError) as e:  # ExportError, DataError, bad settings, unwritable folders
        print(f"error: {e}", file=sys.stderr)
        return 2
    from scl_amp_tf import serving_config

    config = serving_config.write(FLAGS.export_dir, FLAGS.serving_base_path)
    print(exporting.describe_version(path))
    print(f"TF Serving config (every model under {FLAGS.export_dir}): {config}")
    return 0


if __name__ == "__main__":
    app.run(main)
