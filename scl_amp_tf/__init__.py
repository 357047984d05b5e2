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

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scl_amp_tf import tfds_datasets  # noqa: E402,F401  (registers the builders)

__version__ = "0.1.0"
