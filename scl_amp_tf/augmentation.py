"""The augmentation set T of section IV.A, batched, seeded and in-graph.

Each view is: a random resized crop (small crops give local views, large ones global or
adjacent views), a rotation by a random multiple of 90 degrees (the angle set
{0, pi/2, pi, 3pi/2} of section IV.A; ``rotations="half"``: {0, pi}, so that with the flips a
view keeps the image's horizontal and vertical axes), and independent horizontal and vertical flips.

Every op is a stateless TF op on a whole batch ``[N, H, W, C]`` driven by one seed tensor of
shape ``[2]``, so the views are the same on any device and any number of replicas for the
same seed, and the functions run inside ``tf.data`` or a ``tf.function`` (never in Python).
Images must be square (the data pipeline resizes to ``image_size x image_size``), since a
quarter turn of a non-square image changes its shape.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

DEFAULT_CROP_SCALE = (0.25, 1.0)
DEFAULT_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# ``--crop_scale_min=auto``: images in a fixed frame keep at least this much of their area per crop.
FRAMED_CROP_SCALE_MIN = 0.8
FRAMED_THRESHOLD = 0.3  # frame_score above this: the images share a fixed frame
# ``--rotations``: "quarter", the paper's angle set; "half", half turns only; "auto": orientation_score.
ROTATIONS = ("quarter", "half")
ORIENTED_THRESHOLD = 0.1  # orientation_score above this: each class's images share an orientation


def _gray(images):
    """Images ``[N, H, W]`` or ``[N, H, W, C]`` as float32 gray levels ``[N, H, W]`` (channels averaged)."""
    x = np.asarray(images, dtype=np.float32)
    return x.mean(axis=-1) if x.ndim == 4 else x


def frame_score(images):
    """How much the images share a fixed frame: the spatial standard deviation of their mean image
    over the standard deviation of all their pixels (gray levels; RGB averaged), in [0, 1].

    Images taken in one frame (wafer maps inside the same die mask, aligned parts) have a mean
    image with structure, and where a pattern sits is part of what it is (Center vs Edge-Loc). Free
    textures (steel surface patches) average to a flat image: any crop shows the same defect.
    Measured (``bench/image_scores.py``): wafer maps (MixedWM38 and the synthetic ones) 0.81-0.83,
    NEU-CLS 0.04-0.07 on draws of 10-50 images per class.
    """
    x = _gray(images)
    total = float(x.std())
    return 0.0 if total == 0 else float(x.mean(axis=0).std() / total)


def auto_crop_scale_min(images, paper_scale_min=DEFAULT_CROP_SCALE[0]):
    """``--crop_scale_min=auto``: a crop keeps the label only if where a pattern sits does not
    matter. Framed images (:func:`frame_score` above ``FRAMED_THRESHOLD``) get mild crops
    (``FRAMED_CROP_SCALE_MIN`` of the area at least: a view still shows where the pattern is);
    free textures keep the paper's local, adjacent and global views (``paper_scale_min``).
    Returns ``(scale_min, score)``."""
    score = frame_score(images)
    return (FRAMED_CROP_SCALE_MIN if score > FRAMED_THRESHOLD else paper_scale_min), score


def anisotropy(images):
    """Per image, ``(Ex - Ey) / (Ex + Ey)`` in [-1, 1]: Ex and Ey are the mean squared horizontal and
    vertical gray-level gradients (RGB averaged); 1 for stripes across x, -1 across y, 0 for no axis."""
    gy, gx = np.gradient(_gray(images), axis=(1, 2))
    ex, ey = (gx ** 2).mean(axis=(1, 2)), (gy ** 2).mean(axis=(1, 2))
    return (ex - ey) / np.maximum(ex + ey, np.finfo(np.float32).tiny)


def orientation_score(images, labels):
    """How much the images of each class share an orientation, in [0, 1]: per image, the
    :func:`anisotropy` ``a = (Ex - Ey) / (Ex + Ey)`` of its horizontal and vertical gradient
    energies; per class, ``|mean a|`` less what chance gives (two standard errors of the mean,
    floored at 0; a class of one image scores 0); the score is the mean over the classes (images
    labelled -1, an unlabeled pool, count as one class).

    Steel strips photographed along the rolling direction have streaks that run one way in every
    image of a class (NEU-CLS inclusions: ``a`` about 0.5, positive in 94-100 % of them); a quarter
    turn makes views no test image looks like and, through L_con (Eq. 1-2), asks the embedding not
    to see the difference. Wafer maps have no such axis (a scratch runs any way; round patterns
    have none). The chance term keeps a few strongly anisotropic images that happen to lean one
    way (10 scratches at random quarter turns) from scoring. Measured (``bench/image_scores.py``):
    NEU-CLS 0.09-0.19 on draws of 10-50 images per class, MixedWM38 and the synthetic wafer maps
    under 0.001.
    """
    a_all = anisotropy(images)
    labels = np.asarray(labels)
    per_class = []
    for c in np.unique(labels):
        a = a_all[labels == c].astype(np.float64)
        chance = 2 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.inf
        per_class.append(max(0.0, abs(a.mean()) - chance))
    return float(np.mean(per_class))


def auto_rotations(images, labels):
    """``--rotations=auto``: half turns only (``"half"``) when each class's images share an
    orientation (:func:`orientation_score` above ``ORIENTED_THRESHOLD``), else the paper's quarter
    turns. Returns ``(rotations, score)``."""
    score = orientation_score(images, labels)
    return ("half" if score > ORIENTED_THRESHOLD else "quarter"), score


def random_resized_crop(images, seed, scale=DEFAULT_CROP_SCALE, ratio=DEFAULT_CROP_RATIO):
    """Crops a random box of ``scale`` x area and ``ratio`` aspect from each image, resized back."""
    images = tf.convert_to_tensor(images)
    n = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    s_area, s_ratio, s_y, s_x = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    area = tf.random.stateless_uniform([n], s_area, scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform([n], s_ratio, math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    # Box height and width as fractions of the image side.
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0 = tf.random.stateless_uniform([n], s_y) * (1.0 - h)
    x0 = tf.random.stateless_uniform([n], s_x) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    crops = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes, tf.range(n), size)
    return tf.cast(crops, images.dtype) if images.dtype.is_floating else crops


def random_rot90(images, seed, rotations="quarter"):
    """Rotates each (square) image by k * 90 degrees, k drawn uniformly from {0, 1, 2, 3}
    (``rotations="half"``: from {0, 2}, the same draw halved, so a half turn where the quarter
    turns would have turned by 180 or 270 degrees)."""
    images = tf.convert_to_tensor(images)
    n = tf.shape(images)[0]
    k = tf.random.stateless_uniform([n], seed, 0, 4, dtype=tf.int32)
    if rotations == "half":
        k = k // 2 * 2
    elif rotations != "quarter":
        raise ValueError(f"rotations={rotations!r} must be one of {', '.join(ROTATIONS)}")
    turned = tf.stack([tf.image.rot90(images, i) for i in range(4)], axis=1)  # [N,4,H,W,C]
    return tf.gather(turned, k, axis=1, batch_dims=1)


def random_flip(images, seed, axis):
    """Flips each image along ``axis`` (1: vertical, 2: horizontal) with probability 1/2."""
    images = tf.convert_to_tensor(images)
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, [axis]), images)


def augment(images, seed, crop_scale=DEFAULT_CROP_SCALE, rotations="quarter"):
    """One random view t(x) of every image in a float batch ``[N, H, W, C]`` (section IV.A)."""
    s_crop, s_rot, s_h, s_v = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    images = random_resized_crop(images, s_crop, scale=crop_scale)
    images = random_rot90(images, s_rot, rotations)
    images = random_flip(images, s_h, axis=2)
    return random_flip(images, s_v, axis=1)


def two_views(images, seed, crop_scale=DEFAULT_CROP_SCALE, rotations="quarter"):
    """The positive pair (x_i, x_j) = (t(x), t'(x)) of the SCL module, independent draws."""
    s_i, s_j = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return augment(images, s_i, crop_scale, rotations), augment(images, s_j, crop_scale, rotations)
