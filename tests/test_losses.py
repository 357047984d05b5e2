"""Tests of scl_amp_tf.losses against an independent NumPy reading of Eq. 1-2."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf.losses import (
    arc_margin_loss,
    self_contrastive_loss,
    self_contrastive_per_example,
)


# ---------------------------------------------------------------------------
# Reference implementation, written from the formulas with explicit loops.
# ---------------------------------------------------------------------------
def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def ref_pair_loss(a, b, tau, labels=None):
    """Eq. (1): l_k(a, b) for every k; candidates = the 2N vectors of [a; b].

    With ``labels``: candidates of the anchor's class other than the positive are skipped.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n = a.shape[0]
    views = [a[c] for c in range(n)] + [b[c] for c in range(n)]
    out = np.zeros(n)
    for k in range(n):
        numerator = math.exp(_cos(a[k], b[k]) / tau)
        denominator = 0.0
        for c in range(2 * n):
            if c == k:  # the indicator 1[c != k]: skip the anchor itself
                continue
            if labels is not None and c != n + k and labels[c % n] == labels[k]:
                continue  # a same-class image is not a negative
            denominator += math.exp(_cos(a[k], views[c]) / tau)
        out[k] = -math.log(numerator / denominator)
    return out


def ref_scl(z_n, z_i, z_j, tau, symmetric=False, labels=None):
    """Eq. (2): per-example mean of the three pair losses, and the batch mean."""

    def pair(a, b):
        loss = ref_pair_loss(a, b, tau, labels)
        if symmetric:
            loss = 0.5 * (loss + ref_pair_loss(b, a, tau, labels))
        return loss

    per_example = (pair(z_n, z_i) + pair(z_n, z_j) + pair(z_i, z_j)) / 3.0
    total = 0.0
    for k in range(len(per_example)):
        total += per_example[k]
    return per_example, total / len(per_example)


def _views(rng, n, d=8, dtype=np.float32):
    return [rng.normal(size=(n, d)).astype(dtype) for _ in range(3)]


# ---------------------------------------------------------------------------
# Single device.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_matches_reference(n, tau, symmetric):
    rng = np.random.default_rng(1000 * n + int(10 * tau) + symmetric)
    z = _views(rng, n)
    want_per, want = ref_scl(*z, tau, symmetric)
    got_per = self_contrastive_per_example(*z, temperature=tau, symmetric=symmetric)
    got = self_contrastive_loss(*z, temperature=tau, symmetric=symmetric)
    assert got_per.shape == (n,)
    assert got_per.dtype == tf.float32 and got.dtype == tf.float32
    np.testing.assert_allclose(got_per.numpy(), want_per, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("n", [1, 5, 16])
def test_class_aware_negatives_match_reference(n, symmetric):
    rng = np.random.default_rng(77 + n + symmetric)
    z = _views(rng, n)
    labels = rng.integers(0, 3, n)
    want_per, want = ref_scl(*z, 0.3, symmetric, labels=labels)
    got_per = self_contrastive_per_example(*z, temperature=0.3, symmetric=symmetric, labels=labels)
    np.testing.assert_allclose(got_per.numpy(), want_per, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        self_contrastive_loss(*z, temperature=0.3, symmetric=symmetric, labels=labels).numpy(),
        want, rtol=1e-5, atol=1e-5)
    # All labels distinct: the plain Eq. (1); the masking can change the value only through classes.
    distinct = self_contrastive_per_example(*z, temperature=0.3, symmetric=symmetric, labels=np.arange(n))
    plain = self_contrastive_per_example(*z, temperature=0.3, symmetric=symmetric)
    np.testing.assert_allclose(distinct.numpy(), plain.numpy(), rtol=1e-6, atol=1e-6)
    if n > 3:  # some anchor shares its class: fewer negatives, lower loss
        assert np.all(got_per.numpy() <= plain.numpy() + 1e-6)
        assert np.any(got_per.numpy() < plain.numpy() - 1e-4)


@pytest.mark.parametrize("symmetric", [False, True])
def test_small_temperature_is_stable(symmetric):
    rng = np.random.default_rng(7)
    z = _views(rng, 12)
    z[1] = z[0] + 0.05 * z[1]  # near-identical views: large positive logits
    want_per, _ = ref_scl(*z, 0.05, symmetric)
    got_per = self_contrastive_per_example(*z, temperature=0.05, symmetric=symmetric)
    assert np.all(np.isfinite(got_per.numpy()))
    np.testing.assert_allclose(got_per.numpy(), want_per, rtol=1e-4, atol=1e-4)


def test_n_equals_one_is_zero():
    # With N = 1 the only candidate left in the denominator is the positive.
    rng = np.random.default_rng(3)
    z = _views(rng, 1)
    np.testing.assert_allclose(self_contrastive_loss(*z).numpy(), 0.0, atol=1e-6)


def test_scale_invariance():
    rng = np.random.default_rng(11)
    z = _views(rng, 6)
    base = self_contrastive_per_example(*z, temperature=0.2)
    scales = [np.float32(0.01), np.float32(37.0), rng.uniform(0.1, 10, (6, 1))]
    for s in scales:
        scaled = [(zz * s).astype(np.float32) for zz in z]
        np.testing.assert_allclose(
            self_contrastive_per_example(*scaled, temperature=0.2).numpy(),
            base.numpy(),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_known_value_identical_views_orthogonal_rows(tau, symmetric):
    # z_n = z_i = z_j = N orthonormal rows.  For anchor k the candidates other
    # than itself are: its positive (cos 1) and 2(N-1) orthogonal rows (cos 0):
    #   l = -log(e^{1/t} / (e^{1/t} + 2(N-1))) = log(1 + 2(N-1) e^{-1/t}).
    n, d = 4, 6
    eye = np.eye(n, d, dtype=np.float32) * 3.0
    want = math.log(1.0 + 2 * (n - 1) * math.exp(-1.0 / tau))
    got_per = self_contrastive_per_example(
        eye, eye, eye, temperature=tau, symmetric=symmetric
    )
    # logsumexp(~1/t) - 1/t in float32: absolute error ~ eps * 1/t.
    np.testing.assert_allclose(got_per.numpy(), np.full(n, want), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_gradients_finite(tau):
    rng = np.random.default_rng(5)
    z = [tf.constant(v) for v in _views(rng, 5)]
    # Exactly identical rows (cos = 1) and an exactly opposite row (cos = -1).
    z[1] = tf.concat([z[0][:3], -z[0][3:]], axis=0)
    for symmetric in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = self_contrastive_loss(*z, temperature=tau, symmetric=symmetric)
        grads = tape.gradient(loss, z)
        for g in grads:
            assert g is not None
            assert np.all(np.isfinite(g.numpy()))


def test_float16_inputs_give_float32():
    rng = np.random.default_rng(2)
    z = _views(rng, 4, dtype=np.float16)
    per = self_contrastive_per_example(*z)
    assert per.dtype == tf.float32
    want, _ = ref_scl(*z, 0.5)
    np.testing.assert_allclose(per.numpy(), want, rtol=1e-4, atol=1e-4)


def test_arc_margin_loss_is_sparse_cross_entropy():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(6, 4)).astype(np.float32) * 5
    labels = np.array([0, 3, 1, 1, 2, 0])
    l64 = logits.astype(np.float64)
    want = -np.log(np.exp(l64[np.arange(6), labels]) / np.exp(l64).sum(axis=1))
    for lab in (labels, labels[:, None], labels.astype(np.float32)):
        got = arc_margin_loss(logits, lab)
        assert got.shape == (6,) and got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    got16 = arc_margin_loss(logits.astype(np.float16), labels)
    assert got16.dtype == tf.float32


# ---------------------------------------------------------------------------
# MirroredStrategy over 2 logical CPUs: global negatives.
# ---------------------------------------------------------------------------
def _split(strategy, arrays, sizes):
    """Distributes the rows of each array: replica r gets its `sizes[r]` rows."""
    starts = np.cumsum([0] + list(sizes))

    def value_fn(ctx):
        r = ctx.replica_id_in_sync_group
        return tuple(tf.constant(a[starts[r] : starts[r + 1]]) for a in arrays)

    return strategy.experimental_distribute_values_from_function(value_fn)


def _concat_local(strategy, per_replica):
    return np.concatenate(
        [t.numpy() for t in strategy.experimental_local_results(per_replica)]
    )


@pytest.mark.parametrize("class_aware", [False, True])
@pytest.mark.parametrize("use_tf_function", [True, False])
@pytest.mark.parametrize("sizes", [(3, 3), (4, 3)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_strategy_per_example_matches_single_device(
    two_cpu_strategy, sizes, symmetric, use_tf_function, class_aware
):
    strategy = two_cpu_strategy
    rng = np.random.default_rng(sum(sizes) + symmetric)
    z = _views(rng, sum(sizes))
    labels = rng.integers(0, 3, sum(sizes)).astype(np.int64)
    want = self_contrastive_per_example(*z, temperature=0.2, symmetric=symmetric,
                                        labels=labels if class_aware else None)

    def step(zn, zi, zj, y):
        return self_contrastive_per_example(
            zn, zi, zj, temperature=0.2, symmetric=symmetric, labels=y if class_aware else None
        )

    fn = tf.function(step) if use_tf_function else step
    got = strategy.run(fn, args=_split(strategy, [*z, labels], sizes))
    np.testing.assert_allclose(
        _concat_local(strategy, got), want.numpy(), rtol=1e-5, atol=1e-6
    )


def test_strategy_input_gradients_match_single_device(two_cpu_strategy):
    strategy = two_cpu_strategy
    rng = np.random.default_rng(21)
    global_n = 6
    z = _views(rng, global_n)

    zt = [tf.constant(v) for v in z]
    with tf.GradientTape() as tape:
        tape.watch(zt)
        loss = self_contrastive_loss(*zt, temperature=0.3, symmetric=True)
    want = [g.numpy() for g in tape.gradient(loss, zt)]

    @tf.function
    def step(zn, zi, zj):
        local = [zn, zi, zj]
        with tf.GradientTape() as tape:
            tape.watch(local)
            per = self_contrastive_per_example(
                *local, temperature=0.3, symmetric=True
            )
            replica_loss = tf.nn.compute_average_loss(
                per, global_batch_size=global_n
            )
        return tape.gradient(replica_loss, local)

    grads = strategy.run(step, args=_split(strategy, z, (3, 3)))
    for g, w in zip(grads, want):
        np.testing.assert_allclose(_concat_local(strategy, g), w, rtol=1e-5, atol=1e-7)


def test_strategy_sgd_step_matches_single_device(two_cpu_strategy):
    """One SGD step of a tiny Dense model: same weights on 1 and 2 replicas.

    Checks that the global negatives + compute_average_loss + the optimizer's
    SUM all-reduce of the gradients scale nothing twice.
    """
    strategy = two_cpu_strategy
    rng = np.random.default_rng(33)
    global_n, d_in, d_out, lr, tau = 8, 5, 4, 0.5, 0.3
    x = _views(rng, global_n, d=d_in)
    kernel0 = rng.normal(size=(d_in, d_out)).astype(np.float32)
    bias0 = rng.normal(size=(d_out,)).astype(np.float32)

    def make_model():
        layer = keras.layers.Dense(d_out)
        layer.build((None, d_in))
        layer.set_weights([kernel0, bias0])
        return layer, keras.optimizers.SGD(learning_rate=lr)

    # Single device, loss = mean over the global batch.
    layer, opt = make_model()
    with tf.GradientTape() as tape:
        loss = self_contrastive_loss(
            *[layer(v) for v in x], temperature=tau, symmetric=False
        )
    single_grads = tape.gradient(loss, layer.trainable_variables)
    opt.apply_gradients(zip(single_grads, layer.trainable_variables))
    want = [w.copy() for w in layer.get_weights()]
    assert not np.allclose(want[0], kernel0)  # the step did something

    # Two replicas.
    with strategy.scope():
        dlayer, dopt = make_model()
        dopt.build(dlayer.trainable_variables)

    @tf.function
    def train_step(xn, xi, xj):
        def replica_fn(xn, xi, xj):
            with tf.GradientTape() as tape:
                per = self_contrastive_per_example(
                    dlayer(xn), dlayer(xi), dlayer(xj), temperature=tau
                )
                replica_loss = tf.nn.compute_average_loss(
                    per, global_batch_size=global_n
                )
            grads = tape.gradient(replica_loss, dlayer.trainable_variables)
            dopt.apply_gradients(zip(grads, dlayer.trainable_variables))
            return replica_loss, grads

        losses, grads = strategy.run(replica_fn, args=(xn, xi, xj))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None),
            [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads],
        )

    dist_loss, summed_grads = train_step(*_split(strategy, x, (4, 4)))
    np.testing.assert_allclose(dist_loss.numpy(), loss.numpy(), rtol=1e-5)
    for g, w in zip(summed_grads, single_grads):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-6)
    for got, w in zip(dlayer.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
