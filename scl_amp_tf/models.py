"""Encoders and the twin-view SCL-AMP model (Fig. 1), plus the cross-entropy baseline.

* :func:`build_features`: image in [0, 1] -> pooled backbone features. Backbones: ``resnet50``
  (``keras.applications``, the paper's choice, the default), and two basic-block ResNets of
  our own for small data and fast tests, ``resnet18`` and ``resnet_tiny``.
* :func:`build_encoder`: features -> MLP projection head -> embedding of size d (Table I: 128).
* :class:`SclAmpModel`: custom ``train_step`` computing ``alpha * L_con + beta * L_arc``
  (Eq. 5) on the original image and two augmented views, which go through the encoder as one
  concatenated batch (one forward, one backward pass).
* :func:`build_classifier`: the plain backbone + softmax cross-entropy baseline (Eq. 3) that
  the paper compares with; it trains with Keras's own ``fit`` machinery.

Loss scaling under ``tf.distribute`` follows the Keras 3 rules: the per-example losses are
averaged over the *global* batch with ``tf.nn.compute_average_loss`` and the optimizer sums the
replicas' gradients, so a global batch gives the same update on 1 or R replicas. Nothing else
scales the loss (no compiled Keras loss is used in the custom step).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from scl_amp_tf import losses
from scl_amp_tf.layers import ArcMargin
from scl_amp_tf.layers import fuse_batchnorm

BACKBONES = ("resnet50", "resnet18", "resnet_tiny")
STEMS = ("imagenet", "small_pool", "small")  # basic_resnet's first layers
# --stem=auto: the ImageNet stem when its first block still sees at least this many pixels across
# (ResNet sees 56 at 224 px); below, the pooled small stem, whose first block sees half the image.
AUTO_STEM_MIN_BLOCK_SIZE = 24


def auto_stem(image_size, backbone):
    """The stem ``--stem=auto`` gives: ``imagenet`` for resnet50 (its only stem) and for images of
    at least 4 x AUTO_STEM_MIN_BLOCK_SIZE px; ``small_pool`` for smaller ones, where the ImageNet
    stem's 4x reduction leaves a few pixels of a small defect to the first block."""
    if backbone == "resnet50" or image_size // 4 >= AUTO_STEM_MIN_BLOCK_SIZE:
        return "imagenet"
    return "small_pool"
RESNET50_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                      "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
RESNET50_NOTOP_FILE = "~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


@keras.saving.register_keras_serializable(package="scl_amp_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Float images in [0, 1] with 1 or 3 channels -> the backbone's 3-channel input.

    A gray image is replicated to three channels (so ImageNet weights apply as they are).
    ``mode="caffe"`` is the ``keras.applications.resnet50`` convention (0-255, BGR, ImageNet
    mean subtracted); ``mode="symmetric"`` maps [0, 1] to [-1, 1] (our own ResNets).
    """

    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "symmetric"):
            raise ValueError(f"mode must be 'caffe' or 'symmetric', not {mode!r}")
        self.mode = mode

    def call(self, images):
        if images.shape[-1] == 1:
            images = tf.concat([images] * 3, axis=-1)
        if self.mode == "symmetric":
            return images * 2.0 - 1.0
        return images[..., ::-1] * 255.0 - tf.constant(self.CAFFE_MEAN_BGR, images.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _basic_block(x, filters, stride, name):
    y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, 1, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = keras.layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_proj")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(x)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([x, y]))


def basic_resnet(input_shape, blocks, widths, name, stem="imagenet"):
    """A ResNet of basic blocks (He et al. 2016, Table 1) ending in global average pooling.

    ``stem``: ``"imagenet"``, the paper's ResNet: a 7x7 convolution with stride 2, then 3x3 max
    pooling with stride 2 (a 52 px map is 13 px when the first block sees it); ``"small"``, the
    stem of He et al.'s CIFAR networks (section 4.2): one 3x3 convolution with stride 1 and no
    pooling, so the first block sees every pixel (16x the blocks' compute); ``"small_pool"``, the
    same convolution followed by the 3x3 max pooling with stride 2 (half the resolution, 4x).
    """
    if stem not in STEMS:
        raise ValueError(f"--stem={stem!r} must be one of {', '.join(STEMS)}.")
    inputs = keras.Input(input_shape)
    if stem == "imagenet":
        x = keras.layers.Conv2D(widths[0], 7, 2, padding="same", use_bias=False, name="stem_conv")(inputs)
    else:
        x = keras.layers.Conv2D(widths[0], 3, 1, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem in ("imagenet", "small_pool"):
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, (count, width) in enumerate(zip(blocks, widths)):
        for block in range(count):
            stride = 2 if block == 0 and stage > 0 else 1
            x = _basic_block(x, width, stride, name=f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name)


def _resnet50(input_shape, weights):
    if weights in (None, "none"):
        return keras.applications.ResNet50(include_top=False, weights=None, input_shape=input_shape,
                                           pooling="avg")
    try:
        return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape,
                                           pooling="avg")
    except Exception as e:  # the download or the file failed: say which file to put where
        source = "download" if weights == "imagenet" else f"file {weights}"
        raise ValueError(
            f"Could not load ResNet-50 ImageNet weights ({source}: {e}).\nFor offline use, fetch "
            f"{RESNET50_NOTOP_URL}\nand put it at {RESNET50_NOTOP_FILE} (then --backbone_weights=imagenet "
            "works), or pass its path: --backbone_weights=/path/to/"
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5") from e


def build_features(image_shape, backbone="resnet50", weights="none", bn_momentum=0.99, stem="imagenet",
                   fused_batchnorm=True):
    """Image ``[H, W, C]`` float in [0, 1] -> pooled backbone features (a ``keras.Model``).

    ``weights``: ``"none"`` (random init), ``"imagenet"`` (resnet50 only; Keras's download) or
    a path to a weights file for that backbone. ``bn_momentum`` is set on every batch-norm layer
    (Keras's default 0.99 leaves the moving statistics far from the data after the few hundred
    steps of a small-data run; see BENCHMARKS.md). ``stem``: see :func:`basic_resnet` (resnet18
    and resnet_tiny; Keras's ResNet-50 has the ImageNet stem only). ``fused_batchnorm``: train
    batch normalisation with TensorFlow's fused kernel (:class:`scl_amp_tf.layers.BatchNormalization`,
    the same computation, faster); False keeps Keras's own layer (the runs made before it).
    """
    image_shape = tuple(image_shape)
    backbone_shape = (*image_shape[:2], 3)
    if backbone == "resnet50":
        if stem != "imagenet":
            raise ValueError(f"--stem={stem}: resnet50 has the ImageNet stem only; use resnet18 or resnet_tiny.")
        net = _resnet50(backbone_shape, weights)
        mode = "caffe"
    elif backbone in ("resnet18", "resnet_tiny"):
        if weights == "imagenet":
            raise ValueError(f"--backbone_weights=imagenet exists only for resnet50, not {backbone}.")
        blocks, widths = ((2, 2, 2, 2), (64, 128, 256, 512)) if backbone == "resnet18" else \
            ((1, 1, 1, 1), (16, 32, 64, 128))
        net = basic_resnet(backbone_shape, blocks, widths, name=backbone, stem=stem)
        if weights not in (None, "none"):
            try:
                net.load_weights(weights)
            except Exception as e:  # a missing file, another format, another architecture
                raise ValueError(f"--backbone_weights={weights}: cannot load it into {backbone} ({e}). "
                                 f"Give a weights file saved from a {backbone} backbone of this "
                                 "project, or --backbone_weights=none.") from e
        mode = "symmetric"
    else:
        raise ValueError(f"--backbone={backbone!r} is not one of {', '.join(BACKBONES)}.")
    if fused_batchnorm:
        fuse_batchnorm(net)
    set_batchnorm(net, momentum=bn_momentum)
    inputs = keras.Input(image_shape, name="image")
    x = ImagePreprocessing(mode, name="preprocessing")(inputs)
    return keras.Model(inputs, net(x), name="features")


def set_batchnorm(model, momentum=None, synchronized=None):
    """Sets momentum and/or cross-replica synchronisation on every BatchNormalization layer."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            if momentum is not None:
                layer.momentum = float(momentum)
            if synchronized is not None:
                layer.synchronized = bool(synchronized)


def recalibrate_batchnorm(model, images):
    """"Precise BN": sets every batch-norm layer's moving statistics to those of ``images``.

    One forward pass in training mode with momentum 0, so each layer's moving mean and variance
    become exactly the statistics of ``images`` (e.g. the un-augmented training images, which
    match what the model sees at inference). Other weights are untouched.
    """
    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.synchronized) for layer in layers]
    for layer in layers:  # one local pass: no cross-replica sync outside a replica context
        layer.momentum, layer.synchronized = 0.0, False
    try:
        model(images, training=True)
    finally:
        for layer, (momentum, synchronized) in zip(layers, saved):
            layer.momentum, layer.synchronized = momentum, synchronized


def build_encoder(features, embedding_dim=128, projection_dim=512):
    """Backbone features -> MLP projection head (Dense-ReLU-Dense) -> embedding z (section III.A)."""
    x = keras.layers.Dense(projection_dim, activation="relu", name="projection_hidden")(features.output)
    z = keras.layers.Dense(embedding_dim, name="embedding", dtype="float32")(x)
    return keras.Model(features.input, z, name="encoder")


def build_classifier(features, num_classes):
    """The baseline: backbone features -> softmax layer (Eq. 3); outputs float32 logits."""
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(features.output)
    return keras.Model(features.input, logits, name="classifier")


class SclAmpModel(keras.Model):
    """The twin-view network of Fig. 1 trained with ``alpha * L_con + beta * L_arc`` (Eq. 5).

    Input batches are ``((x_n, x_i, x_j), y)``: the original images, two augmented views and
    the class ids. ``call`` returns the embedding of its images (the encoder).
    """

    def __init__(self, encoder, num_classes, *, temperature=0.5, margin=0.5, scale=30.0, alpha=0.75,
                 beta=0.25, symmetric=False, arc_on_views=False, class_aware_negatives=False, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.arc_margin = ArcMargin(num_classes, scale=scale, margin=margin, name="arc_margin")
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta
        self.symmetric = symmetric
        self.arc_on_views = arc_on_views
        self.class_aware_negatives = class_aware_negatives
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.con_tracker = keras.metrics.Mean(name="con_loss")
        self.arc_tracker = keras.metrics.Mean(name="arc_loss")
        self.arc_accuracy = keras.metrics.SparseCategoricalAccuracy(name="arc_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.con_tracker, self.arc_tracker, self.arc_accuracy]

    def call(self, images, training=False):
        return self.encoder(images, training=training)

    def build(self, input_shape=None):
        embedding_dim = self.encoder.output.shape[-1]
        self.arc_margin.build((None, embedding_dim))
        self.built = True

    def _per_example_losses(self, data, training):
        """Per-example L_con and L_arc; ``labelled`` is 0 for unlabeled images (class id -1),
        whose L_arc is 0 (``--unlabeled_data``: they feed L_con only)."""
        (x_n, x_i, x_j), y = data
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        labelled = tf.cast(y >= 0, tf.float32)
        y_arc = tf.maximum(y, 0)  # any valid class for unlabeled rows; their L_arc is masked out
        n = tf.shape(x_n)[0]
        z = self.encoder(tf.concat([x_n, x_i, x_j], axis=0), training=training)
        z_n, z_i, z_j = z[:n], z[n:2 * n], z[2 * n:]
        # Our extension: other images of the anchor's class are not negatives of L_con.
        con = losses.self_contrastive_per_example(z_n, z_i, z_j, temperature=self.temperature,
                                                  symmetric=self.symmetric,
                                                  labels=y if self.class_aware_negatives else None)
        if self.arc_on_views:  # our extension: the margin loss on every view, averaged
            logits = self.arc_margin(z, tf.tile(y_arc, [3]))
            arc = tf.reduce_mean(tf.reshape(losses.arc_margin_loss(logits, tf.tile(y_arc, [3])), [3, -1]), 0)
            logits = logits[:n]
        else:  # the paper: the margin loss on the original image's embedding
            logits = self.arc_margin(z_n, y_arc)
            arc = losses.arc_margin_loss(logits, y_arc)
        return con, arc * labelled, logits, y_arc, labelled

    def _global_sum(self, local):
        """``local`` summed over replicas (the global batch size, or its labelled count)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return local
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(local, tf.float32))
        return tf.cast(tf.round(total), local.dtype)

    def _update_metrics(self, con, arc, logits, y, labelled):
        n_labelled = tf.maximum(tf.reduce_sum(labelled), 1.0)
        arc_mean = tf.reduce_sum(arc) / n_labelled  # L_arc over the labelled images only
        self.loss_tracker.update_state(self.alpha * tf.reduce_mean(con) + self.beta * arc_mean,
                                       sample_weight=tf.cast(tf.shape(con)[0], tf.float32))
        self.con_tracker.update_state(con)
        self.arc_tracker.update_state(arc_mean, sample_weight=n_labelled)
        self.arc_accuracy.update_state(y, logits, sample_weight=labelled)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            con, arc, logits, y, labelled = self._per_example_losses(data, training=True)
            # alpha * mean(L_con) over every image + beta * mean(L_arc) over the labelled ones
            # (Eq. 5); without unlabeled images the factor is exactly 1.
            global_n = self._global_sum(tf.shape(con)[0])
            global_labelled = tf.maximum(self._global_sum(tf.reduce_sum(labelled)), 1.0)
            arc_factor = tf.cast(global_n, tf.float32) / global_labelled
            per_example = self.alpha * con + self.beta * arc * arc_factor
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_n)
            scaled = self.optimizer.scale_loss(loss)  # loss scaling under mixed_float16, else as is
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(con, arc, logits, y, labelled)

    def test_step(self, data):
        return self._update_metrics(*self._per_example_losses(data, training=False))
