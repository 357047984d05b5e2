"""Command line: add, replace or remove a defect class of an exported model without retraining.

    python -m scl_amp_tf.enroll --export_dir=exported --class_name=new_scratch --images=new_scratch/
    python -m scl_amp_tf.enroll --export_dir=exported --class_name=new_scratch --images=more/ --replace
    python -m scl_amp_tf.enroll --export_dir=exported --class_name=new_scratch --remove

The newest version's own SavedModel embeds the images (any size; resized inside as in training);
their mean normalised embedding becomes the class's prototype in the reference database (section
IV.A of the paper: a k-shot reference set), at unit length when the model was exported with
``--prototypes=normalised``. The result is published as the next version (new
SavedModel, the same LiteRT files, the new reference database), checked like an export; the
older versions stay, so TF Serving switches over (and back, by deleting the new folder) safely.
The summary warns when some of the enrolled images predict as another class than the new one.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

from scl_amp_tf import command_flags

flags.DEFINE_string("export_dir", None, "Root of the exported models (as given to python -m scl_amp_tf.export).")
flags.DEFINE_string("model_name", None, "Model under --export_dir (needed only when it holds several).")
flags.DEFINE_string("class_name", None, "The class to add, replace or remove.")
command_flags.define_images("Images of that class: an image file or a folder (searched recursively).")
flags.DEFINE_bool("replace", False, "Replace the references of an enrolled class with --images.")
flags.DEFINE_bool("remove", False, "Remove the class.")
flags.mark_flags_as_required(["export_dir", "class_name"])

flags.adopt_module_key_flags(command_flags)  # --help lists the shared flags too
FLAGS = flags.FLAGS


def main(argv):
    command_flags.begin(argv, quiet_logging=False)
    if FLAGS.replace and FLAGS.remove:
        raise app.UsageError("Give at most one of --replace and --remove.")
    if FLAGS.remove and FLAGS.images:
        raise app.UsageError("--remove takes no --images.")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from scl_amp_tf import enrolment, exporting

    mode = "remove" if FLAGS.remove else "replace" if FLAGS.replace else "add"
    try:
        path = enrolment.enroll(FLAGS.export_dir, FLAGS.class_name, images=FLAGS.images, mode=mode,
                                model_name=FLAGS.model_name)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(exporting.describe_version(path))
    return 0


if __name__ == "__main__":
    app.run(main)
