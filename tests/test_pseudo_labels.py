"""--pseudo_labels_from: a teacher run labels the unlabeled pool; the student trains on the
labelled images plus the teacher's confident, class-balanced share of the pool."""
import dataclasses
import os

import numpy as np
import pytest

from scl_amp_tf import data as data_lib
from scl_amp_tf import pseudo_labels, run_folder
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate

CLASSES = "Normal,C,D,EL,ER,L,NF,S"  # the single-type classes: a small task that learns in a few seconds
CHANCE = 1 / 8


def _reference_select(scores, counts, ratio):
    """Independent: loop over the images of each class, keep the largest margins (ties: lower index)."""
    chosen = []
    for k, count in enumerate(counts):
        candidates = []
        for i, row in enumerate(scores):
            order = sorted(range(len(row)), key=lambda j: -row[j])
            if order[0] == k:
                candidates.append((-(row[order[0]] - row[order[1]]), i))
        chosen += [(i, k) for _, i in sorted(candidates)[:int(round(ratio * count))]]
    return sorted(chosen)


def test_select_takes_the_largest_margins_class_by_class():
    scores = np.array([[0.9, 0.1, 0.0],    # class 0, margin 0.8
                       [0.6, 0.5, 0.0],    # class 0, margin 0.1
                       [0.7, 0.0, 0.2],    # class 0, margin 0.5
                       [0.2, 0.3, 0.25],   # class 1, margin 0.05
                       [0.0, 0.1, 0.9]])   # class 2, margin 0.8
    indices, labels, margins = pseudo_labels.select(scores, [1, 1, 1], ratio=2)
    # class 0 takes its two largest margins (images 0 and 2), not image 1; the others all they have
    assert indices.tolist() == [0, 2, 3, 4] and labels.tolist() == [0, 0, 1, 2]
    assert margins == pytest.approx([0.8, 0.5, 0.05, 0.8])
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.random((60, 4)).round(2)  # rounded: equal margins occur, and break by index
        counts = rng.integers(1, 5, size=4)
        ratio = float(rng.choice([0.5, 1.0, 2.5]))
        indices, labels, _ = pseudo_labels.select(scores, counts, ratio)
        assert list(zip(indices.tolist(), labels.tolist())) == _reference_select(scores, counts, ratio)
    with pytest.raises(ValueError, match="2 labelled counts for 3 classes"):
        pseudo_labels.select(np.zeros((4, 3)), [1, 1], 1.0)


def _config(tmp_path, name, **kwargs):
    # 20 maps per class: 10 test maps, 5 training maps, 5 for the pool (rest)
    settings = dict(model_dir=str(tmp_path / name), dataset="synthetic_wafers", synthetic_per_class=20,
                    classes=CLASSES, shots_per_class=5, test_fraction=0.5, image_size=32, backbone="resnet_tiny",
                    steps=60, learning_rate=2e-3, arc_on_views=True, crop_scale_min=0.8, verbose=0)
    settings.update(kwargs)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("teacher"), "teacher")
    metrics = train_and_evaluate(config)
    assert metrics["test_accuracy"] > 4 * CHANCE, metrics["test_accuracy"]
    return config


# CE's student is the same code path with CE's training step: in the slow tests (pytest -m slow).
@pytest.mark.parametrize("method", ["scl_amp", pytest.param("ce", marks=pytest.mark.slow)])
def test_a_student_trains_on_the_teachers_confident_pool_images(tmp_path, teacher, method):
    from scl_amp_tf.predicting import RunPredictor

    config = _config(tmp_path, "student", method=method, unlabeled_data="rest", pseudo_labels_from=teacher.model_dir,
                     pseudo_label_ratio=0.6)
    metrics = train_and_evaluate(config)
    record = metrics["pseudo_labels"]
    # the pool: the 5 maps per class that are neither training nor test maps
    data = data_lib.load_dataset("synthetic_wafers", 32, synthetic_per_class=20, seed=0, classes=CLASSES)
    train_idx, test_idx = data_lib.split(data, seed=0, shots_per_class=5, test_fraction=0.5)
    rest = data_lib.remaining(data, train_idx, test_idx)
    assert record["pool"] == len(rest) == 8 * 5
    # the teacher's choice, recomputed from its own predictions: round(0.6 * 5) = 3 per class at most
    expected, labels, _ = pseudo_labels.select(RunPredictor(teacher.model_dir).scores(data.images[rest]),
                                               [5] * 8, 0.6)
    with np.load(os.path.join(config.model_dir, run_folder.PSEUDO_LABELS)) as saved:
        assert saved["indices"].tolist() == expected.tolist() and saved["labels"].tolist() == labels.tolist()
    assert record["count"] == len(expected) and max(record["per_class"].values()) <= 3
    assert metrics["fit_images"] == 8 * 5 + len(expected)
    assert record["precision"] == pytest.approx(np.mean(data.labels[rest][expected] == labels))
    assert record["precision"] > 5 * CHANCE  # the teacher's confident labels are mostly right
    assert metrics["test_accuracy"] > 4 * CHANCE, metrics["test_accuracy"]  # and the student learns
    # The reference database holds the labelled images only (the k shots), not the pseudo-labelled ones.
    assert metrics["num_train"] == 8 * 5
    if method == "ce":  # a CE run (here the student) scores by the softmax of its logits
        import keras

        logits = keras.models.load_model(os.path.join(config.model_dir, run_folder.ENCODER)).predict(
            data.images[test_idx[:50]] / np.float32(255), verbose=0)
        probabilities = RunPredictor(config.model_dir).scores(data.images[test_idx[:50]])
        expected_p = np.exp(logits - logits.max(1, keepdims=True))
        assert probabilities == pytest.approx(expected_p / expected_p.sum(1, keepdims=True), abs=1e-5)

    # A resumed run takes the saved choice: it no longer needs the teacher, wherever it was.
    per_epoch = metrics["steps"] // metrics["epochs"]
    again = train_and_evaluate(_config(tmp_path, "student", method=method, unlabeled_data="rest",
                                       pseudo_label_ratio=0.6, pseudo_labels_from=str(tmp_path / "gone"),
                                       steps=metrics["steps"] + 2 * per_epoch))
    assert again["pseudo_labels"] == {**record, "teacher": str(tmp_path / "gone")}
    assert again["epochs_run_in_this_call"] == [metrics["epochs"] + 1, metrics["epochs"] + 2]
    with pytest.raises(ValueError, match="pseudo_label_ratio: 0.6 there vs 0.8 now"):  # the ratio is a setting
        train_and_evaluate(_config(tmp_path, "student", method=method, unlabeled_data="rest",
                                   pseudo_label_ratio=0.8, pseudo_labels_from=teacher.model_dir))


def test_a_teacher_with_other_test_images_is_refused(tmp_path, teacher):
    config = _config(tmp_path, "student", seed=1, unlabeled_data="rest", pseudo_labels_from=teacher.model_dir)
    with pytest.raises(ValueError, match="holds out other test images than this run"):
        train_and_evaluate(config)
    assert not os.path.exists(config.model_dir)  # nothing written


@pytest.mark.parametrize("kwargs, message", [
    (dict(pseudo_labels_from="x"), "labels the images of --unlabeled_data"),
    (dict(pseudo_labels_from="x", unlabeled_data="rest", method="contrastive"), "gives labels"),
    (dict(pseudo_labels_from="x", unlabeled_data="rest", pseudo_label_ratio=0), "must be positive"),
    (dict(pseudo_labels_from="/no/such/run", unlabeled_data="rest"), "not a finished training run"),
])
def test_pseudo_label_flag_errors(tmp_path, kwargs, message):
    config = _config(tmp_path, "student", **kwargs)
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config)
    assert not os.path.exists(config.model_dir)


def test_the_teacher_is_recorded_in_the_flag_file(tmp_path, teacher):
    config = _config(tmp_path, "student", unlabeled_data="rest", pseudo_labels_from=teacher.model_dir)
    assert f"--pseudo_labels_from={teacher.model_dir}" in config.as_flags().splitlines()
    assert config.run_settings()["pseudo_label_ratio"] == 4.0


def test_with_validation_the_teacher_labels_the_pool_without_the_students_validation_images(tmp_path, teacher):
    import keras

    # A teacher that fitted the student's validation images would carry their labels into the student.
    refused = _config(tmp_path, "refused", unlabeled_data="rest", pseudo_labels_from=teacher.model_dir,
                      validation_fraction=0.4)
    with pytest.raises(ValueError, match=r"did not hold out (\d+) of the \1 images this run holds out for validation"):
        train_and_evaluate(refused)
    assert not os.path.exists(refused.model_dir)

    held_out_teacher = _config(tmp_path, "teacher_v", validation_fraction=0.4)
    train_and_evaluate(held_out_teacher)
    student = _config(tmp_path, "student_v", unlabeled_data="rest", pseudo_labels_from=held_out_teacher.model_dir,
                      pseudo_label_ratio=0.6, validation_fraction=0.4, steps=8)
    train_and_evaluate(student)

    data = data_lib.load_dataset("synthetic_wafers", 32, synthetic_per_class=20, seed=0, classes=CLASSES)
    train_idx, test_idx = data_lib.split(data, seed=0, shots_per_class=5, test_fraction=0.5)
    rest = data_lib.remaining(data, train_idx, test_idx)
    with np.load(os.path.join(student.model_dir, run_folder.SPLIT)) as split:
        held_out = split["validation"]
    fit = np.setdiff1d(train_idx, held_out)
    assert 0 < len(held_out) and len(fit) + len(held_out) == len(train_idx)
    # Independent: the teacher's unit embeddings; a class's score is the mean cosine similarity to
    # its references, here the student's fitted images only.
    encoder = keras.models.load_model(os.path.join(held_out_teacher.model_dir, run_folder.ENCODER))

    def unit(images):
        e = encoder.predict(images / np.float32(255), verbose=0)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    references, queries = unit(data.images[fit]), unit(data.images[rest])
    expected = np.stack([(queries @ references[data.labels[fit] == k].T).mean(axis=1) for k in range(8)], axis=1)
    fit_labelled = data_lib.LabelledImages(data.images[fit], data.labels[fit], data.class_names, "fit")
    scores, _ = pseudo_labels.teacher_scores(held_out_teacher.model_dir, data.images[rest], fit_labelled)
    assert scores == pytest.approx(expected, abs=1e-5)
    full, _ = pseudo_labels.teacher_scores(held_out_teacher.model_dir, data.images[rest])
    assert np.abs(full - expected).max() > 1e-3  # the run's own database (with the held-out images) differs
    chosen, labels, margins = pseudo_labels.select(scores, [5] * 8, 0.6)
    path = os.path.join(student.model_dir, run_folder.PSEUDO_LABELS)
    with np.load(path) as saved:
        assert saved["indices"].tolist() == chosen.tolist() and saved["labels"].tolist() == labels.tolist()
        assert saved["margins"] == pytest.approx(margins, abs=1e-5)  # the scores of the fitted images' references
        assert sorted(saved["validation"].tolist()) == sorted(held_out.tolist())

    # A run folder whose choice was saved without the held-out images (before this rule) is refused on resume.
    with np.load(path) as saved:
        np.savez(path, indices=saved["indices"], labels=saved["labels"], margins=saved["margins"])
    with pytest.raises(ValueError, match="references included this run's validation images"):
        train_and_evaluate(dataclasses.replace(student, steps=16))
