"""Where LiteRT's int8 model loses the Keras model's answers: the error budget of every rounding
point (research; used by ``bench/int8_error_budget.py`` and the tests, not by the export).

:func:`int8_simulation` builds :mod:`scl_amp_tf.quantization`'s simulator of an encoder with its
calibrated ranges; :func:`error_budget` then measures the embedding error with everything rounded,
and with all weights, all activations, or one activation tensor at a time kept exact.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from scl_amp_tf import quantization


def int8_simulation(encoder, calibration_images, ranges="mse"):
    """The calibrated int8 simulation of an encoder (left unchanged); images are floats in [0, 1]."""
    simulated = quantization.simulate_int8(quantization.fold_batch_norm(encoder))
    quantization.calibrate(simulated, calibration_images, ranges)
    return simulated


def simulated_embeddings(model, images, batch_size=256):
    """L2-normalised embeddings of float images in [0, 1] (eager: the rounding switches are Python)."""
    return np.concatenate([tf.math.l2_normalize(model(tf.constant(images[i:i + batch_size], tf.float32),
                                                      training=False), axis=-1).numpy()
                           for i in range(0, len(images), batch_size)])


def error_budget(simulated, images, reference, predict=None):
    """What each rounding point of the int8 model costs.

    ``reference``: the float model's L2-normalised embeddings of ``images``; ``predict``
    (optional): embeddings -> class ids (e.g. ``ReferenceDatabase.predict``). Returns rows
    ``{"exact": what is kept in float, "error": mean (1 - cos) to the reference,
    "top1_agreement": ...}``: first everything rounded (``"nothing"``), then all weights exact,
    all activations exact, then each activation tensor exact alone. Leaves everything rounded.
    """
    decisions = predict(reference) if predict is not None else None

    def row(exact):
        embedded = simulated_embeddings(simulated, images)
        figure = {"exact": exact, "error": float(np.mean(1.0 - np.sum(embedded * reference, axis=1)))}
        if predict is not None:
            figure["top1_agreement"] = float(np.mean(predict(embedded) == decisions))
        return figure

    rows = [row("nothing")]
    quantization.set_rounding(simulated, weights=False)
    rows.append(row("all weights"))
    quantization.set_rounding(simulated, activations=False)
    rows.append(row("all activations"))
    quantization.set_rounding(simulated)
    for layer in quantization.activation_quantizers(simulated):
        layer.mode = "exact"
        rows.append(row(layer.name))
        layer.mode = "round"
    return rows
