"""Flags that several command lines share, defined once: one name means one thing in every command.

Each ``python -m scl_amp_tf.<command>`` defines its flags at import with absl (its own flags in
its module, the shared ones by calling these), and only those modules do: the library never
reads flags. A command adopts these as its key flags (``flags.adopt_module_key_flags``), so that
its ``--help`` lists them beside its own.
"""
from __future__ import annotations

from absl import flags

from scl_amp_tf.open_set import DEFAULT_REJECT_QUANTILE  # NumPy only
from scl_amp_tf.reference import PROTOTYPE_RULES  # NumPy only

IMAGES_HELP = "An image file or a folder of images (searched recursively)."


def define_images(help_text=IMAGES_HELP):
    """``--images``: a file or a folder, everywhere."""
    flags.DEFINE_string("images", None, help_text)


def define_recorded_data_location(whose="the run"):
    """``--data_dir`` and ``--manual_dir`` for commands that reload a finished run's data: by default
    from where the run recorded it."""
    flags.DEFINE_string("data_dir", None, f"TFDS data directory, if not the one {whose} recorded.")
    flags.DEFINE_string("manual_dir", None, f"Manual-download folder of the dataset, if not the one {whose} recorded.")


def define_prototypes(consequence):
    """``--prototypes``: how a class of a reference database scores (:mod:`scl_amp_tf.reference`)."""
    flags.DEFINE_enum("prototypes", "mean", list(PROTOTYPE_RULES),
                      "How a class scores. mean: the mean cosine similarity to its references (the paper's rule); "
                      "normalised: the cosine to their mean direction (every prototype at unit length), so that a "
                      "class of a few references does not outscore one of many. " + consequence)


def define_reject_threshold(applies):
    """``--reject_threshold`` (``applies``: what a rejected image becomes, in this command) and
    ``--reject_quantile`` (how ``auto`` calibrates it, see :mod:`scl_amp_tf.open_set`)."""
    flags.DEFINE_string("reject_threshold", "none",
                        "none | auto | a number: images whose best score (--prototypes) is below it " + applies
                        + " auto calibrates it on the run's validation images (train with --validation_fraction).")
    flags.DEFINE_float("reject_quantile", DEFAULT_REJECT_QUANTILE,
                       "For --reject_threshold=auto: the quantile of the validation images' leave-one-out best "
                       "scores taken as the threshold (at least about 1 - quantile of known images accepted).")


def begin(argv, quiet_logging=True):
    """The start of every command's ``main``: refuses positional arguments (every input is a flag)
    and, with ``quiet_logging`` and unless ``--verbosity`` was given, keeps absl's log to warnings
    (TFDS and TensorFlow log INFO lines on every dataset load and save that say nothing useful to
    the user of a command; progress has its own bar)."""
    from absl import app, logging

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if quiet_logging and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
