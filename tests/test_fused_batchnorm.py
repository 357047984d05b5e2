"""scl_amp_tf.layers.BatchNormalization: Keras's batch normalisation, trained in one fused kernel.

Checked against a NumPy reading of batch normalisation (outputs and moving statistics) and
against Keras's own layer (gradients), then inside whole backbones (outputs, weights, files).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf import models
from scl_amp_tf.layers import BatchNormalization as FusedBatchNormalization
from scl_amp_tf.layers import fuse_batchnorm


def numpy_batchnorm(x, gamma, beta, moving_mean, moving_variance, momentum, epsilon):
    """Training-mode batch normalisation over N, H, W in float64: the output, then the moving
    mean and variance after one update (biased variance, as Keras's layer keeps)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(0, 1, 2))
    variance = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    y = (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
    return (y, moving_mean * momentum + mean * (1 - momentum),
            moving_variance * momentum + variance * (1 - momentum))


def _layers(channels, momentum=0.9, **kwargs):
    rng = np.random.default_rng(1)
    gamma, beta = rng.uniform(0.5, 2.0, channels), rng.normal(size=channels)
    moving_mean, moving_variance = rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)
    out = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=momentum, **kwargs)
        layer.build((None, None, None, channels))
        for variable, value in ((layer.moving_mean, moving_mean), (layer.moving_variance, moving_variance)):
            variable.assign(value.astype(np.float32))
        if layer.scale:
            layer.gamma.assign(gamma.astype(np.float32))
        if layer.center:
            layer.beta.assign(beta.astype(np.float32))
        out.append(layer)
    return out, (gamma if kwargs.get("scale", True) else np.ones(channels),
                 beta if kwargs.get("center", True) else np.zeros(channels), moving_mean, moving_variance)


@pytest.mark.parametrize("shape,kwargs", [((6, 5, 4, 3), {}), ((2, 3, 3, 4), {"scale": False, "center": False}),
                                          ((2, 1, 1, 2), {}),  # two values per channel: variance over n, not n - 1
                                          ((1, 1, 1, 2), {})])  # one value per channel: variance 0
def test_training_pass_matches_numpy(shape, kwargs):
    (_, fused), (gamma, beta, moving_mean, moving_variance) = _layers(shape[-1], **kwargs)
    x = np.random.default_rng(0).normal(2.0, 3.0, shape).astype(np.float32)
    want_y, want_mean, want_variance = numpy_batchnorm(x, gamma, beta, moving_mean, moving_variance, 0.9,
                                                       fused.epsilon)
    y = np.asarray(fused(x, training=True))
    np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), want_variance, rtol=1e-5, atol=1e-5)


def test_gradients_and_updates_match_keras_layer():
    (plain, fused), _ = _layers(3)
    x = tf.constant(np.random.default_rng(0).normal(1.0, 2.0, (8, 5, 5, 3)).astype(np.float32))
    grads = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) ** 3)  # a loss that weights the outputs unequally
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for want, got in zip(*grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-3 * float(np.abs(want).max()))
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-6)


def test_inference_and_frozen_layers_use_the_moving_statistics():
    (plain, fused), (gamma, beta, moving_mean, moving_variance) = _layers(3)
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    want = (x - moving_mean) / np.sqrt(moving_variance + fused.epsilon) * gamma + beta
    np.testing.assert_allclose(np.asarray(fused(x, training=False)), want, rtol=1e-5, atol=1e-5)
    fused.trainable = False  # Keras: a frozen batch-norm layer runs in inference mode
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), moving_mean, rtol=1e-6)


def test_a_backbone_with_fused_batchnorm_computes_what_keras_layers_compute(tmp_path):
    built, next_draws = [], []
    for fused_batchnorm in (False, True):  # one seed initialises both alike, and no random draw is spent
        keras.utils.set_random_seed(0)
        built.append(models.build_features((32, 32, 1), "resnet_tiny", fused_batchnorm=fused_batchnorm,
                                           stem="small_pool"))
        next_draws.append(keras.random.normal((4,)).numpy())  # what the next layer's initialiser would get
    plain, fused = built
    np.testing.assert_array_equal(next_draws[1], next_draws[0])
    for a, b in zip(fused.weights, plain.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    kinds = {type(layer) for layer in fused._flatten_layers(recursive=True)}
    assert FusedBatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    assert fuse_batchnorm(fused) == 0  # nothing left to switch
    assert [w.path for w in fused.weights] == [w.path for w in plain.weights]
    x = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-3, atol=1e-3)
    for a, b in zip(fused.weights, plain.weights):  # both updated their moving statistics alike
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    # the default backbone is fused; weight files of either kind load into the other (runs made before)
    for source, target_fused in ((plain, True), (fused, False)):
        path = str(tmp_path / f"from_fused_{not target_fused}.weights.h5")
        source.get_layer("resnet_tiny").save_weights(path)
        loaded = models.build_features((32, 32, 1), "resnet_tiny", weights=path, stem="small_pool",
                                       fused_batchnorm=target_fused)
        assert isinstance(loaded.get_layer("resnet_tiny").get_layer("stem_bn"), FusedBatchNormalization) \
            == target_fused
        np.testing.assert_allclose(loaded(x, training=False), source(x, training=False), rtol=1e-5, atol=1e-5)
    # and a fused encoder round-trips through a .keras file as fused layers
    file = str(tmp_path / "features.keras")
    fused.save(file)
    reloaded = keras.models.load_model(file)
    assert isinstance(reloaded.get_layer("resnet_tiny").get_layer("stem_bn"), FusedBatchNormalization)
    np.testing.assert_allclose(reloaded(x, training=False), fused(x, training=False), rtol=1e-6, atol=1e-6)


def test_mixed_precision_keeps_float32_statistics():
    (_, fused), (gamma, beta, moving_mean, moving_variance) = _layers(3, dtype="mixed_bfloat16")
    x = np.random.default_rng(0).normal(1.0, 2.0, (4, 3, 3, 3)).astype(np.float32)
    y = fused(tf.constant(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16 and fused.moving_mean.dtype == "float32"
    x16 = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()
    want_y, want_mean, want_variance = numpy_batchnorm(x16, gamma, beta, moving_mean, moving_variance, 0.9,
                                                       fused.epsilon)
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), want_y, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(fused.moving_mean.numpy(), want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), want_variance, rtol=1e-5, atol=1e-5)


def test_float64_takes_keras_path():  # the fused kernel has no float64; Keras's formula serves it
    (_, fused), (gamma, beta, moving_mean, moving_variance) = _layers(2, dtype="float64")
    x = np.random.default_rng(0).normal(1.0, 2.0, (3, 4, 4, 2))
    want_y, want_mean, want_variance = numpy_batchnorm(x, gamma, beta, moving_mean, moving_variance, 0.9,
                                                       fused.epsilon)
    y = fused(tf.constant(x), training=True)
    assert y.dtype == tf.float64
    np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_mean.numpy(), want_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), want_variance, rtol=1e-6)


def _kernels(layer, x, training):
    """The op types of a traced call of ``layer``: which kernel the call runs."""
    graph = tf.function(lambda v: layer(v, training=training)).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


def test_the_fused_kernel_runs_in_training_only():
    (_, fused), _ = _layers(3)
    x = tf.zeros((2, 3, 3, 3))
    assert "FusedBatchNormV3" in _kernels(fused, x, training=True)
    assert "FusedBatchNormV3" not in _kernels(fused, x, training=False)
    for change in ({"trainable": False}, {"synchronized": True}, {"epsilon": 1e-6}):
        (_, other), _ = _layers(3)
        for key, value in change.items():
            setattr(other, key, value)
        assert "FusedBatchNormV3" not in _kernels(other, x, training=True), change
    (_, fused64), _ = _layers(3, dtype="float64")
    assert "FusedBatchNormV3" not in _kernels(fused64, tf.zeros((2, 3, 3, 3), tf.float64), training=True)


def test_xla_compiles_the_fused_kernel_to_the_same_result():
    x = tf.constant(np.random.default_rng(0).normal(1.0, 2.0, (4, 5, 5, 3)).astype(np.float32))
    results = []
    for jit_compile in (False, True):
        (_, fused), _ = _layers(3)
        step = tf.function(lambda v, layer=fused: layer(v, training=True), jit_compile=jit_compile)
        results.append((step(x).numpy(), fused.moving_variance.numpy()))
    for plain, compiled in zip(*results):
        np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-5)
