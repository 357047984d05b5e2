"""The small-data recipe's parts: the learning-rate schedule, the validation split and its
per-epoch accuracy, keeping the best validation epoch."""
import json
import math
import os

import keras
import numpy as np
import pytest

from scl_amp_tf import data as data_lib
from scl_amp_tf import augmentation, evaluating, schedules, validation
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate

CHANCE = 1 / 38


def _reference_cosine(step, peak, total, warmup):
    """Independent formula: linear warm-up from 0, then a half cosine from peak to 0."""
    if step < warmup:
        return peak * step / warmup
    t = (step - warmup) / (total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@pytest.mark.parametrize("warmup_fraction", [0.0, 0.1])
def test_cosine_schedule_matches_the_formula(warmup_fraction):
    total, peak = 200, 1e-3
    schedule = schedules.learning_rate("cosine", peak, total, warmup_fraction)
    warmup = round(warmup_fraction * total)
    for step in [0, 1, 10, 19, 20, 21, 100, 150, 199, 200, 250]:
        if step == 0 and warmup == 0:
            assert float(schedule(step)) == pytest.approx(peak, rel=1e-5)
            continue
        assert float(schedule(step)) == pytest.approx(_reference_cosine(step, peak, total, warmup), rel=1e-4,
                                                      abs=1e-9), step


def test_constant_schedule_and_errors():
    assert schedules.learning_rate("constant", 5e-4) == 5e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        schedules.learning_rate("step", 5e-4, 100)
    with pytest.raises(ValueError, match="total number of steps"):
        schedules.learning_rate("cosine", 5e-4, None)
    with pytest.raises(ValueError, match="warmup_fraction"):
        schedules.learning_rate("cosine", 5e-4, 100, 1.0)


def test_carve_is_stratified_disjoint_seeded_and_keeps_duplicates_together():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (60, 4, 4, 1), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 20)
    images[5] = images[3]  # a duplicate pair inside class 0
    fit, held = validation.carve(images, labels, 0.25, seed=3)
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == 60
    for c in range(3):
        count = np.sum(labels[held] == c)
        assert count in (5, 6), count  # 0.25 * 20 = 5, one more when a duplicate pair is held out together
    assert (3 in held) == (5 in held)
    again_fit, again_held = validation.carve(images, labels, 0.25, seed=3)
    assert np.array_equal(held, again_held)
    other = validation.carve(images, labels, 0.25, seed=4)[1]
    assert not np.array_equal(held, other)
    # A small class still gives one image and keeps one.
    fit, held = validation.carve(images[:4], np.array([0, 0, 1, 1]), 0.1, seed=0)
    assert sorted(np.array([0, 0, 1, 1])[held]) == [0, 1]
    with pytest.raises(data_lib.DataError, match="class 1 has 1 distinct"):
        validation.carve(images[:3], np.array([0, 0, 1]), 0.5, seed=0)


# 32 px: what these runs check (validation, restoring, the stem rule, pretraining) holds as at
# 52 px, for about half the compute (the small stems keep 16 of 32 pixels).
SIZE = 32


def _config(tmp_path, **kwargs):
    settings = dict(model_dir=str(tmp_path / "run"), dataset="synthetic_wafers", synthetic_per_class=20,
                    shots_per_class=10, image_size=SIZE, backbone="resnet_tiny", epochs=6, verbose=0)
    settings.update(kwargs)
    return TrainConfig(**settings)


@pytest.mark.parametrize("method", ["scl_amp", "ce"])
def test_validation_accuracy_on_the_validated_epochs_and_the_best_restored(tmp_path, method):
    # SCL-AMP validates after every epoch; CE (it learns slower on 8 images per class: more epochs)
    # after every third and the last, and restores the best of those.
    epochs, every, validated = (6, 1, [1, 2, 3, 4, 5, 6]) if method == "scl_amp" else (10, 3, [3, 6, 9, 10])
    config = _config(tmp_path, method=method, validation_fraction=0.2, restore_best_validation=True,
                     lr_schedule="cosine", warmup_fraction=0.1, arc_on_views=True, epochs=epochs,
                     learning_rate=2e-3, crop_scale_min="auto", validation_every=every,
                     rotations="half" if method == "scl_amp" else "auto")
    metrics = train_and_evaluate(config)
    record = metrics["validation"]
    assert record["num_images"] == 38 * 2 and record["validated_epochs"] == validated
    assert len(record["history"]) == len(validated) and record["every"] == every
    best = int(np.argmax(record["history"]))
    assert record["best_epoch"] == validated[best] and record["best_val_accuracy"] == record["history"][best]
    # It learns: a few epochs with the cosine schedule beat chance clearly on the held-out images.
    assert record["best_val_accuracy"] > 4 * CHANCE, record
    assert metrics["test_accuracy"] > 4 * CHANCE, metrics["test_accuracy"]
    # The saved network is the best epoch's: its validation accuracy, recomputed from the files, is the best.
    data = data_lib.load("synthetic_wafers", image_size=SIZE, synthetic_per_class=20, seed=0)
    split = np.load(os.path.join(config.model_dir, "split.npz"))
    held = split["validation"]
    fit = np.setdiff1d(split["train"], held)
    encoder = keras.models.load_model(os.path.join(config.model_dir, "encoder.keras"))
    out = lambda idx: encoder.predict(data.images[idx] / np.float32(255), verbose=0)  # noqa: E731
    if method == "scl_amp":
        from scl_amp_tf.reference import ReferenceDatabase
        predictions = ReferenceDatabase.from_embeddings(out(fit), data.labels[fit], data.class_names).predict(out(held))
    else:
        predictions = np.argmax(out(held), axis=1)
    assert np.mean(predictions == data.labels[held]) == pytest.approx(record["best_val_accuracy"], abs=1e-6)
    # and each class's recall on its held-out images is the recorded one
    recall = {data.class_names[c]: np.mean(predictions[data.labels[held] == c] == c) for c in range(data.num_classes)}
    assert record["final"]["per_class_recall"] == pytest.approx(recall, abs=1e-6)
    assert record["final"]["accuracy"] == pytest.approx(record["best_val_accuracy"], abs=1e-6)
    assert json.load(open(os.path.join(config.model_dir, validation.BEST_RECORD)))["epoch"] == validated[best]
    assert metrics["crop_scale_min_used"] == 0.8 and metrics["frame_score"] > 0.5  # wafer maps share a frame
    if method == "scl_amp":  # learns with half turns too
        assert metrics["rotations_used"] == "half" and metrics["orientation_score"] is None
        # evaluate refuses to average the run's images over quarter turns it never trained
        with pytest.raises(ValueError, match="quarter turns, which the run's views .*half turns"):
            evaluating.evaluate_run(config.model_dir, tta="dihedral")
    else:  # wafer maps have no shared axis: auto keeps the paper's quarter turns
        assert metrics["rotations_used"] == "quarter"
        assert metrics["orientation_score"] < augmentation.ORIENTED_THRESHOLD
    # Every training image, the held-out ones too, is a reference of the final database.
    assert metrics["num_train"] == 38 * 10


def test_restore_best_needs_a_validation_split(tmp_path):
    with pytest.raises(ValueError, match="restore_best_validation needs"):
        train_and_evaluate(_config(tmp_path, restore_best_validation=True))


def test_contrastive_pretraining_then_a_few_shot_run_starts_from_its_backbone(tmp_path):
    from scl_amp_tf import run_folder, training

    pretrain = _config(tmp_path, model_dir=str(tmp_path / "pretrain"), method="contrastive", steps=40,
                       shots_per_class=5, test_fraction=0.5, unlabeled_data="rest", verbose=0)
    metrics = train_and_evaluate(pretrain)
    # The pool: 5 training + 5 other images of each of 38 classes = 380 images, 12 steps per epoch;
    # --steps=40 gives ceil(40 / 12) = 4 epochs.
    assert (metrics["epochs"], metrics["steps"]) == (4, 48)
    # No labels were used, yet L_con fell and the reference database of the labelled images classifies.
    history = metrics["final_train_metrics"]
    assert history["arc_loss"] == 0.0
    assert metrics["test_accuracy"] > 3 * CHANCE, metrics["test_accuracy"]
    weights = os.path.join(pretrain.model_dir, run_folder.BACKBONE_WEIGHTS)
    assert os.path.exists(weights)
    saved = keras.models.load_model(os.path.join(pretrain.model_dir, "encoder.keras"))
    expected = [w.copy() for w in saved.get_layer("resnet_tiny").get_weights()]

    import tensorflow as tf
    for how in ({"init_from": pretrain.model_dir}, {"backbone_weights": weights}):
        config = _config(tmp_path, model_dir=str(tmp_path / "fewshot"), **how)
        _, _, features, _ = training.build_model(config, tf.distribute.get_strategy(), (SIZE, SIZE, 1), 38)
        got = features.get_layer("resnet_tiny").get_weights()
        assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected)), how
    with pytest.raises(ValueError, match="trained a resnet_tiny backbone, not --backbone=resnet18"):
        train_and_evaluate(_config(tmp_path, model_dir=str(tmp_path / "x"), backbone="resnet18", shots_per_class=5,
                                   test_fraction=0.5, init_from=pretrain.model_dir))
    with pytest.raises(ValueError, match="not a finished run"):
        train_and_evaluate(_config(tmp_path, model_dir=str(tmp_path / "y"), init_from=str(tmp_path)))
    # The pre-training fitted 10 of each class's 20 maps (5 training, 5 pool) and held out the other
    # 10: a run holding out the same 10 per class starts from it; a run holding out more does not.
    data = data_lib.load_dataset("synthetic_wafers", SIZE, synthetic_per_class=20, seed=0)
    same = _config(tmp_path, model_dir=str(tmp_path / "same"), shots_per_class=5, test_fraction=0.5,
                   init_from=pretrain.model_dir)
    _, test_idx = data_lib.split(data, seed=0, shots_per_class=5, test_fraction=0.5)
    training.check_pretraining_saw_no_test_image(same, data, test_idx)
    with pytest.raises(ValueError, match=f"pre-trained on {38 * 4} of this run's {38 * 14} test images"):
        train_and_evaluate(_config(tmp_path, model_dir=str(tmp_path / "z"), shots_per_class=5, test_fraction=0.7,
                                   init_from=pretrain.model_dir))
    assert not os.path.exists(tmp_path / "z")  # refused before anything is written


def test_frame_score_tells_framed_images_from_free_textures():
    wafers = data_lib.load("synthetic_wafers", image_size=52, synthetic_per_class=3, seed=0).images
    rng = np.random.default_rng(0)
    # A free texture: smooth random blobs at random places, gray levels all over the image.
    noise = rng.normal(size=(120, 16, 16)).repeat(4, 1).repeat(4, 2)
    textures = np.clip(128 + 40 * noise, 0, 255).astype(np.uint8)[..., None]
    assert augmentation.frame_score(wafers) > 0.7
    assert augmentation.frame_score(textures) < 0.15
    assert augmentation.auto_crop_scale_min(wafers)[0] == augmentation.FRAMED_CROP_SCALE_MIN
    assert augmentation.auto_crop_scale_min(textures)[0] == 0.25
    # Independent NumPy formula on a tiny case: two 2x2 images.
    pair = np.array([[[0, 10], [20, 30]], [[10, 20], [30, 40]]], np.uint8)[..., None]
    x = pair[..., 0].astype(np.float64)
    assert augmentation.frame_score(pair) == pytest.approx(x.mean(0).std() / x.std(), rel=1e-6)
    assert augmentation.frame_score(np.full((3, 4, 4, 1), 7, np.uint8)) == 0.0


def test_orientation_score_tells_oriented_classes_from_turned_ones():
    # Independent arithmetic on ramps: a ramp along x has only horizontal gradients (anisotropy 1),
    # its transpose only vertical ones (-1); a class scores |mean| less two standard errors.
    ramp = np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))
    images = np.stack([ramp, ramp, ramp, ramp.T])[..., None]
    np.testing.assert_allclose(augmentation.anisotropy(images), [1, 1, 1, -1])
    # class 0: two x-ramps (mean 1, spread 0: 1); class 1: one of each (mean 0: 0)
    assert augmentation.orientation_score(images, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    # one class of three x-ramps and a transposed one: mean 0.5, std 1 (ddof 1), 2 * 1 / 2 = 1: 0
    assert augmentation.orientation_score(images, np.array([0, 0, 0, 0])) == 0.0
    assert augmentation.orientation_score(images[:3], np.array([0, 0, 0])) == pytest.approx(1.0)
    assert augmentation.orientation_score(images[:2], np.array([0, 1])) == 0.0  # one image a class: chance
    assert augmentation.orientation_score(np.full((2, 4, 4, 1), 9, np.uint8), np.array([0, 0])) == 0.0
    # Streaks that run one way in every image of a class (steel strips' rolling direction), and the
    # same images each turned by a random quarter turn (no shared axis).
    rng = np.random.default_rng(0)
    streaks = np.clip(128 + 60 * rng.normal(size=(40, 1, 32)).repeat(32, 1), 0, 255).astype(np.uint8)
    turned = np.stack([np.rot90(x, k) for x, k in zip(streaks, rng.integers(0, 4, 40))])
    labels = np.repeat([0, 1], 20)
    assert augmentation.orientation_score(streaks[..., None], labels) > 0.9
    assert augmentation.orientation_score(turned[..., None], labels) < augmentation.ORIENTED_THRESHOLD / 2
    assert augmentation.auto_rotations(streaks[..., None], labels)[0] == "half"
    wafers = data_lib.load("synthetic_wafers", image_size=52, synthetic_per_class=10, seed=0)
    rotations, score = augmentation.auto_rotations(wafers.images, wafers.labels)
    assert rotations == "quarter" and score < augmentation.ORIENTED_THRESHOLD


def test_half_turns_refuse_the_dihedral_test_time_augmentation(tmp_path):
    # It would average each image over quarter turns that the run never trained on.
    config = _config(tmp_path, rotations="half", tta="dihedral")
    with pytest.raises(ValueError, match="--tta=dihedral averages each image over quarter turns"):
        train_and_evaluate(config)
    assert not os.path.exists(config.model_dir)  # refused before anything is written


def test_stems_keep_the_resolution_the_auto_rule_and_resnet50():
    """The first block sees 1/4 of the image (imagenet), 1/2 (small_pool) or all of it (small)."""
    from scl_amp_tf import models

    for stem, size in (("imagenet", 13), ("small_pool", 26), ("small", 52)):
        net = models.basic_resnet((52, 52, 1), (1, 1, 1, 1), (16, 32, 64, 128), "resnet_tiny", stem=stem)
        first_block = net.get_layer("stage1_block1_conv1")
        assert first_block.input.shape[1:3] == (size, size), stem
        assert net.output.shape == (None, 128)
    assert models.auto_stem(52, "resnet_tiny") == models.auto_stem(64, "resnet18") == "small_pool"
    assert models.auto_stem(96, "resnet_tiny") == models.auto_stem(200, "resnet_tiny") == "imagenet"
    assert models.auto_stem(64, "resnet50") == "imagenet"
    with pytest.raises(ValueError, match="resnet50 has the ImageNet stem only"):
        TrainConfig(model_dir="x", backbone="resnet50", stem="small").validate()


def test_the_small_stem_learns_and_auto_is_recorded(tmp_path):
    config = _config(tmp_path, stem="auto", epochs=6)
    metrics = train_and_evaluate(config)
    assert metrics["stem_used"] == "small_pool"
    assert metrics["fused_batchnorm"] is True  # the default, recorded
    assert metrics["test_accuracy"] > 4 * CHANCE, metrics["test_accuracy"]
    encoder = keras.models.load_model(os.path.join(config.model_dir, "encoder.keras"))
    from scl_amp_tf import layers
    assert type(encoder.get_layer("resnet_tiny").get_layer("stem_bn")) is layers.BatchNormalization
    assert any(layer.name == "stem_conv" and layer.kernel_size == (3, 3)
               for layer in encoder.get_layer("resnet_tiny").layers)


@pytest.mark.parametrize("method", ["scl_amp", "ce"])
def test_weight_decay_shrinks_the_kernels_only(tmp_path, method):
    """--weight_decay (decoupled, as AdamW): with zero gradients Adam's own update is 0, so one step
    multiplies every kernel (weight matrices, convolutions, ArcMargin's class centres) by
    1 - learning rate x weight decay and leaves biases and batch norm's scales and offsets alone."""
    import tensorflow as tf

    from scl_amp_tf import training

    lr, wd = 1e-2, 0.25
    config = _config(tmp_path, method=method, learning_rate=lr, weight_decay=wd)
    model, _, _, _ = training.build_model(config, tf.distribute.get_strategy(), (SIZE, SIZE, 1), 5)
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    model.optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    for old, v in zip(before, variables):
        expected = old * np.float32(1 - lr * wd) if old.ndim >= 2 else old
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-9, err_msg=v.path)
    assert sum(old.ndim >= 2 for old in before) >= 5 and sum(old.ndim < 2 for old in before) >= 5
    if method == "scl_amp":  # the class centres of Eq. 4 shrink too (their norm does not enter the cosine)
        centres = [old for old, v in zip(before, variables) if "arc" in v.path.lower()]
        assert centres and all(c.ndim == 2 for c in centres)
    for bad in (dict(weight_decay=-0.1), dict(learning_rate=0.5, weight_decay=2.0)):
        with pytest.raises(ValueError, match=f"--weight_decay={bad['weight_decay']} must be at least 0 and under"):
            _config(tmp_path, **bad).validate()
    _config(tmp_path, learning_rate=5e-4, weight_decay=2.0).validate()  # a shrink of 0.999 a step


def test_a_run_with_weight_decay_learns(tmp_path):
    metrics = train_and_evaluate(_config(tmp_path, weight_decay=0.05, lr_schedule="cosine"))
    assert metrics["test_accuracy"] > 4 * CHANCE, metrics["test_accuracy"]
    assert json.load(open(os.path.join(tmp_path, "run", "config.json")))["weight_decay"] == 0.05
