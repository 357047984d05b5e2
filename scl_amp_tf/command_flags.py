"""Flags that several command lines share, defined once: one name means one thing in every command.

Each ``python -m scl_amp_tf.<command>`` defines its flags at import with absl (its own flags in
its module, the shared ones by calling these), and only those modules do: the library never
reads flags. A command adopts these as its key flags (``flags.adopt_module_key_flags``), so that
its ``--help`` lists them beside its own.
"""
from __future__ import annotations

from absl import flags

from scl_amp_tf.open_set import DEFAULT_REJECT_QUANTILE  # NumPy only

IMAGES_HELP = "An image file or a folder of images (searched recursively)."


def define_images(help_text=IMAGES_HELP):
    """``--images``: a file or a folder, everywhere."""
    flags.DEFINE_string("images", None, help_text)


def define_recorded_data_location(whose="the run"):
    """``--data_dir`` and ``--manual_dir`` for commands that reload a finished run's data: by default
    from where the run recorded it."""
    flags.DEFINE_string("data_dir", None, f"TFDS data directory, if not the one {whose} recorded.")
    flags.DEFINE_string("manual_dir", None, f"Manual-download folder of the dataset, if not the one {whose} recorded.")


def define_reject_threshold(applies):
    """``--reject_threshold`` (``applies``: what a rejected image becomes, in this command) and
    ``--reject_quantile`` (how ``auto`` calibrates it, see :mod:`scl_amp_tf.open_set`)."""
    flags.DEFINE_string("reject_threshold", "none",
                        "none | auto | a number: images whose best mean cosine similarity is below it " + applies
                        + " auto calibrates it on the run's validation images (train with --validation_fraction).")
    flags.DEFINE_float("reject_quantile", DEFAULT_REJECT_QUANTILE,
                       "For --reject_threshold=auto: the quantile of the validation images' leave-one-out best "
                       "scores taken as the threshold (at least about 1 - quantile of known images accepted).")
