"""Grad-CAM heat maps of the last convolutional block of the backbone (the paper's Figs. 2 and 3).

Grad-CAM [38] (Selvaraju et al., ICCV 2017): with ``A_k`` the feature maps of the last
convolutional block and ``y_c`` the score of class ``c``, the weights are the spatial means of
the gradients, ``w_k = mean_ij dy_c / dA_k[i, j]``, and the map is ``relu(sum_k w_k A_k)``,
resized (bilinear) to the image and divided by its maximum. The score is what the model decides
by: the logit of the class for the cross-entropy baseline, and for an SCL-AMP encoder the mean
cosine similarity of the L2-normalised embedding to the class's references, i.e. the dot product
with the class prototype of the reference database (section IV.A).

    python -m scl_amp_tf.gradcam --model_dirs=runs/neu_ce,runs/neu --labels=CE,SCL-AMP \
        --num_images=6 --output=gradcam.png

(the command line, :mod:`scl_amp_tf.gradcam`) draws one row per test image (of the first run's
test split) or per image of the user's own: the image, then each run's map with its predicted class.
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import data as data_lib
from scl_amp_tf import run_folder
from scl_amp_tf.files import atomic_write
from scl_amp_tf.reference import ReferenceDatabase

CELL_INCHES = 2.2  # each panel of the figure
DPI = 100
METHOD_LABELS = {"scl_amp": "SCL-AMP", "ce": "CE"}


def _split_model(model):
    """``(layers before the backbone, backbone -> [last conv feature map, pooled], head layers)``."""
    nested = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"Model {model.name!r} has {len(nested)} nested backbone models, not one.")
    backbone = model.layers[nested[0]]
    pool = backbone.layers[-1]
    if not isinstance(pool, keras.layers.GlobalAveragePooling2D):
        raise ValueError(f"Backbone {backbone.name!r} does not end in GlobalAveragePooling2D.")
    before = [layer for layer in model.layers[:nested[0]] if not isinstance(layer, keras.layers.InputLayer)]
    return before, keras.Model(backbone.input, [pool.input, pool.output]), model.layers[nested[0] + 1:]


def gradcam_and_scores(model, images, class_ids=None, reference_db=None, batch_size=32):
    """Grad-CAM maps ``float32 [N, H, W]`` in [0, 1] and the class scores ``[N, num_classes]``.

    ``model``: a run's ``encoder.keras`` (SCL-AMP encoder, ending in "embedding", or the CE
    classifier, ending in "logits"). ``images``: ``[N, H, W, C]``, float in [0, 1] or uint8.
    ``class_ids``: the class explained per image (an int, ``[N]`` ints, or None for the
    predicted class). ``reference_db``: the run's :class:`ReferenceDatabase`, needed for an
    encoder (its prototypes give the scores) and not used for a classifier.
    """
    images = np.asarray(images)
    images = np.asarray(data_lib.to_float(images)) if images.dtype == np.uint8 else images.astype(np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], not of shape {images.shape}.")
    before, features, head = _split_model(model)
    prototypes = None
    if head[-1].name != "logits":  # an SCL-AMP encoder: scores from the reference database
        if reference_db is None or reference_db.prototypes.shape[1] != head[-1].units:
            raise ValueError(f"An SCL-AMP encoder scores images by its reference database: pass the run's "
                             f"reference_db (prototypes of dimension {head[-1].units}).")
        prototypes = tf.constant(reference_db.prototypes, tf.float32)
    num_classes = head[-1].units if prototypes is None else len(reference_db.prototypes)
    ids = np.broadcast_to(np.asarray(-1 if class_ids is None else class_ids, np.int32), (len(images),))
    if np.any(ids >= num_classes) or (class_ids is not None and np.any(ids < 0)):
        raise ValueError(f"class_ids must lie in [0, {num_classes}).")

    @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32),
                                  tf.TensorSpec([None], tf.int32)])
    def explain(x, c):
        for layer in before:
            x = layer(x, training=False)
        with tf.GradientTape() as tape:
            feature_map, y = features(x, training=False)
            for layer in head:
                y = layer(y, training=False)
            y = tf.cast(y, tf.float32)
            scores = y if prototypes is None else tf.matmul(tf.math.l2_normalize(y, -1), prototypes, transpose_b=True)
            c = tf.where(c < 0, tf.argmax(scores, -1, output_type=tf.int32), c)
            target = tf.gather(scores, c, batch_dims=1)  # the examples are independent: grad of the sum
        gradients = tf.cast(tape.gradient(target, feature_map), tf.float32)
        weights = tf.reduce_mean(gradients, axis=[1, 2])  # w_k: spatial mean of the gradients
        cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", tf.cast(feature_map, tf.float32), weights))
        cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0]
        cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=[1, 2], keepdims=True))
        return tf.clip_by_value(cam, 0.0, 1.0), scores

    maps, scores = [np.zeros((0, *images.shape[1:3]), np.float32)], [np.zeros((0, num_classes), np.float32)]
    for start in range(0, len(images), batch_size):
        cam, score = explain(images[start:start + batch_size], ids[start:start + batch_size])
        maps, scores = maps + [cam.numpy()], scores + [score.numpy()]
    return np.concatenate(maps), np.concatenate(scores)


def gradcam(model, images, class_ids=None, reference_db=None):
    """Grad-CAM maps ``float32 [N, H, W]`` in [0, 1]; see :func:`gradcam_and_scores`."""
    return gradcam_and_scores(model, images, class_ids, reference_db)[0]


def pick_images(labels, num_images, per_class=True, seed=0):
    """Indices: one image of each of the first ``num_images`` classes, or ``num_images`` at random."""
    rng = np.random.default_rng(seed)
    if per_class:
        return np.array([rng.choice(np.flatnonzero(labels == c)) for c in np.unique(labels)[:num_images]], np.int64)
    return np.sort(rng.choice(len(labels), min(num_images, len(labels)), replace=False)).astype(np.int64)


def load_runs(model_dirs, data_dir=None, manual_dir=None):
    """``[(model_dir, settings, training images, test images)]`` of finished runs on the same data."""
    runs = [(model_dir, *run_folder.load_run(model_dir, data_dir, manual_dir)) for model_dir in model_dirs]
    first, settings, _, test = runs[0]
    for other, other_settings, _, other_test in runs[1:]:
        for key in ("dataset", "image_size"):
            if other_settings[key] != settings[key]:
                raise ValueError(f"{first} and {other} are runs on different data ({key}: {settings[key]!r} vs "
                                 f"{other_settings[key]!r}); compare runs on the same dataset and image size.")
        if other_test.class_names != test.class_names:
            raise ValueError(f"{first} and {other} have different classes; compare runs on the same dataset.")
    return runs


def read_own_images(path, image_size, channels, max_images):
    """``(uint8 [N, S, S, C], file names)``: the first ``max_images`` image files of ``path`` (a file
    or a folder, searched recursively), read, converted and resized as training reads them."""
    files = data_lib.list_images(path)[:max_images]
    images = [data_lib.resize_images(data_lib.to_channels(data_lib.read_image(f), channels)[None], image_size)[0]
              for f in files]
    return np.stack(images), [os.path.basename(f) for f in files]


def _finished_runs(model_dirs):
    """``[(model_dir, settings)]`` of finished runs that take images of the same size."""
    runs = [(model_dir, run_folder.load_settings(model_dir)) for model_dir in model_dirs]
    for other, settings in runs[1:]:
        if settings["image_size"] != runs[0][1]["image_size"]:
            raise ValueError(f"{runs[0][0]} and {other} take different images (image_size: "
                             f"{runs[0][1]['image_size']!r} vs {settings['image_size']!r}).")
    return runs


def make_figure(model_dirs, output, labels=None, num_images=6, per_class=True, seed=0, data_dir=None,
                manual_dir=None, images=None):
    """Draws the Grad-CAM grid of ``model_dirs`` (the paper's Figs. 2-3) to the PNG ``output``.

    Rows are test images of the first run's split, or, with ``images`` (a file or a folder), the
    user's own image files (at most ``num_images``), titled by file name. RGB models show their
    images in colour; a colour bar gives the heat maps' scale."""
    if not model_dirs or num_images < 1 or (labels and len(labels) != len(model_dirs)):
        raise ValueError(f"Give one or more --model_dirs, as many --labels (or none) and --num_images >= 1, "
                         f"not {len(model_dirs or [])}, {len(labels or [])} and {num_images}.")
    if images is None:
        loaded = load_runs(model_dirs, data_dir, manual_dir)
        runs, test = [(model_dir, settings) for model_dir, settings, _, _ in loaded], loaded[0][3]
        chosen = pick_images(test.labels, num_images, per_class, seed)
        if not len(chosen):
            raise ValueError(f"{model_dirs[0]} has no test images.")
        pixels, truth, names = test.images[chosen], test.labels[chosen], test.class_names
        titles = [f"image: {names[t]}" for t in truth]
    else:
        runs = _finished_runs(model_dirs)
        truth, names = None, None
    columns = []
    for i, (model_dir, settings) in enumerate(runs):
        model = keras.models.load_model(os.path.join(model_dir, run_folder.ENCODER))
        run_names = ReferenceDatabase.load(os.path.join(model_dir, run_folder.REFERENCE_DB)).class_names
        if images is not None and i == 0:
            pixels, files = read_own_images(images, settings["image_size"], model.input_shape[-1], num_images)
            titles, names = files, run_names
        if list(run_names) != list(names):
            raise ValueError(f"{model_dirs[0]} and {model_dir} have different classes; compare runs on the same "
                             "dataset.")
        database = None if settings["method"] == "ce" else ReferenceDatabase.load(
            os.path.join(model_dir, run_folder.REFERENCE_DB))
        maps, scores = gradcam_and_scores(model, pixels, reference_db=database)
        label = labels[i] if labels else METHOD_LABELS.get(settings["method"], settings["method"])
        columns.append((label, maps, np.argmax(scores, axis=1)))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    rows, cols = len(pixels), 1 + len(columns)
    fig = Figure(figsize=(CELL_INCHES * cols, CELL_INCHES * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.02, top=1 - 0.3 / rows, wspace=0.08, hspace=0.3)
    unit = data_lib.to_float(pixels).numpy()
    colour = unit.shape[-1] == 3

    def show(ax, r):
        if colour:
            ax.imshow(unit[r])
        else:
            ax.imshow(unit[r, ..., 0], cmap="gray", vmin=0, vmax=1)

    heat = None
    for r in range(rows):
        show(axes[r, 0], r)
        axes[r, 0].set_title(titles[r], fontsize=8)
        for c, (label, maps, predicted) in enumerate(columns, start=1):
            show(axes[r, c], r)
            heat = axes[r, c].imshow(maps[r], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            verdict = "" if truth is None else " (right)" if predicted[r] == truth[r] else " (wrong)"
            axes[r, c].set_title(f"{label}: {names[predicted[r]]}{verdict}", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    # the heat maps' scale, opaque (the maps are drawn at half opacity over the images)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=heat.get_cmap()),
                       cax=fig.add_axes([0.915, 0.1, 0.02, 0.8]))
    bar.ax.set_title("Grad-CAM", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_write(output, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    return output
