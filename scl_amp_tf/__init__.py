"""scl-amp-tf: surface defect recognition from small data.

TensorFlow/Keras implementation of "Improving Image Representation for Surface Defect
Recognition with Small Data" (Thai, Duong and Le, 2024): a ResNet encoder with an MLP
projection head trained with a self-contrastive loss over three views (Eq. 1-2) plus an
ArcFace angular-margin loss (Eq. 4), total ``alpha * L_con + beta * L_arc`` (Eq. 5), and
classification by cosine similarity to a k-shot reference database (section IV.A).

Importing the package registers the TFDS builders ``neu`` and ``mixed_wm38``
(``tfds.builder("neu")`` works after ``import scl_amp_tf``).
"""
import os as _os

# TensorFlow's C++ log: errors only from level 3 on, so that a CPU machine is not told at every
# start that it has no CUDA driver ("failed call to cuInit"); real failures still raise in
# Python. A user's own TF_CPP_MIN_LOG_LEVEL (e.g. 0 to see everything) is kept.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scl_amp_tf import tfds_datasets  # noqa: E402,F401  (registers the builders)

__version__ = "0.1.0"
