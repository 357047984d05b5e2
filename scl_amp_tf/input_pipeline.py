"""The tf.data input of training and evaluation: batches of images and their augmented views.

A function of (seed, epoch) alone, so that a resumed run sees what the uninterrupted run saw
(:func:`epoch_keys`), and the same global batch whatever the number of workers (see
:func:`pipeline`). The images come in memory, already resized (:mod:`scl_amp_tf.data`).
"""
from __future__ import annotations

import tensorflow as tf

from scl_amp_tf import augmentation
from scl_amp_tf.data import LabelledImages, to_float


def epoch_keys(seed, epoch):
    """The two stateless seeds of one epoch, ``(order, augmentation)``: functions of (seed, epoch)
    alone, so that epoch 7 of a resumed run draws exactly what epoch 7 of an uninterrupted run drew."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    order, views = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    return order, views


def _epoch_indices(n, seed, epoch, shuffle, samples_per_epoch):
    """The image indices of one epoch: a (shuffled) pass over the ``n`` images; or, with
    ``samples_per_epoch``, that many items of an endless stream of seeded passes (epoch e takes the
    items e * samples_per_epoch ... of the stream, so the pool is walked through, not resampled)."""
    if samples_per_epoch is None:
        order = tf.range(n, dtype=tf.int64)
        return tf.random.experimental.stateless_shuffle(order, epoch_keys(seed, epoch)[0]) if shuffle else order
    first = tf.cast(epoch, tf.int64) * samples_per_epoch
    passes = tf.range(first // n, (first + samples_per_epoch - 1) // n + 1)
    stream = tf.reshape(tf.map_fn(
        lambda p: tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), epoch_keys(seed, -1 - p)[0]),
        passes), [-1])
    start = first - (first // n) * n
    return stream[start:start + samples_per_epoch]


def pipeline(data: LabelledImages, *, batch_size: int, views: str, seed: int, shuffle: bool,
             crop_scale=augmentation.DEFAULT_CROP_SCALE, rotations="quarter", input_context=None,
             drop_remainder=False, epochs=(0, 1), samples_per_epoch=None) -> tf.data.Dataset:
    """The tf.data input of training and evaluation.

    ``views``: ``"three"`` gives ``((x_n, x_i, x_j), y)`` (SCL-AMP: the image and two views),
    ``"one"`` gives ``(t(x), y)`` (the cross-entropy baseline, same augmentation set),
    ``"none"`` gives ``(x, y)``. ``crop_scale`` and ``rotations``: the views' crop areas and
    turns (:func:`scl_amp_tf.augmentation.augment`). The images are held in memory already
    resized (deterministic preprocessing done once); augmentation runs after that (so it is never
    frozen by a cache), in parallel, and every image draws its views from its own seed.

    ``epochs=(first, stop)``: the batches of epochs ``first .. stop - 1`` one after the other (an
    epoch's last, short batch is its own). Each epoch's order and augmentation seeds are functions
    of ``(seed, epoch)`` alone (:func:`epoch_keys`): a run resumed at epoch ``first`` sees what the
    uninterrupted run saw. ``samples_per_epoch``: each epoch takes that many images of an endless
    seeded stream of passes over the data (the unlabeled pool), instead of one pass.

    ``input_context`` (``tf.distribute.InputContext``, from ``distribute_datasets_from_function``):
    the pipeline of one worker. All workers order alike and pair every image with its seed
    *before* each takes every k-th image, so worker batches of ``batch_size / k`` images make up
    exactly the global batch of a single process, views included. ``drop_remainder`` drops the
    last, short global batch of each epoch (workers must run the same number of steps).
    """
    if views not in ("three", "one", "none"):
        raise ValueError(f"views must be 'three', 'one' or 'none', not {views!r}")
    n = len(data.labels)
    per_epoch = n if samples_per_epoch is None else samples_per_epoch
    if drop_remainder:
        per_epoch = per_epoch // batch_size * batch_size
    images, labels = tf.constant(data.images), tf.constant(data.labels)
    shards = input_context.num_input_pipelines if input_context is not None else 1
    shard = input_context.input_pipeline_id if input_context is not None else 0
    local_batch = input_context.get_per_replica_batch_size(batch_size) if input_context is not None else batch_size

    def one(i, s):
        x = to_float(tf.gather(images, i))[None]
        if views == "three":
            x = (x[0], *(v[0] for v in augmentation.two_views(x, s, crop_scale, rotations)))
        elif views == "one":
            x = augmentation.augment(x, s, crop_scale, rotations)[0]
        else:
            x = x[0]
        return x, tf.gather(labels, i)

    def epoch(e):
        order = _epoch_indices(n, seed, e, shuffle, samples_per_epoch)[:per_epoch]
        seeds = tf.random.stateless_uniform([per_epoch, 2], epoch_keys(seed, e)[1], minval=None, maxval=None,
                                            dtype=tf.int64)
        ds = tf.data.Dataset.from_tensor_slices((order, seeds))
        if shards > 1:
            ds = ds.shard(shards, shard)
        ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(local_batch, drop_remainder=drop_remainder)

    first, stop = epochs
    return tf.data.Dataset.range(first, stop).flat_map(epoch).prefetch(tf.data.AUTOTUNE)
