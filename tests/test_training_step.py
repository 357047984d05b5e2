"""One SCL-AMP training step pinned to an independent computation: the total loss is
0.75 * L_con (Eq. 2, three views) + 0.25 * L_arc (Eq. 4, the original image's embedding), and the
update is plain SGD on the gradient of that total, here by central differences in float64 NumPy."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf.models import SclAmpModel

N, D_IN, D, K, TAU, S, M, LR = 4, 6, 3, 3, 0.5, 30.0, 0.5, 0.05


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _pair(a, b):
    """Eq. 1 for every anchor k of a: positive b[k], candidates the 2N vectors of [a; b] but a[k]."""
    views = list(a) + list(b)
    out = []
    for k in range(len(a)):
        numerator = math.exp(_cos(a[k], b[k]) / TAU)
        denominator = sum(math.exp(_cos(a[k], views[c]) / TAU) for c in range(2 * len(a)) if c != k)
        out.append(-math.log(numerator / denominator))
    return np.array(out)


def _total(w_enc, b_enc, w_arc, x_n, x_i, x_j, y):
    """0.75 * mean L_con (Eq. 2) + 0.25 * mean L_arc (Eq. 4 on z_n), all in float64."""
    z_n, z_i, z_j = (x @ w_enc + b_enc for x in (x_n, x_i, x_j))
    con = (_pair(z_n, z_i) + _pair(z_n, z_j) + _pair(z_i, z_j)) / 3.0
    arc = []
    for k in range(len(y)):
        cos = [_cos(z_n[k], w_arc[:, j]) for j in range(K)]
        theta = math.acos(max(-1.0, min(1.0, cos[y[k]])))
        target = math.cos(theta + M) if theta <= math.pi - M else cos[y[k]] - M * math.sin(M)
        logits = [S * (target if j == y[k] else cos[j]) for j in range(K)]
        arc.append(-logits[y[k]] + math.log(sum(math.exp(v) for v in logits)))
    return 0.75 * float(np.mean(con)) + 0.25 * float(np.mean(arc))


def test_one_training_step_is_eq_5_and_its_sgd_update():
    rng = np.random.default_rng(0)
    inputs = keras.Input((D_IN,))
    encoder = keras.Model(inputs, keras.layers.Dense(D, name="embedding")(inputs), name="encoder")
    model = SclAmpModel(encoder, K, temperature=TAU, margin=M, scale=S, alpha=0.75, beta=0.25)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(LR))
    x_n, x_i, x_j = (rng.normal(size=(N, D_IN)).astype(np.float32) for _ in range(3))
    y = np.array([0, 1, 2, 1])
    w_enc, b_enc = (v.numpy().astype(np.float64) for v in encoder.get_layer("embedding").weights)
    w_arc = model.arc_margin.kernel.numpy().astype(np.float64)
    x64 = [x.astype(np.float64) for x in (x_n, x_i, x_j)]

    logs = model.train_step(((tf.constant(x_n), tf.constant(x_i), tf.constant(x_j)), tf.constant(y)))
    expected = _total(w_enc, b_enc, w_arc, *x64, y)
    assert float(logs["loss"]) == pytest.approx(expected, rel=1e-5, abs=1e-5)

    params = [w_enc, b_enc, w_arc]
    for index, (param, after) in enumerate(zip(params, (*encoder.get_layer("embedding").weights,
                                                        model.arc_margin.kernel))):
        gradient = np.zeros_like(param)
        for position in np.ndindex(param.shape):
            values = []
            for step in (1e-6, -1e-6):
                shifted = [p.copy() for p in params]
                shifted[index][position] += step
                values.append(_total(*shifted, *x64, y))
            gradient[position] = (values[0] - values[1]) / 2e-6
        np.testing.assert_allclose(after.numpy(), param - LR * gradient, rtol=0, atol=2e-5)
        assert np.abs(LR * gradient).max() > 1e-3  # the step moved this parameter measurably

