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
(:mod:`scl_amp_tf.serving_graph`) and the LiteRT runner (``export/edge/edge_classify.py``). The
NumPy transform lives in the runner, which must need nothing of this package, and is used from
there (:func:`dihedral_view_np`); :func:`dihedral_views` is the same in TensorFlow.
"""
from __future__ import annotations

import tensorflow as tf

from scl_amp_tf.edge.edge_classify import dihedral_view as dihedral_view_np  # noqa: F401  (the one NumPy definition)

TTA = ("none", "dihedral")
NUM_VIEWS = {"none": 1, "dihedral": 8}


def check(tta):
    if tta not in TTA:
        raise ValueError(f"--tta={tta!r} must be one of {', '.join(TTA)}.")
    return tta


def check_with_turns(tta, rotations, turns, remedy):
    """Refuses ``tta="dihedral"`` for a network whose views turned by half turns only
    (``rotations == "half"``, :func:`scl_amp_tf.augmentation.auto_rotations`): it would average
    each image over quarter turns the network never trained. ``turns`` says where the half turns
    came from and ``remedy`` what to give instead, for the message."""
    if check(tta) == "dihedral" and rotations == "half":
        raise ValueError(f"--tta=dihedral averages each image over quarter turns, which {turns} does not "
                         f"train; {remedy}.")


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
