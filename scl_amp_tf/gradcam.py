"""Command line: Grad-CAM heat maps of trained runs side by side (the paper's Figs. 2 and 3).

    python -m scl_amp_tf.gradcam --model_dirs=runs/neu_ce,runs/neu --labels=CE,SCL-AMP \\
        --num_images=6 --output=gradcam.png
    python -m scl_amp_tf.gradcam --model_dirs=runs/mine --images=/data/rejected_parts --output=mine.png

One row per image (the first run's test images, one per class by default, or ``--images``), one
column per run: the map of the class it predicts. The work is in :mod:`scl_amp_tf.saliency`.
"""
from __future__ import annotations

import sys

from absl import app, flags

from scl_amp_tf import command_flags

flags.DEFINE_list("model_dirs", None, "Finished training runs (python -m scl_amp_tf.train), one column each.")
flags.DEFINE_list("labels", None, "Column titles, one per --model_dirs (default: CE or SCL-AMP).")
flags.DEFINE_integer("num_images", 6, "Rows: test images of the first run's split (or at most this many "
                     "--images).")
command_flags.define_images("Your own images instead of test images: an image file or a folder (searched "
                             "recursively), read as training reads them.")
flags.DEFINE_bool("per_class", True, "One image per class (the first --num_images classes); "
                  "--noper_class: --num_images test images at random.")
flags.DEFINE_integer("seed", 0, "Seed of the choice of images.")
flags.DEFINE_string("output", "gradcam.png", "The PNG written.")
command_flags.define_recorded_data_location("the runs")
flags.mark_flag_as_required("model_dirs")

flags.adopt_module_key_flags(command_flags)  # --help lists the shared flags too
FLAGS = flags.FLAGS


def main(argv):
    command_flags.begin(argv)
    from scl_amp_tf import saliency

    try:
        path = saliency.make_figure(FLAGS.model_dirs, FLAGS.output, labels=FLAGS.labels, num_images=FLAGS.num_images,
                                    per_class=FLAGS.per_class, seed=FLAGS.seed, data_dir=FLAGS.data_dir,
                                    manual_dir=FLAGS.manual_dir, images=FLAGS.images)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    app.run(main)
