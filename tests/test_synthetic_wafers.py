"""Tests of the SYNTHETIC wafer-map generator (scl_amp_tf.synthetic_wafers)."""
import numpy as np
import pytest

from scl_amp_tf import synthetic_wafers as sw

EXPECTED_NAMES = [
    'Normal', 'C', 'D', 'EL', 'ER', 'L', 'NF', 'S', 'R', 'C+EL', 'C+ER', 'C+L', 'C+S', 'D+EL', 'D+ER', 'D+L',
    'D+S', 'EL+L', 'EL+S', 'ER+L', 'ER+S', 'L+S', 'C+EL+L', 'C+EL+S', 'C+ER+L', 'C+ER+S', 'C+L+S', 'D+EL+L',
    'D+EL+S', 'D+ER+L', 'D+ER+S', 'D+L+S', 'EL+L+S', 'ER+L+S', 'C+L+EL+S', 'C+L+ER+S', 'D+L+EL+S', 'D+L+ER+S']

PER_CLASS = 60


@pytest.fixture(scope="module")
def data():
    return sw.generate(PER_CLASS, seed=0)


@pytest.fixture(scope="module")
def fail(data):
    maps, labels, _ = data
    return (maps == sw.FAIL).astype(np.float32)


@pytest.fixture(scope="module")
def polar():
    yy, xx, radius = sw._geometry(52)
    rho = np.sqrt(yy * yy + xx * xx) / radius
    theta = np.arctan2(yy, xx)
    return rho, theta, sw.wafer_mask(52)


def _per_map_density(fail, labels, name, region):
    """Fail fraction inside ``region`` for every map of class ``name``."""
    return fail[labels == EXPECTED_NAMES.index(name)][:, region].mean(axis=1)


def _outer_sectors(fail, labels, name, polar, sectors=8):
    """Per map fail fraction in each of ``sectors`` angular sectors of the outer rim [n, sectors]."""
    rho, theta, wafer = polar
    rim = wafer & (rho > 0.92)
    index = np.minimum(((theta + np.pi) / (2 * np.pi) * sectors).astype(int), sectors - 1)
    return np.stack([_per_map_density(fail, labels, name, rim & (index == j)) for j in range(sectors)], axis=1)


# --------------------------------------------------------------------------- names and labels


def test_class_names_and_components():
    assert list(sw.CLASS_NAMES) == EXPECTED_NAMES
    assert sw.NUM_CLASSES == 38
    assert sw.COMPONENTS == ('C', 'D', 'EL', 'ER', 'L', 'NF', 'S', 'R')
    assert len(sw.COMPONENT_NAMES) == 8


def test_multi_hot_of_names():
    assert sw.multi_hot('Normal').tolist() == [0] * 8
    assert sw.multi_hot('NF').tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert sw.multi_hot('C+L+EL+S').tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert sw.multi_hot('D+ER+S').tolist() == [0, 1, 0, 1, 0, 0, 1, 0]
    assert sw.multi_hot('C').dtype == np.uint8
    for name in EXPECTED_NAMES:
        hot = sw.multi_hot(name)
        assert hot.shape == (8,)
        expected = set() if name == 'Normal' else set(name.split('+'))
        assert {sw.COMPONENTS[i] for i in np.flatnonzero(hot)} == expected


@pytest.mark.parametrize('bad', ['X', 'C+X', 'C+C', '', 'normal', 3])
def test_multi_hot_rejects_unknown_names(bad):
    with pytest.raises(ValueError):
        sw.multi_hot(bad)


# --------------------------------------------------------------------------- shapes and values


def test_shapes_dtypes_values(data):
    maps, labels, hot = data
    n = 38 * PER_CLASS
    assert maps.shape == (n, 52, 52) and maps.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert hot.shape == (n, 8) and hot.dtype == np.uint8
    assert set(np.unique(maps).tolist()) == {0, 1, 2}
    # ordered by class, then sample
    assert labels.tolist() == np.repeat(np.arange(38), PER_CLASS).tolist()
    # the die mask is the same circular wafer on every map: 0 exactly outside it
    wafer = sw.wafer_mask(52)
    assert (maps[:, ~wafer] == 0).all()
    assert (maps[:, wafer] > 0).all()
    assert maps[0, 0, 0] == 0 and maps[0, 26, 26] > 0
    # wafer diameter about size - 1 or size - 2
    assert 49 <= wafer.sum(axis=1).max() <= 51


def test_multi_hot_column_matches_labels(data):
    _, labels, hot = data
    for label in np.unique(labels):
        rows = hot[labels == label]
        assert (rows == sw.multi_hot(EXPECTED_NAMES[label])).all()


@pytest.mark.parametrize('size', [16, 33, 64])
def test_other_sizes(size):
    maps, labels, hot = sw.generate(2, seed=3, size=size)
    assert maps.shape == (76, size, size)
    assert labels.shape == (76,) and hot.shape == (76, 8)
    wafer = sw.wafer_mask(size)
    assert (maps[:, ~wafer] == 0).all() and (maps[:, wafer] > 0).all()
    assert maps[0, 0, 0] == 0
    # every class still has fail dies
    assert ((maps == 2).sum(axis=(1, 2)) > 0).all()


def test_single_map_per_class():
    maps, labels, _ = sw.generate(1, seed=0)
    assert maps.shape == (38, 52, 52)
    assert labels.tolist() == list(range(38))


# --------------------------------------------------------------------------- determinism


def test_deterministic_per_seed():
    a = sw.generate(4, seed=7)
    np.random.seed(123)  # the global numpy state must not matter
    b = sw.generate(4, seed=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_does_not_touch_global_random_state():
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    sw.generate(2, seed=1)
    assert np.random.random() == expected


def test_different_seeds_differ():
    a, la, _ = sw.generate(4, seed=7)
    b, lb, _ = sw.generate(4, seed=8)
    np.testing.assert_array_equal(la, lb)
    assert (a != b).any(axis=(1, 2)).all()  # every single map differs


def test_maps_within_a_class_differ(data):
    maps, labels, _ = data
    for label in range(38):
        block = maps[labels == label].reshape(PER_CLASS, -1)
        assert len(np.unique(block, axis=0)) == PER_CLASS


# --------------------------------------------------------------------------- patterns


def test_every_defect_adds_fail_dies():
    maps, labels, _ = sw.generate(100, seed=0)
    counts = (maps == 2).sum(axis=(1, 2)).astype(np.float64)
    normal = counts[labels == 0]
    for label in range(1, 38):
        cls = counts[labels == label]
        diff = cls.mean() - normal.mean()
        stderr = np.sqrt(cls.var() / len(cls) + normal.var() / len(normal))
        assert diff > 2.0 * stderr, (EXPECTED_NAMES[label], diff, stderr)


def test_normal_has_light_background(fail, data, polar):
    _, labels, _ = data
    wafer = polar[2]
    density = _per_map_density(fail, labels, 'Normal', wafer)
    assert 0.02 < density.mean() < 0.15
    assert density.max() < 0.25
    assert (density > 0).all()  # isolated fail dies on every wafer


def test_fail_count_alone_does_not_separate_the_classes(data):
    """Most defect classes overlap Normal and each other in fail-die count."""
    maps, labels, _ = data
    counts = (maps == 2).sum(axis=(1, 2))
    normal_hi = np.percentile(counts[labels == 0], 90)
    overlapping = [name for label, name in enumerate(EXPECTED_NAMES)
                   if label and np.percentile(counts[labels == label], 10) < normal_hi]
    assert len(overlapping) >= 10, overlapping


def test_center_is_a_central_blob(fail, data, polar):
    _, labels, _ = data
    rho = polar[0]
    centre = rho < 0.12
    c, normal = (_per_map_density(fail, labels, n, centre) for n in ('C', 'Normal'))
    assert c.mean() > 0.7 and normal.mean() < 0.15
    assert (c > normal.max()).mean() > 0.9
    # ... and not a ring at the edge
    assert _per_map_density(fail, labels, 'C', polar[2] & (rho > 0.8)).mean() < 0.15
    # mixtures with C keep it
    assert _per_map_density(fail, labels, 'C+L+ER+S', centre).mean() > 0.7


def test_donut_is_a_ring_around_the_centre(fail, data, polar):
    _, labels, _ = data
    rho = polar[0]
    ring = (rho > 0.3) & (rho < 0.45)
    hole = rho < 0.08
    d_ring = _per_map_density(fail, labels, 'D', ring)
    d_hole = _per_map_density(fail, labels, 'D', hole)
    assert d_ring.mean() > 0.4
    assert d_hole.mean() < 0.2
    assert (d_ring > d_hole).mean() > 0.85
    assert _per_map_density(fail, labels, 'Normal', ring).mean() < 0.15


def test_edge_ring_covers_the_whole_rim(fail, data, polar):
    _, labels, _ = data
    er = _outer_sectors(fail, labels, 'ER', polar)
    normal = _outer_sectors(fail, labels, 'Normal', polar)
    assert er.min(axis=1).mean() > 0.45  # every sector of the rim is failed
    assert normal.max(axis=1).mean() < 0.25
    interior = polar[0] < 0.7
    assert _per_map_density(fail, labels, 'ER', interior).mean() < 0.15


def test_edge_loc_covers_part_of_the_rim(fail, data, polar):
    _, labels, _ = data
    el = _outer_sectors(fail, labels, 'EL', polar)
    er = _outer_sectors(fail, labels, 'ER', polar)
    assert el.max(axis=1).mean() > 0.5  # a failed stretch of the rim ...
    assert el.min(axis=1).mean() < 0.2  # ... but not all of it
    assert (el.max(axis=1) - el.min(axis=1)).mean() > 2 * (er.max(axis=1) - er.min(axis=1)).mean()
    assert _per_map_density(fail, labels, 'EL', polar[0] < 0.7).mean() < 0.15


def _max_window_density(fail_maps, k=7):
    """Largest fail fraction in any k x k window, per map."""
    c = np.pad(fail_maps, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)
    win = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    return win.max(axis=(1, 2)) / (k * k)


def test_loc_is_a_local_cluster_off_centre(fail, data, polar):
    _, labels, _ = data
    idx = EXPECTED_NAMES.index
    loc = _max_window_density(fail[labels == idx('L')])
    normal = _max_window_density(fail[labels == idx('Normal')])
    scratch = _max_window_density(fail[labels == idx('S')])
    assert loc.mean() > normal.mean() + 0.25
    assert loc.mean() > scratch.mean() + 0.15
    # not at the centre, not the whole wafer
    assert _per_map_density(fail, labels, 'L', polar[0] < 0.12).mean() < 0.2
    assert _per_map_density(fail, labels, 'L', polar[2]).mean() < 0.25


def test_near_full_fails_most_of_the_wafer(fail, data, polar):
    _, labels, _ = data
    nf = _per_map_density(fail, labels, 'NF', polar[2])
    assert nf.mean() > 0.65 and nf.min() > 0.45
    others = [_per_map_density(fail, labels, n, polar[2]).mean() for n in EXPECTED_NAMES if n not in ('NF', 'R')]
    assert max(others) < 0.45


def test_random_is_dense_speckle_all_over(fail, data, polar):
    _, labels, _ = data
    rho, theta, wafer = polar
    r = _per_map_density(fail, labels, 'R', wafer)
    assert 0.25 < r.mean() < 0.7
    for quadrant in range(4):
        part = wafer & (np.floor((theta + np.pi) / (np.pi / 2)) == quadrant)
        assert _per_map_density(fail, labels, 'R', part).mean() > 0.25
    # less dense than Near-Full, much denser than Normal
    assert r.mean() < _per_map_density(fail, labels, 'NF', wafer).mean() - 0.15
    assert r.mean() > 3 * _per_map_density(fail, labels, 'Normal', wafer).mean()


def test_scratch_is_a_thin_line():
    rng = np.random.default_rng(0)
    yy, xx, radius = sw._geometry(52)
    wafer = sw.wafer_mask(52)
    lines = sw._scratch(rng, 200, yy, xx, radius) & wafer
    counts = lines.sum(axis=(1, 2))
    assert (counts >= 5).all()
    assert counts.mean() < 0.06 * wafer.sum()  # a few dies, not an area
    for m in lines:
        ys, xs = np.nonzero(m)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert extent >= 8  # long ...
        assert len(ys) <= 3.0 * extent  # ... and thin (a blob of that extent has ~extent**2 dies)
    # and in the generated S maps it shows up as extra fail dies over Normal's background
    maps, labels, _ = sw.generate(40, seed=1)
    counts = (maps == 2).sum(axis=(1, 2))
    assert counts[labels == EXPECTED_NAMES.index('S')].mean() > counts[labels == 0].mean() + 10


def test_mixtures_are_unions_of_their_components(fail, data, polar):
    _, labels, _ = data
    rho = polar[0]
    centre, ring = rho < 0.12, (rho > 0.3) & (rho < 0.45)
    for name in ('C+ER', 'C+ER+L', 'C+L+ER+S'):
        assert _per_map_density(fail, labels, name, centre).mean() > 0.7
        assert _outer_sectors(fail, labels, name, polar).min(axis=1).mean() > 0.45
    for name in ('D+EL', 'D+L+EL+S'):
        assert _per_map_density(fail, labels, name, ring).mean() > 0.4
        assert _outer_sectors(fail, labels, name, polar).max(axis=1).mean() > 0.5
    counts = fail.sum(axis=(1, 2))
    mean = {n: counts[labels == i].mean() for i, n in enumerate(EXPECTED_NAMES)}
    assert mean['D+L+ER+S'] > mean['D+ER'] > mean['D']


# --------------------------------------------------------------------------- validation and speed


@pytest.mark.parametrize('num', [0, -1])
def test_rejects_bad_num_per_class(num):
    with pytest.raises(ValueError, match='num_per_class'):
        sw.generate(num, seed=0)


@pytest.mark.parametrize('size', [15, 8, 0])
def test_rejects_small_size(size):
    with pytest.raises(ValueError, match='size'):
        sw.generate(2, seed=0, size=size)


@pytest.mark.parametrize('num', [2.5, '3', None])
def test_rejects_non_integer_num_per_class(num):
    with pytest.raises(ValueError, match='num_per_class'):
        sw.generate(num, seed=0)


def test_fast_enough():
    import time
    start = time.perf_counter()
    sw.generate(100, seed=0)
    assert time.perf_counter() - start < 10.0  # about 0.5 s on one core
