"""Custom Keras layers of the SCL-AMP framework (paper Section III-B)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

__all__ = ["ArcMargin", "BatchNormalization", "fuse_batchnorm"]


@keras.saving.register_keras_serializable(package="scl_amp_tf")
class ArcMargin(keras.layers.Layer):
    """Arc Margin Penalty block of the AMP module (ArcFace logits, Eq. 4).

    With ``W`` the ``kernel`` of shape ``(embedding_dim, num_classes)`` and
    ``cos(theta_j) = <x/||x||, W_j/||W_j||>``, the layer returns the logits of
    the softmax in Eq. (4)::

        logit_j = s * cos(theta_j)                  for j != y
        logit_y = s * cos(theta_y + m)              if theta_y <= pi - m
                = s * (cos(theta_y) - m * sin(m))   otherwise

    The second case is ArcFace's guard that keeps the target logit monotonic in
    ``theta_y`` when ``theta_y + m`` would exceed ``pi``.  The margin is applied
    only where ``labels`` are given; without labels (inference) the output is
    ``s * cos(theta_j)`` for every class.  Feed the result to
    :func:`scl_amp_tf.losses.arc_margin_loss` to get ``L_Arc`` of Eq. (4).

    ``cos(theta + m)`` is computed as ``cos t cos m - sin t sin m`` with
    ``sin t = sqrt(clip(1 - cos^2 t, eps, 1))`` -- no ``acos`` (not convertible
    to TFLite and with an infinite gradient at ``cos = +-1``), so gradients stay
    finite everywhere.  The condition ``theta <= pi - m`` is evaluated as
    ``cos t >= cos(pi - m) = -cos m``.

    The computation always runs in float32 (inputs are cast, the kernel is a
    float32 variable and is not autocast), so the layer can sit at the end of a
    ``mixed_float16`` model and still return float32 logits.

    Args:
      num_classes: number of classes ``n``.
      scale: the feature scale ``s``.
      margin: the additive angular margin ``m`` (radians).

    Call args:
      embeddings: ``[N, d]`` float tensor.
      labels: optional int class ids of shape ``[N]`` or ``[N, 1]``.

    Returns:
      ``[N, num_classes]`` float32 logits.
    """

    def __init__(self, num_classes, scale=30.0, margin=0.5, **kwargs):
        # The math is done in float32 on purpose: never cast the inputs to the
        # policy's compute dtype (they are cast to float32 in call()).
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.margin = float(margin)
        self._cos_m = math.cos(self.margin)
        self._sin_m = math.sin(self.margin)
        # cos(pi - m): theta <= pi - m  <=>  cos(theta) >= -cos(m).
        self._threshold = -math.cos(self.margin)
        # ArcFace's fallback penalty beyond the threshold: m * sin(pi - m).
        self._mm = self.margin * math.sin(self.margin)
        self._eps = 1e-7

    def build(self, embeddings_shape, labels_shape=None):
        embedding_dim = embeddings_shape[-1]
        if embedding_dim is None:
            raise ValueError(
                "ArcMargin needs a known embedding dimension (last axis); "
                f"got input shape {embeddings_shape}."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(embedding_dim), self.num_classes),
            initializer="glorot_uniform",
            trainable=True,
            dtype="float32",
            # Layer(autocast=False) alone is not enough: with a mixed policy and
            # no enclosing autocast scope, Layer.__call__ still opens
            # AutocastScope(compute_dtype), which would read this as float16.
            autocast=False,
        )

    def _normalized_kernel(self):
        return tf.math.l2_normalize(
            tf.cast(tf.convert_to_tensor(self.kernel), tf.float32),
            axis=0,
            epsilon=1e-12,
        )

    def cosine(self, embeddings):
        """Unscaled cosine matrix ``cos(theta_j)``, ``[N, num_classes]`` float32.

        For inference (nearest class centre in angular space); no margin.
        """
        if not self.built:
            self.build(tuple(embeddings.shape))
        x = tf.math.l2_normalize(
            tf.cast(embeddings, tf.float32), axis=-1, epsilon=1e-12
        )
        return tf.matmul(x, self._normalized_kernel())

    def call(self, embeddings, labels=None):
        cos_t = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos_t
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        sin_t = tf.sqrt(tf.clip_by_value(1.0 - tf.square(cos_t), self._eps, 1.0))
        cos_t_m = cos_t * self._cos_m - sin_t * self._sin_m  # cos(theta + m)
        target = tf.where(cos_t >= self._threshold, cos_t_m, cos_t - self._mm)
        one_hot = tf.one_hot(
            labels, self.num_classes, on_value=True, off_value=False
        )
        return self.scale * tf.where(one_hot, target, cos_t)

    def compute_output_spec(self, embeddings, labels=None):
        return keras.KerasTensor(
            tuple(embeddings.shape[:-1]) + (self.num_classes,), dtype="float32"
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "scale": self.scale,
                "margin": self.margin,
            }
        )
        return config


# cuDNN's smallest batch-norm epsilon (CUDNN_BN_MIN_EPSILON is 1e-5), as Keras 2 checked before fusing
CUDNN_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="scl_amp_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras's ``BatchNormalization`` whose training pass runs as TensorFlow's one fused kernel.

    It keeps Keras's class name on purpose: Keras names the weights in ``.weights.h5`` files (the
    runs' ``backbone.weights.h5``, the resume checkpoints) by class name, so files written with
    either layer load into the other.

    Keras 3 builds batch normalisation in training from a dozen small ops (``moments``, then
    ``(x - mean) * rsqrt(var + eps) * gamma + beta``) and so does its gradient; in a small
    network on a CPU these ops take a large share of the step (BENCHMARKS.md, "Fused batch
    normalisation"). ``tf.compat.v1.nn.fused_batch_norm`` computes the same normalisation (the batch's
    mean and biased variance over N, H, W) and its gradient in one kernel each (oneDNN on CPU,
    cuDNN on GPU). The moving statistics are updated as Keras does, with the biased variance
    (the kernel returns the unbiased one, which is scaled back by ``(n - 1) / n``).

    Same weights, same configuration, the same outputs and gradients up to float round-off
    (tested against Keras's layer and NumPy). Only the training pass of a 4-D channels-last
    input in float32 or half precision changes; inference, masks, renormalisation, float64, an
    epsilon under cuDNN's minimum and ``synchronized`` (cross-replica statistics) take Keras's own
    path, so SavedModel and TFLite exports are unchanged (``.keras`` files name this class, and
    load where scl_amp_tf is installed, as they already need its other layers).

    :func:`fuse_batchnorm` switches existing layers to this class in place, so it may override
    only ``call`` and its helpers: Keras binds ``build`` and ``quantize`` wrappers when a layer is
    created, and overrides of those would be ignored on switched layers.
    """

    def _fusable(self, inputs, training, mask):
        return (training and self.trainable and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16)  # the kernel has no float64
                and self.epsilon >= CUDNN_MIN_EPSILON)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as Keras's layer: statistics in float32 under mixed precision
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        # the kernel's variance divides by max(n - 1, 1): back to Keras's biased one (over n)
        variance = unbiased_variance * tf.maximum(count - 1.0, 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def fuse_batchnorm(model):
    """Switches every ``keras.layers.BatchNormalization`` layer of ``model`` (nested models
    included) to this module's :class:`BatchNormalization`, in place: the same layer objects with
    the same weights, configuration and call signature, so nothing is rebuilt and no random draw
    is spent (a seeded run initialises as with Keras's layers). Returns how many were switched."""
    switched = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = BatchNormalization
            switched += 1
    return switched
