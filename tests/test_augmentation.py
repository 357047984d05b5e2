"""The augmentation set T (section IV.A): seeded, shape-preserving, the right transformations."""
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf import augmentation


def _images(n=6, size=16, channels=1, seed=0):
    return tf.constant(np.random.default_rng(seed).random((n, size, size, channels)), tf.float32)


def _dihedral(image):
    """The 8 images reachable by quarter turns and flips."""
    out = []
    for k in range(4):
        r = np.rot90(image, k, axes=(0, 1))
        out += [r, r[:, ::-1]]
    return out


def test_same_seed_same_views_other_seed_other_views():
    images = _images()
    a = augmentation.augment(images, tf.constant([1, 2]))
    b = augmentation.augment(images, tf.constant([1, 2]))
    c = augmentation.augment(images, tf.constant([1, 3]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    assert a.shape == images.shape and a.dtype == tf.float32


def test_two_views_are_different_draws():
    x_i, x_j = augmentation.two_views(_images(), tf.constant([5, 6]))
    assert x_i.shape == x_j.shape
    assert not np.allclose(x_i.numpy(), x_j.numpy())


def test_rotations_and_flips_are_dihedral_and_all_occur():
    images = _images(n=64, size=8, seed=1)
    out = augmentation.augment(images, tf.constant([0, 7]), crop_scale=(1.0, 1.0)).numpy()
    # A full-area crop with aspect ratio != 1 is clipped to the whole image, so the crop is
    # the identity here only up to resampling; use rot/flip alone for an exact check.
    s_rot, s_h, s_v = (tf.constant([3, i]) for i in range(3))
    exact = augmentation.random_flip(augmentation.random_flip(
        augmentation.random_rot90(images, s_rot), s_h, 2), s_v, 1).numpy()
    seen = set()
    for original, view in zip(images.numpy(), exact):
        matches = [i for i, d in enumerate(_dihedral(original)) if np.array_equal(d, view)]
        assert matches, "view is not a rotation/flip of its image"
        seen.add(matches[0])
    assert len(seen) >= 6  # 64 draws cover (nearly) all 8 transforms
    assert out.shape == images.shape


def test_half_turns_keep_the_axes_and_follow_the_quarter_turns_draw():
    images = _images(n=64, size=8, seed=2).numpy()
    seed = tf.constant([3, 4])
    quarter = augmentation.random_rot90(images, seed).numpy()
    half = augmentation.random_rot90(images, seed, rotations="half").numpy()
    turns = set()
    for original, q, h in zip(images, quarter, half):
        k = next(k for k in range(4) if np.array_equal(np.rot90(original, k, axes=(0, 1)), q))
        # the same draw halved: no turn where the quarter turns gave 0 or 90 degrees, 180 where 180 or 270
        np.testing.assert_array_equal(h, np.rot90(original, 0 if k < 2 else 2, axes=(0, 1)))
        turns.add(k)
    assert turns == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="rotations='eighth'"):
        augmentation.random_rot90(images, seed, rotations="eighth")


def test_crop_zooms_in():
    # A smooth ramp image: a small crop resized back has a smaller range of values.
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))[None, :, :, None]
    images = tf.constant(np.repeat(ramp, 8, axis=0))
    crops = augmentation.random_resized_crop(images, tf.constant([4, 4]), scale=(0.1, 0.1)).numpy()
    ranges = crops.max(axis=(1, 2, 3)) - crops.min(axis=(1, 2, 3))
    assert np.all(ranges < 0.6)
    full = augmentation.random_resized_crop(images, tf.constant([4, 4]), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(full.numpy(), images.numpy(), atol=1e-5)


def test_runs_in_a_tf_function():
    fn = tf.function(lambda x, s: augmentation.two_views(x, s))
    x_i, _ = fn(_images(channels=3), tf.constant([9, 9]))
    assert x_i.shape == (6, 16, 16, 3)
