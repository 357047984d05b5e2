"""Grad-CAM (Figs. 2-3): maps follow the object, match a direct computation, and the CLI draws a grid."""
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from scl_amp_tf import models, saliency
from scl_amp_tf.reference import ReferenceDatabase
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate

S, SQUARE = 48, 10  # resnet_tiny's last block is 2x2 at 48x48: one cell per image quadrant
CELL = S // 2
LAST_BLOCK = "stage4_block1_out"  # resnet_tiny's last convolutional block


def _squares(count, rng, where=None):
    """Gray images: faint noise, plus a bright square at ``where`` (row, col) or at random."""
    x = rng.uniform(0, 0.2, (count, S, S, 1)).astype(np.float32)
    for image in x:
        r, c = where if where is not None else rng.integers(0, S - SQUARE + 1, 2)
        image[r:r + SQUARE, c:c + SQUARE] = 1.0
    return x


def _feature_map_model(features):
    """Image after preprocessing -> the last block's feature map, found by name (not as gradcam does)."""
    backbone = features.get_layer("resnet_tiny")
    return keras.Model(backbone.input, backbone.get_layer(LAST_BLOCK).output)


@pytest.fixture(scope="module")
def square_detector():
    """A seeded resnet_tiny whose heads score "a bright square" from the feature map.

    Briefly trained tiny networks at 48x48 gave maps that did not follow the object reliably, so
    the head is fitted in closed form on the fixed random backbone: w = mean feature of the cells
    holding a square minus that of the other cells, made orthogonal to the latter (a blank cell
    scores 0). CE: logits (-w.f, w.f). SCL-AMP: embedding (w.f, 1) rotated by 30 degrees and a
    reference database with the same rotation of the prototypes (0, 1) "blank" and (1, 0) "square".
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = _squares(64, rng)
    features = models.build_features((S, S, 1), "resnet_tiny")
    models.recalibrate_batchnorm(features, x)
    maps = _feature_map_model(features)(features.get_layer("preprocessing")(x)).numpy()
    centres = (x[..., 0] > 0.5).nonzero()  # the square cell of each image from its pixels
    holds = np.zeros(maps.shape[:3], bool)
    for n in range(len(x)):
        rows, cols = centres[1][centres[0] == n], centres[2][centres[0] == n]
        holds[n, int(rows.mean()) // CELL, int(cols.mean()) // CELL] = True
    w = maps[holds].mean(0) - maps[~holds].mean(0)
    blank = maps[~holds].mean(0)
    w = (w - (w @ blank) / (blank @ blank) * blank).astype(np.float32)

    classifier = models.build_classifier(features, 2)
    classifier.get_layer("logits").set_weights([np.stack([-w, w], 1), np.zeros(2, np.float32)])
    encoder = models.build_encoder(features, embedding_dim=2, projection_dim=2)
    encoder.get_layer("projection_hidden").set_weights([np.stack([w, 0 * w], 1), np.array([0, 1], np.float32)])
    angle = np.pi / 6
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]], np.float32)
    encoder.get_layer("embedding").set_weights([rotation, np.zeros(2, np.float32)])
    database = ReferenceDatabase(np.array([[0, 1], [1, 0]], np.float32) @ rotation, [1, 1], ["blank", "square"])
    return {"ce": (classifier, None), "scl_amp": (encoder, database)}


def _centre_of_mass(cams):
    rows, cols = np.mgrid[:S, :S]
    total = cams.sum(axis=(1, 2))
    return np.stack([(cams * rows).sum(axis=(1, 2)) / total, (cams * cols).sum(axis=(1, 2)) / total], 1).mean(0) / S


@pytest.mark.parametrize("kind", ["ce", "scl_amp"])
def test_map_follows_the_object(square_detector, kind):
    model, database = square_detector[kind]
    middle, near, far = (S - SQUARE) // 2, 1, S - SQUARE - 1
    centres = {}
    for name, where in {"left": (middle, near), "right": (middle, far), "top": (near, middle),
                        "bottom": (far, middle)}.items():
        images = _squares(4, np.random.default_rng(1), where)
        cams, scores = saliency.gradcam_and_scores(model, images, reference_db=database)
        assert cams.shape == (4, S, S) and cams.dtype == np.float32
        assert cams.min() >= 0 and np.allclose(cams.max(axis=(1, 2)), 1)
        assert np.all(np.argmax(scores, 1) == 1), (name, scores)  # the square is found ...
        np.testing.assert_array_equal(saliency.gradcam(model, images, 1, database), cams)  # ... and explained
        centres[name] = _centre_of_mass(cams)
    # The mass moves the way the square moves, clearly more than across it (a transposed or
    # flipped map fails this).
    for (a, b), axis in ((("left", "right"), 1), (("top", "bottom"), 0)):
        along, across = centres[b][axis] - centres[a][axis], abs(centres[b][1 - axis] - centres[a][1 - axis])
        assert along > 0.15 and along > 2 * across, (kind, centres)


@pytest.mark.parametrize("kind", ["ce", "scl_amp"])
def test_matches_a_direct_computation(kind):
    keras.utils.set_random_seed(1)
    images = np.random.default_rng(2).uniform(0, 1, (5, 40, 40, 1)).astype(np.float32)
    features = models.build_features((40, 40, 1), "resnet_tiny")
    feature_map = _feature_map_model(features)
    database = None
    if kind == "ce":
        model = models.build_classifier(features, 3)
        (weights, bias), = [model.get_layer("logits").get_weights()]
        head = lambda pooled: pooled @ weights + bias
    else:
        model = models.build_encoder(features, embedding_dim=8, projection_dim=16)
        (w1, b1), (w2, b2) = [model.get_layer(n).get_weights() for n in ("projection_hidden", "embedding")]
        database = ReferenceDatabase.from_embeddings(model.predict(images, verbose=0), [0, 1, 2, 0, 1])
        head = lambda pooled: tf.nn.l2_normalize(tf.nn.relu(pooled @ w1 + b1) @ w2 + b2, -1) @ database.prototypes.T
    for class_ids in (None, [2, 0, 1, 1, 0]):
        with tf.GradientTape() as tape:
            a = feature_map(features.get_layer("preprocessing")(images))
            scores = head(tf.reduce_mean(a, axis=[1, 2]))
            chosen = np.argmax(scores.numpy(), 1) if class_ids is None else np.array(class_ids)
            target = tf.reduce_sum(scores * tf.one_hot(chosen, 3))
        grads = tape.gradient(target, a).numpy()
        cam = np.maximum(np.einsum("nhwk,nk->nhw", a.numpy(), grads.mean(axis=(1, 2))), 0)
        cam = tf.image.resize(cam[..., None], (40, 40), method="bilinear").numpy()[..., 0]
        peak = cam.max(axis=(1, 2), keepdims=True)
        cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)  # an all-zero map stays zero
        assert np.sum(peak > 0) >= 4  # the comparison is not between zero maps
        cams, got_scores = saliency.gradcam_and_scores(model, images, class_ids, database)
        np.testing.assert_allclose(got_scores, scores.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(cams, cam, atol=1e-4)
    uint8 = np.round(images * 255).astype(np.uint8)  # uint8 images are scaled as in training
    np.testing.assert_allclose(saliency.gradcam(model, uint8, 0, database),
                               saliency.gradcam(model, uint8 / np.float32(255), 0, database), atol=1e-5)
    if kind == "scl_amp":
        with pytest.raises(ValueError, match="reference_db"):
            saliency.gradcam(model, images)


def _cli(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "scl_amp_tf.gradcam", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_command_line_draws_the_grid(tmp_path, tiny_runs):
    runs = [tiny_runs[method][0].model_dir for method in ("scl_amp", "ce")]
    output = tmp_path / "figures" / "gradcam.png"
    result = _cli(f"--model_dirs={','.join(runs)}", "--labels=SCL-AMP,CE", "--num_images=3",
                  f"--output={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    cell = saliency.CELL_INCHES * saliency.DPI
    with Image.open(output) as png:  # 3 rows (images) x 3 columns (image, SCL-AMP, CE)
        assert png.size == (round(3 * cell), round(3 * cell))
    assert os.listdir(output.parent) == ["gradcam.png"]

    missing = tmp_path / "not_a_run.png"
    result = _cli(f"--model_dirs={runs[0]},{tmp_path}", f"--output={missing}", cwd=tmp_path)
    assert result.returncode == 2 and "not a finished training run" in result.stderr, result.stderr
    assert not missing.exists()

    other = str(tmp_path / "other_size")  # the same run, claiming another image size
    shutil.copytree(runs[1], other)
    settings = json.load(open(os.path.join(other, "config.json")))
    json.dump({**settings, "image_size": 40}, open(os.path.join(other, "config.json"), "w"))
    with pytest.raises(ValueError, match="image_size") as error:
        saliency.make_figure([runs[0], other], str(tmp_path / "mismatch.png"), num_images=1)
    assert runs[0] in str(error.value) and other in str(error.value)
    assert not (tmp_path / "mismatch.png").exists()


def test_own_images_in_colour_with_a_colour_bar(tmp_path):
    """--images: the user's own files (not the run's test split), read as training reads them, one
    row each, titled by file name; an RGB model's images are drawn in colour."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        (root / f"class{c}").mkdir(parents=True)
        for k in range(4):
            image = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8) + np.array(colour, np.uint8)
            Image.fromarray(image).save(root / f"class{c}" / f"{k}.png")
    run = str(tmp_path / "run")
    train_and_evaluate(TrainConfig(model_dir=run, dataset=f"folder:{root}", shots_per_class=2, image_size=32,
                                   backbone="resnet_tiny", epochs=1, batch_size=4, verbose=0))
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.fromarray(np.full((50, 60, 3), (220, 20, 20), np.uint8)).save(mine / "red_part.png")
    Image.fromarray(np.full((50, 60, 3), (20, 20, 220), np.uint8)).save(mine / "blue_part.png")
    output = tmp_path / "own.png"
    # in this process (the command, a thin wrapper of make_figure, starts in the grid test above)
    assert saliency.make_figure([run], str(output), images=str(mine)) == str(output)
    cell = saliency.CELL_INCHES * saliency.DPI
    with Image.open(output) as png:  # 2 rows (the two files) x 2 columns (image, SCL-AMP)
        assert png.size == (round(2 * cell), round(2 * cell))
        pixels = np.asarray(png.convert("RGB")).astype(int)
    # the first column shows the images themselves: in colour, blue on the first row (blue_part sorts
    # first), red on the second
    top, bottom = pixels[: round(cell)], pixels[round(cell):]
    first_column = slice(0, round(cell))
    assert np.sum((top[:, first_column, 2] > 150) & (top[:, first_column, 0] < 80)) > 1000
    assert np.sum((bottom[:, first_column, 0] > 150) & (bottom[:, first_column, 2] < 80)) > 1000
    # the colour bar at the right edge: the jet colour map from blue (0) to red (1)
    bar = pixels[:, round(0.93 * 2 * cell)]
    assert (bar[:, 2] > 100).any() and (bar[:, 0] > 100).any()
    # a folder that is not there: an error naming it, no figure (the command turns it into one line
    # and exit status 2, as test_command_line_draws_the_grid checks)
    with pytest.raises((ValueError, OSError), match="nothing_here"):
        saliency.make_figure([run], f"{output}.2", images=str(tmp_path / "nothing_here"))
    assert not os.path.exists(f"{output}.2")
