"""Test-time augmentation over the 8 rotations and flips (--tta=dihedral): the views, the averaged
embeddings against NumPy, exact invariance, and the same views in the edge runner's own copy."""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf import inference, invariance
from scl_amp_tf.edge import edge_classify


def _images(n=3, size=7, channels=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _dihedral_np(x):
    """The group written out independently: rotations by 0, 90, 180, 270 degrees of x and of its mirror."""
    return [np.rot90(m, k, axes=(1, 2)) for m in (x, x[:, :, ::-1]) for k in range(4)]


def test_the_eight_views_are_the_dihedral_group_in_every_runtime():
    x = _images()
    views = [invariance.dihedral_view_np(x, i) for i in range(8)]
    assert np.array_equal(views[0], x)
    expected = _dihedral_np(x)
    # the same 8 transforms as the group written out, each once (order aside)
    assert sorted(v.tobytes() for v in views) == sorted(v.tobytes() for v in expected)
    assert len({v.tobytes() for v in views}) == 8
    # closed: the views of any view are the same set
    for i in range(8):
        again = {invariance.dihedral_view_np(views[i], j).tobytes() for j in range(8)}
        assert again == {v.tobytes() for v in views}
    # TensorFlow (SavedModel graphs) and the edge runner's NumPy copy: same order
    for i, view in enumerate(invariance.dihedral_views(tf.constant(x))):
        assert np.array_equal(view.numpy(), views[i])
        assert np.array_equal(edge_classify.dihedral_view(x, i), views[i])


def _model(channels=2):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((7, 7, channels))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)  # not rotation invariant: the views give different outputs
    return keras.Model(inputs, keras.layers.Dense(5)(x))


def test_embed_averages_the_unit_outputs_of_the_eight_views_and_is_invariant():
    model = _model()
    x = _images(n=4)

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    outputs = [model.predict(v.astype(np.float32) / 255.0, verbose=0) for v in _dihedral_np(x)]
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)  # the model itself is not invariant
    got = inference.embed(model, x, tta="dihedral")
    np.testing.assert_allclose(got, np.mean([unit(o) for o in outputs], axis=0), rtol=1e-5, atol=1e-6)
    raw = inference.embed(model, x, tta="dihedral", average="raw")
    np.testing.assert_allclose(raw, np.mean(outputs, axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inference.embed(model, x), outputs[0], rtol=1e-5, atol=1e-6)
    for turned in _dihedral_np(x)[1:]:  # any rotation or flip of the images: the same embeddings
        np.testing.assert_allclose(inference.embed(model, np.ascontiguousarray(turned), tta="dihedral"), got,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", ["flips", "", "Dihedral"])
def test_unknown_tta_is_refused(bad):
    with pytest.raises(ValueError, match="--tta"):
        inference.embed(_model(), _images(), tta=bad)


def test_the_group_is_all_products_of_a_quarter_turn_and_a_mirror():
    """Independent of order: composing the views' generators gives exactly 8 distinct maps."""
    x = _images(n=1, size=5, channels=1)
    generated = {x.tobytes()}
    frontier = [x]
    for _ in range(8):
        frontier = [f(v) for v, f in itertools.product(frontier, (lambda a: np.rot90(a, 1, axes=(1, 2)),
                                                               lambda a: a[:, :, ::-1]))]
        generated |= {v.tobytes() for v in frontier}
    assert generated == {invariance.dihedral_view_np(x, i).tobytes() for i in range(8)}
