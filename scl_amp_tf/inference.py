"""A trained network's outputs for images: the one ``embed`` every command uses.

Contract: ``images`` are uint8 ``[N, H, W, C]`` at the network's input size (as the run folder
and ``data`` hold them); they are scaled to [0, 1] floats here, exactly as in training, and the
network's raw outputs come back as float32 NumPy (an SCL-AMP encoder's embeddings, not
normalised; a CE classifier's softmax; the pooled backbone features of :func:`features_of`).
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import data as data_lib
from scl_amp_tf import invariance
from scl_amp_tf.reference import l2_normalize


def embed(model, images, batch_size=128, tta="none", average="unit"):
    """The model's outputs for uint8 images, computed on this process alone (no collectives, so
    under any strategy; a multi-worker run's chief evaluates while the others have finished).

    ``tta="dihedral"`` (:mod:`scl_amp_tf.invariance`): the mean over the image's 8 rotations and
    flips of the L2-normalised outputs (``average="unit"``: embeddings, features) or of the raw
    outputs (``average="raw"``: a classifier's softmax)."""
    return Embedder(model, batch_size)(images, tta=tta, average=average)


# One traced forward pass per live model, shared by every embed() call on it: a training run
# embeds its training and test images, a RunPredictor embeds batch after batch, and each new
# tf.function would trace the network again (seconds for a small network; more than embedding a
# few hundred images). Weak keys: the cache never keeps a model alive.
_FORWARDS = weakref.WeakKeyDictionary()


def forward(model):
    """``model(x, training=False)`` as a tf.function traced once for any batch size (its input
    signature leaves the batch dimension open), cached for as long as ``model`` lives."""
    try:
        return _FORWARDS[model]
    except KeyError:
        pass
    ref = weakref.ref(model)  # the function must not hold the model (its key) alive
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    function = tf.function(lambda x: ref()(x, training=False), input_signature=[spec])
    _FORWARDS[model] = function
    return function


class Embedder:
    """:func:`embed` for one model: the batching, the scaling to [0, 1] and the test-time
    augmentation around the model's cached :func:`forward` pass."""

    def __init__(self, model, batch_size=128):
        self.model = model
        self.batch_size = batch_size
        self._forward = forward(model)

    def __call__(self, images, tta="none", average="unit"):
        if invariance.check(tta) == "none":
            return self._outputs(images)
        if average not in ("unit", "raw"):
            raise ValueError(f"average={average!r} must be unit or raw.")
        total = None
        for index in range(invariance.NUM_VIEWS[tta]):
            out = self._outputs(invariance.dihedral_view_np(images, index))
            out = l2_normalize(out) if average == "unit" else out
            total = out if total is None else total + out
        return total / invariance.NUM_VIEWS[tta]

    def _outputs(self, images):
        outputs = [self._forward(data_lib.to_float(images[i:i + self.batch_size])).numpy()
                   for i in range(0, len(images), self.batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, *self.model.output_shape[1:]), np.float32)


def representation_model(encoder, representation):
    """The network a reference database is built on: ``"embedding"``, the run's own network (an
    SCL-AMP encoder's embeddings, section III.A); ``"backbone"``, its pooled backbone features
    (:func:`features_of`, before the projection head or the CE softmax layer)."""
    if representation == "backbone":
        return features_of(encoder)
    if representation == "embedding":
        return encoder
    raise ValueError(f"representation={representation!r} must be embedding or backbone.")


def features_of(encoder):
    """The pooled-backbone-features model inside a run's encoder (SCL-AMP) or classifier (CE)."""
    head = "projection_hidden" if any(layer.name == "projection_hidden" for layer in encoder.layers) else "logits"
    return keras.Model(encoder.input, encoder.get_layer(head).input, name="features")
