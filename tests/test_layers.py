"""Tests of scl_amp_tf.layers.ArcMargin against a NumPy reading of Eq. 4."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf.layers import ArcMargin


# ---------------------------------------------------------------------------
# Reference (np.arccos is fine here; the layer must not use acos).
# ---------------------------------------------------------------------------
def ref_arc_logits(x, w, labels, scale, margin):
    """ArcFace logits of Eq. 4 in float64, with ArcFace's theta > pi - m guard."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = xn @ wn
    out = scale * cos
    if labels is None:
        return out
    for k, y in enumerate(np.reshape(labels, [-1])):
        c = float(np.clip(cos[k, y], -1.0, 1.0))
        theta = np.arccos(c)
        if theta <= math.pi - margin:
            out[k, y] = scale * math.cos(theta + margin)
        else:
            out[k, y] = scale * (c - margin * math.sin(margin))
    return out


def _layer_with_kernel(w, scale, margin, **kwargs):
    layer = ArcMargin(w.shape[1], scale=scale, margin=margin, **kwargs)
    layer.build((None, w.shape[0]))
    layer.kernel.assign(w)
    return layer


def _inputs(rng, n, d, c, margin, n_beyond):
    """Random embeddings; the first `n_beyond` rows have theta_y + m > pi."""
    w = rng.normal(size=(d, c)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    for k in range(n_beyond):
        noise = rng.normal(size=d)
        noise *= 0.3 * margin / np.linalg.norm(noise)  # angle ~ 0.3 m from -W_y
        x[k] = (-wn[:, labels[k]] + noise) * rng.uniform(0.5, 3.0)
    return x, w, labels


@pytest.mark.parametrize("scale", [1.0, 30.0, 64.0])
@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n", [1, 4, 17])
def test_matches_reference(n, margin, scale):
    rng = np.random.default_rng(100 * n + int(10 * margin) + int(scale))
    d, c = 8, 5
    n_beyond = min(n, 3)
    x, w, labels = _inputs(rng, n, d, c, margin, n_beyond)
    # The constructed rows really are in the guard branch.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    theta_y = np.arccos(np.clip((xn @ wn)[np.arange(n), labels], -1, 1))
    assert np.all(theta_y[:n_beyond] > math.pi - margin)

    layer = _layer_with_kernel(w, scale, margin)
    want = ref_arc_logits(x, w, labels, scale, margin)
    for lab in (labels, labels[:, None].astype(np.int64)):
        got = layer(x, lab)
        assert got.shape == (n, c) and got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5 * scale)

    # Without labels: scale * cos for every class, and cosine() is unscaled.
    plain = ref_arc_logits(x, w, None, scale, margin)
    np.testing.assert_allclose(layer(x).numpy(), plain, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(
        layer.cosine(x).numpy(), plain / scale, rtol=1e-5, atol=1e-6
    )


def test_margin_only_touches_the_target_column():
    rng = np.random.default_rng(0)
    x, w, labels = _inputs(rng, 6, 8, 5, 0.5, 0)
    layer = _layer_with_kernel(w, 30.0, 0.5)
    with_m = layer(x, labels).numpy()
    without = layer(x).numpy()
    target = np.zeros_like(with_m, bool)
    target[np.arange(6), labels] = True
    np.testing.assert_array_equal(with_m[~target], without[~target])
    assert np.all(with_m[target] < without[target])  # the margin is a penalty


def test_no_acos_in_graph():
    layer = ArcMargin(3)
    fn = tf.function(lambda x, y: layer(x, y))
    graph = fn.get_concrete_function(
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)
    ).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "Acos" not in op_types


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0])
def test_gradients_finite_at_cos_plus_minus_one(margin):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    layer = _layer_with_kernel(w, 30.0, margin)
    # Embeddings equal to a kernel column (cos = 1) and to its negative (cos = -1).
    x = tf.constant(np.stack([w[:, 0], -w[:, 0], w[:, 2], -w[:, 3]]))
    labels = tf.constant([0, 0, 2, 3])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        logits = layer(x, labels)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        )
        target_sum = tf.reduce_sum(logits)
    for target in (loss, target_sum):
        gx, gw = tape.gradient(target, [x, layer.kernel])
        assert np.all(np.isfinite(gx.numpy()))
        assert np.all(np.isfinite(gw.numpy()))
    assert np.all(np.isfinite(logits.numpy()))


def test_float16_input_gives_float32_output():
    rng = np.random.default_rng(2)
    x, w, labels = _inputs(rng, 5, 8, 4, 0.5, 1)
    layer = _layer_with_kernel(w, 30.0, 0.5)
    x16 = x.astype(np.float16)
    want = ref_arc_logits(x16, w, labels, 30.0, 0.5)
    for out in (layer(tf.constant(x16), labels), layer(x16), layer.cosine(x16)):
        assert out.dtype == tf.float32
    np.testing.assert_allclose(
        layer(tf.constant(x16), labels).numpy(), want, rtol=1e-4, atol=1e-3
    )


def test_mixed_precision_policy_computes_in_float32():
    rng = np.random.default_rng(3)
    x, w, labels = _inputs(rng, 5, 8, 4, 0.5, 1)
    layer = _layer_with_kernel(w, 30.0, 0.5, dtype="mixed_float16")
    assert layer.kernel.dtype == "float32"
    got = layer(tf.constant(x.astype(np.float16)), labels)
    assert got.dtype == tf.float32
    want = ref_arc_logits(x.astype(np.float16), w, labels, 30.0, 0.5)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
    # Symbolic output spec agrees with the eager dtype.
    emb = keras.Input((8,), dtype="float16")
    assert layer(emb).dtype == "float32"


def test_get_config_round_trip():
    rng = np.random.default_rng(4)
    x, w, labels = _inputs(rng, 3, 8, 5, 0.3, 1)
    layer = _layer_with_kernel(w, 16.0, 0.3, name="arc")
    config = layer.get_config()
    assert config["num_classes"] == 5
    assert config["scale"] == 16.0 and config["margin"] == 0.3
    clone = ArcMargin.from_config(config)
    clone.build((None, 8))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, labels).numpy(), layer(x, labels).numpy())

    serialized = keras.layers.serialize(layer)
    assert serialized["registered_name"] == "scl_amp_tf>ArcMargin"
    restored = keras.layers.deserialize(serialized)
    assert isinstance(restored, ArcMargin)
    assert (restored.num_classes, restored.scale, restored.margin) == (5, 16.0, 0.3)


def test_model_save_load_keras_file(tmp_path):
    rng = np.random.default_rng(5)
    d, c = 8, 5
    x, w, labels = _inputs(rng, 4, d, c, 0.5, 1)
    emb = keras.Input((d,), name="embeddings")
    lab = keras.Input((), dtype="int32", name="labels")
    arc = ArcMargin(c, scale=20.0, margin=0.5, name="arc")
    train_model = keras.Model([emb, lab], arc(emb, lab))
    infer_model = keras.Model(emb, arc(emb))
    arc.kernel.assign(w)

    for model, inputs in (
        (train_model, [x, labels.astype(np.int32)]),
        (infer_model, x),
    ):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(
            loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0),
            rtol=1e-6, atol=1e-6,
        )
        np.testing.assert_allclose(loaded.get_layer("arc").kernel.numpy(), w)
