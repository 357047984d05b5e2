"""Test-time augmentation over the eight rotations and flips of an image (ours, beyond the paper).

Training makes the network invariant to quarter turns and flips: every view of section IV.A is
rotated by a random multiple of 90 degrees and flipped at random (:mod:`scl_amp_tf.augmentation`).
A network trained for a few thousand steps is invariant only approximately, so one image can land
a little differently in the embedding space depending on how it happens to be oriented. With
``--tta=dihedral`` an image's embedding is the mean of the L2-normalised embeddings of its eight
transforms (the dihedral group D4: the 4 rotations, each also mirrored), which is exactly
invariant, and every reference and every query of the database (section IV.A) is embedded so. For
the CE baseline the eight softmax outputs are averaged instead.

It is an inference setting: it costs 8 forward passes per image and changes no weight. Every
runtime that embeds images applies it the same way: :func:`scl_amp_tf.inference.embed` (training's
evaluation, ``evaluate``, ``predict``), the SavedModel's signatures
(:mod:`scl_amp_tf.serving_graph`) and the LiteRT runner (``export/edge/edge_classify.py``, which
carries its own NumPy copy of :func:`dihedral_view_np` so that it needs nothing of this package).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

TTA = ("none", "dihedral")
NUM_VIEWS = {"none": 1, "dihedral": 8}


def check(tta):
    if tta not in TTA:
        raise ValueError(f"--tta={tta!r} must be one of {', '.join(TTA)}.")
    return tta


def dihedral_view_np(images, index):
    """Transform ``index`` (0..7) of a batch ``[N, H, W, C]`` of square images: ``index // 2``
    quarter turns counter-clockwise, then, for an odd index, mirrored left-right (0 = identity)."""
    turned = np.rot90(images, index // 2, axes=(1, 2))
    return np.ascontiguousarray(turned[:, :, ::-1] if index % 2 else turned)


def dihedral_views(images):
    """The 8 transforms of :func:`dihedral_view_np`, in its order, in TensorFlow (for graphs that
    are exported)."""
    views = []
    for k in range(4):
        turned = tf.image.rot90(images, k)
        views += [turned, tf.reverse(turned, [2])]
    return views


def views_tf(images, tta):
    """The views of ``images`` that ``tta`` averages over (just ``[images]`` for ``none``)."""
    return dihedral_views(images) if check(tta) == "dihedral" else [images]
