"""SYNTHETIC wafer maps: a procedurally generated, seeded stand-in for MixedWM38.

Nothing in this module is real data. It draws wafer maps that *mimic* the MixedWM38
mixed-type wafer defect dataset (Wang et al., "Deformable Convolutional Networks for
Efficient Mixed-type Wafer Defect Pattern Recognition", IEEE TSM 2020): 52 x 52 die maps
with 0 = no die (outside the circular wafer), 1 = pass die, 2 = fail die, in the same
38 classes (``Normal``, the 8 single defect types and 29 mixtures of 2 to 4 of them), with the
same 8-column multi-hot labelling. It is the project's demo dataset that needs no download;
results on it say nothing about results on the real MixedWM38.

How the maps are drawn (all sizes scale with the wafer radius, every parameter is random
per map):

* the wafer is a disc of diameter about ``size - 1`` centred in the map (the same die mask
  as the real 52 x 52 maps);
* every map, ``Normal`` included, gets a background of isolated fail dies (1 to 18 % of the
  dies, 8 % on average, drawn alike for every class, like the speckle on real ``Normal``
  wafers; real defect maps carry more, about 19 %, which would let a fail-die count alone
  tell ``Normal`` apart);
* ``C`` Center: a solid, slightly elliptical blob near the wafer centre;
* ``D`` Donut: a ring around the centre with a sharp inner and a fuzzy outer border, often
  denser on one side;
* ``EL`` Edge-Loc: an arc along part of the wafer edge, thickest in its middle and tapering off;
* ``ER`` Edge-Ring: a thin ring of fail dies all around the edge, with varying thickness;
* ``L`` Loc: a fuzzy, streaky elliptical patch off the centre (often near the edge),
  elongated roughly along the radius;
* ``NF`` Near-Full: most of the wafer failed, with a few smooth pass regions;
* ``S`` Scratch: one or two thin, slightly curved, broken lines;
* ``R`` Random: dense speckle whose density varies smoothly over the wafer (blobs and worms).

Mixtures are the union of their components' fail dies. Maps are generated per class with
``numpy.random.default_rng(seed)`` only (no global random state), so a seed always gives
the same maps.
"""
from __future__ import annotations

import numpy as np

# The 8 defect types, in the column order of the multi-hot labels, and the 38 class names in
# label order (index = label): MixedWM38's own, from its TFDS builder (one spelling of them).
from scl_amp_tf.tfds_datasets.mixed_wm38.mixed_wm38_dataset_builder import CLASS_NAMES, COMPONENTS

__all__ = ["COMPONENTS", "COMPONENT_NAMES", "CLASS_NAMES", "NUM_CLASSES", "OUTSIDE", "PASS", "FAIL",
           "multi_hot", "wafer_mask", "generate"]

#: Long names of :data:`COMPONENTS`, same order.
COMPONENT_NAMES = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-Full", "Scratch", "Random")

NUM_CLASSES = len(CLASS_NAMES)

OUTSIDE, PASS, FAIL = 0, 1, 2

_MIN_SIZE = 16


def _components_of(class_name: str) -> tuple[str, ...]:
    if not isinstance(class_name, str):
        raise ValueError(f"class name must be a string, got {class_name!r}")
    if class_name == "Normal":
        return ()
    parts = tuple(class_name.split("+"))
    unknown = [p for p in parts if p not in COMPONENTS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(
            f"unknown wafer class {class_name!r}: expected 'Normal' or components from {COMPONENTS} "
            "joined by '+', each at most once (e.g. 'C+EL+S')")
    return parts


def multi_hot(class_name: str) -> np.ndarray:
    """The 8-dim multi-hot label (uint8, columns in :data:`COMPONENTS` order) of a class name.

    ``multi_hot("Normal")`` is all zeros; ``multi_hot("C+L+EL+S")`` has ones at C, EL, L and S.
    Raises ``ValueError`` for an unknown name.
    """
    out = np.zeros(len(COMPONENTS), np.uint8)
    for part in _components_of(class_name):
        out[COMPONENTS.index(part)] = 1
    return out


def _geometry(size: int):
    """Die coordinates relative to the wafer centre and the wafer radius (in dies)."""
    centre = size / 2.0
    radius = (size - 0.8) / 2.0  # 25.6 for size 52: exactly the real MixedWM38 die mask
    idx = np.arange(size, dtype=np.float32)
    yy, xx = np.meshgrid(idx - centre, idx - centre, indexing="ij")
    return yy, xx, np.float32(radius)


def wafer_mask(size: int = 52) -> np.ndarray:
    """Boolean [size, size] mask of the dies on the circular wafer."""
    yy, xx, radius = _geometry(size)
    return yy * yy + xx * xx <= radius * radius


# --------------------------------------------------------------------------- helpers


def _col(values) -> np.ndarray:
    """Per-sample parameters [n] -> [n, 1, 1] float32 to broadcast over the die grid."""
    return np.asarray(values, np.float32)[:, None, None]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _bernoulli(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return rng.random(p.shape, dtype=np.float32) < p


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angle difference wrapped to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _smooth_field(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth random field [n, size, size], zero mean and unit std per map (bilinear upsampled noise)."""
    cells = max(2, int(cells))
    coarse = rng.standard_normal((n, cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0.0, cells, size, dtype=np.float32) * (cells - 1e-3) / cells
    i0 = pos.astype(np.int64)
    f = pos - i0
    rows = coarse[:, i0, :] * (1 - f)[None, :, None] + coarse[:, i0 + 1, :] * f[None, :, None]
    field = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
    return field


def _offset_ellipse_distance(yy, xx, cy, cx, aspect, angle):
    """Distance from (cy, cx) in a frame stretched by ``aspect`` along ``angle`` ([n,S,S])."""
    dy = yy - _col(cy)
    dx = xx - _col(cx)
    c, s = _col(np.cos(angle)), _col(np.sin(angle))
    u = dx * c + dy * s
    v = dy * c - dx * s
    a = _col(aspect)
    return np.sqrt((u / a) ** 2 + (v * a) ** 2), u, v


# --------------------------------------------------------------------------- components
# Each returns a boolean fail mask [n, size, size] (dies outside the wafer are removed later).


def _center(rng, n, yy, xx, radius):
    cy, cx = rng.normal(0.0, 0.04 * radius, (2, n))
    r = np.maximum(rng.uniform(0.09, 0.32, n) * radius, 1.3)
    d, _, _ = _offset_ellipse_distance(yy, xx, cy, cx, rng.uniform(0.85, 1.18, n), rng.uniform(0, np.pi, n))
    soft = _col(rng.uniform(0.15, 0.5, n))
    density = _col(rng.uniform(0.93, 1.0, n))
    return _bernoulli(rng, density * _sigmoid((_col(r) - d) / soft))


def _donut(rng, n, yy, xx, radius):
    cy, cx = rng.normal(0.0, 0.04 * radius, (2, n))
    inner = rng.uniform(0.14, 0.40, n) * radius
    width = rng.uniform(0.13, 0.28, n) * radius
    d, _, _ = _offset_ellipse_distance(yy, xx, cy, cx, rng.uniform(0.88, 1.14, n), rng.uniform(0, np.pi, n))
    p = _sigmoid((d - _col(inner)) / _col(rng.uniform(0.15, 0.5, n)))
    p *= _sigmoid((_col(inner + width) - d) / _col(rng.uniform(0.3, 1.2, n)))
    # often denser on one side, sometimes with a thinned-out sector
    theta = np.arctan2(yy - _col(cy), xx - _col(cx))
    lop = _col(rng.uniform(0.0, 0.4, n) * (rng.random(n) < 0.5))
    p *= 1.0 - lop * (0.5 + 0.5 * np.cos(theta - _col(rng.uniform(-np.pi, np.pi, n))))
    return _bernoulli(rng, _col(rng.uniform(0.9, 1.0, n)) * p)


def _edge_loc(rng, n, yy, xx, radius):
    theta = np.arctan2(yy, xx)
    depth = radius - np.sqrt(yy * yy + xx * xx)  # distance in from the wafer edge
    half_width = _col(rng.uniform(0.35, 1.6, n))  # 20 to 90 degrees each side
    dtheta = _wrap(theta - _col(rng.uniform(-np.pi, np.pi, n)))
    taper = np.clip(1.0 - (dtheta / half_width) ** 2, 0.0, 1.0) ** _col(rng.uniform(0.4, 1.0, n))
    thick = _col(rng.uniform(1.4, max(2.0, 0.17 * radius), n)) * taper
    p = _sigmoid((thick - depth) / _col(rng.uniform(0.2, 0.8, n))) * (taper > 0)
    return _bernoulli(rng, _col(rng.uniform(0.85, 1.0, n)) * p)


def _edge_ring(rng, n, yy, xx, radius):
    theta = np.arctan2(yy, xx)
    depth = radius - np.sqrt(yy * yy + xx * xx)
    k = _col(rng.integers(1, 4, n))
    wobble = 1.0 + _col(rng.uniform(0.0, 0.3, n)) * np.sin(k * theta + _col(rng.uniform(0, 2 * np.pi, n)))
    thick = _col(rng.uniform(1.3, max(1.8, 0.11 * radius), n)) * wobble
    p = _sigmoid((thick - depth) / _col(rng.uniform(0.2, 0.6, n)))
    return _bernoulli(rng, _col(rng.uniform(0.75, 0.98, n)) * p)


def _loc(rng, n, yy, xx, radius):
    rho = rng.uniform(0.3, 0.95, n) * radius
    phi = rng.uniform(-np.pi, np.pi, n)
    cy, cx = rho * np.sin(phi), rho * np.cos(phi)
    major = rng.uniform(0.15, 0.35, n) * radius
    aspect = np.sqrt(rng.uniform(1.0, 2.2, n))  # major / minor = aspect ** 2
    # oriented mostly along the radius (fan-like, as on real wafers)
    angle = phi + rng.normal(0.0, 0.5, n)
    d, u, v = _offset_ellipse_distance(yy, xx, cy, cx, aspect, angle)
    d = d / _col(major / aspect)
    p = _sigmoid((1.0 - d) / _col(rng.uniform(0.08, 0.25, n)))
    streaks = _col(rng.uniform(0.0, 0.45, n))
    m = _col(rng.integers(3, 9, n))
    p *= 1.0 - streaks * (0.5 + 0.5 * np.cos(m * np.arctan2(v, u) + _col(rng.uniform(0, 2 * np.pi, n))))
    return _bernoulli(rng, _col(rng.uniform(0.7, 1.0, n)) * p)


def _near_full(rng, n, yy, xx, radius):
    size = yy.shape[0]
    field = _smooth_field(rng, n, size, rng.integers(3, 8))
    # pass regions come in smooth clumps, more often towards the edge
    edge = (yy * yy + xx * xx) / (radius * radius)
    p = (_col(rng.uniform(0.8, 1.1, n)) + _col(rng.uniform(0.15, 0.8, n)) * field
         - _col(rng.uniform(0.0, 0.35, n)) * edge ** 2)
    return _bernoulli(rng, np.clip(p, 0.0, 1.0))


def _random(rng, n, yy, xx, radius):
    size = yy.shape[0]
    # blobs and worms: coarse plus finer smooth noise, pushed towards 0/1
    field = _smooth_field(rng, n, size, max(3, size // 6))
    field += _col(rng.uniform(0.3, 1.5, n)) * _smooth_field(rng, n, size, max(4, size // 3))
    field /= field.std(axis=(1, 2), keepdims=True)
    p = _col(rng.uniform(0.3, 0.6, n)) + _col(rng.uniform(0.3, 1.0, n)) * field
    # some maps show die-row or die-column structure (streaks along the stepping grid)
    stripes = rng.standard_normal((n, 1, size)).astype(np.float32)
    stripes = np.where(rng.random((n, 1, 1)) < 0.5, stripes, np.swapaxes(stripes, 1, 2))
    p += _col(rng.uniform(0.0, 0.3, n) * (rng.random(n) < 0.35)) * stripes
    return _bernoulli(rng, np.clip(p, 0.0, 1.0))


def _scratch_lines(rng, n, size, radius, out, length_range):
    """Draws one thin, slightly curved, broken line per map into ``out`` [n, size, size]."""
    step = 0.5
    steps = int(np.ceil(2.0 * radius * length_range[1] / 2.0 / step)) * 2 + 1
    s = (np.arange(steps, dtype=np.float32) - steps // 2) * step  # arc length from the midpoint
    rho = radius * np.sqrt(rng.uniform(0.05, 0.75, n))
    phi = rng.uniform(-np.pi, np.pi, n)
    heading = rng.uniform(-np.pi, np.pi, n)
    curvature = rng.uniform(-1.3, 1.3, n) / radius
    length = rng.uniform(*length_range, n) * radius
    ang = heading[:, None] + curvature[:, None] * s[None, :]
    ys = np.cumsum(np.sin(ang), axis=1) * step
    xs = np.cumsum(np.cos(ang), axis=1) * step
    ys -= ys[:, steps // 2:steps // 2 + 1]
    xs -= xs[:, steps // 2:steps // 2 + 1]
    centre = size / 2.0
    ys += (rho * np.sin(phi) + centre)[:, None]
    xs += (rho * np.cos(phi) + centre)[:, None]
    iy = np.rint(ys).astype(np.int64)
    ix = np.rint(xs).astype(np.int64)
    keep = np.abs(s)[None, :] <= length[:, None] / 2
    keep &= rng.random((n, steps)) < rng.uniform(0.75, 1.0, n)[:, None]  # broken line
    keep &= (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
    sample = np.broadcast_to(np.arange(n)[:, None], (n, steps))
    out[sample[keep], iy[keep], ix[keep]] = True
    # some scratches are two dies wide in places
    thick = keep & (rng.random((n, steps)) < rng.uniform(0.0, 0.35, n)[:, None])
    thick &= ix + 1 < size
    out[sample[thick], iy[thick], ix[thick] + 1] = True


def _scratch(rng, n, yy, xx, radius):
    size = yy.shape[0]
    out = np.zeros((n, size, size), bool)
    _scratch_lines(rng, n, size, radius, out, (0.8, 1.9))
    second = np.flatnonzero(rng.random(n) < 0.35)
    if len(second):
        extra = np.zeros((len(second), size, size), bool)
        _scratch_lines(rng, len(second), size, radius, extra, (0.3, 1.0))
        out[second] |= extra
    return out


_DRAW = {"C": _center, "D": _donut, "EL": _edge_loc, "ER": _edge_ring, "L": _loc, "NF": _near_full,
         "S": _scratch, "R": _random}


# --------------------------------------------------------------------------- public API


def generate(num_per_class: int, seed: int, size: int = 52) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates ``num_per_class`` SYNTHETIC wafer maps for each of the 38 classes.

    Returns ``(maps, labels, multi_hot)``:

    * ``maps``: uint8 [N, size, size], 0 = outside the wafer, 1 = pass die, 2 = fail die;
    * ``labels``: int64 [N], indices into :data:`CLASS_NAMES`;
    * ``multi_hot``: uint8 [N, 8], columns in :data:`COMPONENTS` order;

    with ``N = 38 * num_per_class``, ordered by class, then sample (shuffle before use).
    The same ``seed`` always gives the same maps; different seeds give different maps.
    """
    if isinstance(num_per_class, bool) or not isinstance(num_per_class, (int, np.integer)):
        raise ValueError(f"num_per_class must be an integer >= 1, got {num_per_class!r}")
    if num_per_class < 1:
        raise ValueError(f"num_per_class must be >= 1, got {num_per_class}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer >= {_MIN_SIZE}, got {size!r}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE} dies (wafer maps smaller than that cannot show "
                         f"the defect patterns), got {size}")
    n, size = int(num_per_class), int(size)
    rng = np.random.default_rng(seed)
    yy, xx, radius = _geometry(size)
    wafer = yy * yy + xx * xx <= radius * radius

    maps = np.empty((NUM_CLASSES * n, size, size), np.uint8)
    for label, name in enumerate(CLASS_NAMES):
        # light background of isolated fail dies on every wafer
        # (1 to 18 %, mean 8 %: the spread of real MixedWM38 'Normal' maps), same for all classes
        background = 0.01 + 0.17 * rng.beta(2.0, 3.0, n)
        fail = _bernoulli(rng, np.broadcast_to(_col(background), (n, size, size)))
        for part in _components_of(name):
            fail |= _DRAW[part](rng, n, yy, xx, radius)
        block = maps[label * n:(label + 1) * n]
        block[...] = PASS
        block[fail] = FAIL
        block[:, ~wafer] = OUTSIDE

    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), n)
    hot = np.stack([multi_hot(name) for name in CLASS_NAMES])[labels]
    return maps, labels, hot
