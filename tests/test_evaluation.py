"""Evaluation: metrics against direct NumPy computations, the few-shot sampler, open-set
rejection, and the evaluate command end to end on a tiny trained run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scl_amp_tf import evaluation, open_set
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate


def test_confusion_matrix_and_per_class_accuracy_by_counting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 4, 200))
    predictions[:7] = evaluation.UNKNOWN
    matrix = evaluation.confusion_matrix(labels, predictions, 4)
    for i in range(4):
        for j in range(4):
            assert matrix[i, j] == sum(1 for a, b in zip(labels, predictions) if a == i and b == j)
    summary = evaluation.summarize(labels, predictions, ("a", "b", "c", "d"))
    assert summary["accuracy"] == pytest.approx(np.mean(labels == predictions))
    for i, name in enumerate("abcd"):  # a rejected query counts as wrong for its class
        assert summary["per_class_accuracy"][name] == pytest.approx(np.mean(predictions[labels == i] == i))
    assert summary["rejected"] == 7 and sum(summary["rejected_per_class"]) == 7
    table = evaluation.confusion_markdown(matrix, ("a", "b", "c", "d"), summary["rejected_per_class"])
    row_a = next(line for line in table.splitlines() if line.startswith("| **a**"))
    assert row_a.split(" | ")[1:5] == [str(v) for v in matrix[0]]
    assert f"{100 * summary['per_class_accuracy']['a']:.1f} %" in row_a


def test_precision_recall_f1_and_balanced_accuracy_by_counting():
    """An imbalanced set (class 0 is 70 %): scikit-learn's figures against direct counts."""
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(140, np.int64), rng.integers(1, 4, 60)]
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 4, 200))
    predictions[[0, 150, 160]] = evaluation.UNKNOWN
    summary = evaluation.summarize(labels, predictions, ("ok", "b", "c", "d"))
    f1s, recalls, precisions = [], [], []
    for i, name in enumerate(("ok", "b", "c", "d")):
        tp = np.sum((predictions == i) & (labels == i))
        precision = tp / max(np.sum(predictions == i), 1)
        recall = tp / np.sum(labels == i)  # a rejected query is a miss of its class
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        got = summary["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((precision, recall, f1))
        assert got["support"] == np.sum(labels == i)
        f1s.append(f1), recalls.append(recall), precisions.append(precision)
    assert summary["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert summary["macro_f1"] == pytest.approx(np.mean(f1s))
    assert summary["macro_precision"] == pytest.approx(np.mean(precisions))
    # the point of it: always answering "ok" is 70 % accurate and 25 % balanced
    lazy = evaluation.summarize(labels, np.zeros(200, np.int64), ("ok", "b", "c", "d"))
    assert lazy["accuracy"] == pytest.approx(0.7) and lazy["balanced_accuracy"] == pytest.approx(0.25)


def test_leave_one_class_out_auroc_by_hand():
    rng = np.random.default_rng(6)
    refs, ref_labels = rng.normal(size=(12, 4)), np.repeat([0, 1, 2], 4)
    queries, query_labels = rng.normal(size=(15, 4)), np.repeat([0, 1, 2], 5)
    got = open_set.leave_one_class_out_auroc(refs, ref_labels, queries, query_labels)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    for c in range(3):
        others = [k for k in range(3) if k != c]
        best = np.max([np.mean(unit(queries) @ unit(refs[ref_labels == k]).T, axis=1) for k in others], axis=0)
        known, unknown = best[query_labels != c], best[query_labels == c]
        expected = np.mean([(a > b) + 0.5 * (a == b) for a in known for b in unknown])
        assert got[c] == pytest.approx(expected)


def test_reference_predictions_are_the_mean_cosine_of_section_iv_a():
    rng = np.random.default_rng(1)
    refs, ref_labels, queries = rng.normal(size=(12, 5)), np.repeat([0, 1, 2], 4), rng.normal(size=(9, 5))
    predictions, scores, _ = evaluation.reference_predictions(refs, ref_labels, queries, ("x", "y", "z"))

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    expected = np.array([[np.mean([cos(q, r) for r, label in zip(refs, ref_labels) if label == c]) for c in range(3)]
                         for q in queries])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_array_equal(predictions, expected.argmax(1))
    best = np.sort(expected.max(1))
    threshold = (best[3] + best[4]) / 2  # between two scores: no float32 round-off at the boundary
    rejected, _, _ = evaluation.reference_predictions(refs, ref_labels, queries, None, threshold=threshold)
    np.testing.assert_array_equal(rejected == evaluation.UNKNOWN, expected.max(1) < threshold)
    assert np.sum(rejected == evaluation.UNKNOWN) == 4


def test_leave_one_out_threshold_by_brute_force():
    rng = np.random.default_rng(2)
    z, labels = rng.normal(size=(15, 4)), np.array([0] * 6 + [1] * 8 + [2])  # class 2: one reference
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    # the reject rule compares a query's best score over the classes with the threshold, so the
    # calibration takes each reference's best score: its own class without it, the others whole
    best, own = [], []
    for i in range(15):
        others = [j for j in range(15) if labels[j] == labels[i] and j != i]
        if others:
            scores = [unit[i] @ (unit[others] if c == labels[i] else unit[labels == c]).mean(0) for c in range(3)]
            best.append(max(scores))
            own.append(scores[labels[i]])
    np.testing.assert_allclose(np.sort(open_set.leave_one_out_best_scores(z, labels)), np.sort(best), atol=1e-6)
    assert max(best) > 0 and np.any(np.array(best) > np.array(own) + 1e-3)  # another class can score higher
    # the conformal quantile: the floor((n + 1) q)-th smallest (14 scores, q = 0.2: the 3rd)
    assert open_set.calibrate_threshold(z, labels, 0.2) == pytest.approx(np.sort(best)[2], abs=1e-6)
    held = np.arange(15) % 2 == 0  # only some references calibrate; all of them count in the class means
    held_best = [b for i, b in zip([i for i in range(15) if labels[i] != 2], best) if held[i]]
    assert len(held_best) == 7 and open_set.calibrate_threshold(z, labels, 0.25, held_out=held) == pytest.approx(
        np.sort(held_best)[1], abs=1e-6)  # floor(8 * 0.25) = 2nd smallest
    with pytest.raises(ValueError, match="needs 19 calibration images at least; there are 14"):
        open_set.calibrate_threshold(z, labels, 0.05)  # 14 scores cannot promise 95 %
    with pytest.raises(ValueError, match="two references of one class"):
        open_set.calibrate_threshold(z[:2], [0, 1])


def test_leave_one_out_scores_under_normalised_prototypes_by_brute_force():
    """``prototypes="normalised"``: each class mean (the own one without the reference) at unit length."""
    rng = np.random.default_rng(3)
    z, labels = rng.normal(size=(15, 4)) + [2, 0, 0, 0], np.array([0] * 6 + [1] * 8 + [2])
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)

    def direction(vectors):
        mean = vectors.mean(0)
        return mean / np.linalg.norm(mean)

    best = []
    for i in range(15):
        others = [j for j in range(15) if labels[j] == labels[i] and j != i]
        if others:
            best.append(max(unit[i] @ direction(unit[others] if c == labels[i] else unit[labels == c])
                            for c in range(3)))
    scores = open_set.leave_one_out_best_scores(z, labels, prototypes="normalised")
    np.testing.assert_allclose(np.sort(scores), np.sort(best), atol=1e-6)
    assert not np.allclose(np.sort(scores), np.sort(open_set.leave_one_out_best_scores(z, labels)), atol=1e-3)
    assert open_set.calibrate_threshold(z, labels, 0.2, prototypes="normalised") == pytest.approx(
        np.sort(best)[2], abs=1e-6)


def test_auroc_against_all_pairs():
    rng = np.random.default_rng(3)
    pos, neg = np.round(rng.normal(1, 1, 40), 1), np.round(rng.normal(0, 1, 30), 1)  # rounded: ties
    pairs = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    assert open_set.auroc(pos, neg) == pytest.approx(pairs)
    assert open_set.auroc([2, 3], [0, 1]) == 1.0 and open_set.auroc([0, 1], [2, 3]) == 0.0


@pytest.mark.parametrize("shots", [1, 3, 5])
def test_few_shot_sampler_never_puts_a_reference_among_its_queries(shots):
    labels = np.repeat([4, 7, 9], [6, 8, 10])  # class ids as in a full dataset: not 0..n-1
    rng = np.random.default_rng(shots)
    for _ in range(20):
        references, queries = evaluation.episode_split(labels, shots, rng)
        assert len(np.intersect1d(references, queries)) == 0
        assert len(references) + len(queries) == len(labels)
        np.testing.assert_array_equal(np.unique(labels[references], return_counts=True)[1], [shots] * 3)
    with pytest.raises(ValueError, match="leave no query"):
        evaluation.episode_split(labels, 6, rng)


def test_few_shot_and_open_set_on_separable_clusters():
    rng = np.random.default_rng(4)
    centres = np.eye(8)[:4] * 10
    labels = np.repeat([2, 3, 5, 6], 10)
    z = centres[np.searchsorted([2, 3, 5, 6], labels)] + rng.normal(size=(40, 8))
    accuracies = evaluation.few_shot_accuracies(z, labels, 1, 5, seed=0)
    assert accuracies.shape == (5,) and np.all(accuracies == 1.0)
    result = open_set.open_set_auroc(z, labels, 3, 2, seed=0, threshold=0.5)
    assert result["auroc"].shape == (8,) and np.all(result["auroc"] > 0.95)
    assert np.all(result["known_accepted"] > 0.9) and np.all(result["unknown_rejected"] > 0.9)
    # the same seed draws the same episodes
    np.testing.assert_array_equal(accuracies, evaluation.few_shot_accuracies(z, labels, 1, 5, seed=0))


def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "scl_amp_tf.evaluate", *args], capture_output=True, text=True,
                          timeout=300)


def test_evaluate_command_reproduces_training_accuracy_and_writes_files(tiny_runs):
    for method, (config, metrics) in tiny_runs.items():
        done = _evaluate(f"--model_dir={config.model_dir}")
        assert done.returncode == 0, done.stderr
        out = os.path.join(config.model_dir, "evaluation")
        result = json.load(open(os.path.join(out, "evaluation.json")))
        assert result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
        assert result["classifier"] == ("softmax" if method == "ce" else "reference database on the embeddings")
        assert np.sum(result["confusion_matrix"]) == metrics["num_test"]
        assert "| **Normal** |" in open(os.path.join(out, "confusion_matrix.md")).read()
        assert open(os.path.join(out, "confusion_matrix.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert open(os.path.join(out, "misclassified.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        per_class = result["per_class"]
        assert set(per_class) == set(result["class_names"])
        assert sum(m["support"] for m in per_class.values()) == metrics["num_test"]
        recalls = [per_class[n]["recall"] for n in result["class_names"] if per_class[n]["support"]]
        assert result["balanced_accuracy"] == pytest.approx(np.mean(recalls))
        assert "balanced accuracy" in done.stdout and "macro F1" in done.stdout
        projector = os.path.join(config.model_dir, "logs", "projector")
        metadata = open(os.path.join(projector, "metadata.tsv")).read().splitlines()
        expected_rows = metrics["num_test"] + (0 if method == "ce" else metrics["num_train"])
        assert metadata[0] == "class\tsplit" and len(metadata) == 1 + expected_rows
        assert "accuracy" in done.stdout
        assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def _validation_threshold(config, split):
    """The conformal 5 % quantile of each validation image's best score over the classes (the mean cosine to
    each class's training images, its own class's without it), computed directly from the saved
    encoder."""
    import keras

    from scl_amp_tf import data as data_lib

    data = data_lib.load("synthetic_wafers", image_size=32, synthetic_per_class=4, seed=0)
    encoder = keras.models.load_model(os.path.join(config.model_dir, "encoder.keras"))
    train = split["train"]
    z = encoder.predict(data.images[train] / np.float32(255), verbose=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    labels = data.labels[train]
    values = []
    for i in np.flatnonzero(np.isin(train, split["validation"])):
        scores = [z[i] @ z[[j for j in range(len(train)) if labels[j] == c and j != i]].mean(axis=0)
                  for c in np.unique(labels)]
        values.append(max(scores))
    return float(np.sort(values)[int((len(values) + 1) * 0.05) - 1])  # the conformal 5 % quantile


def test_evaluate_reference_shots_rejection_and_errors(tiny_runs, tmp_path):
    config = tiny_runs["scl_amp"][0]
    done = _evaluate(f"--model_dir={config.model_dir}", "--reference_shots=2", "--seed=3",
                     "--reject_threshold=auto", "--noprojector", f"--output_dir={tmp_path / 'e'}")
    assert done.returncode == 0, done.stderr
    result = json.load(open(tmp_path / "e" / "evaluation.json"))
    assert result["num_references"] == 76 and result["reject_threshold_setting"] == "auto"
    assert result["reject_threshold"] is not None and "rejected as unknown" in done.stdout
    aurocs = result["open_set_auroc"]["per_left_out_class"]
    assert len(aurocs) == 38 and all(0.0 <= v <= 1.0 for v in aurocs.values())
    assert result["open_set_auroc"]["mean"] == pytest.approx(np.mean(list(aurocs.values())))
    assert "open-set AUROC" in done.stdout
    # auto is calibrated on the validation images (one per class here), never on fitted ones
    import shutil

    split = np.load(os.path.join(config.model_dir, "split.npz"))
    assert len(split["validation"]) == 38
    assert result["reject_threshold"] == pytest.approx(_validation_threshold(config, split), abs=1e-5)
    unvalidated = tmp_path / "no_validation"
    shutil.copytree(config.model_dir, unvalidated)
    np.savez(unvalidated / "split.npz", train=split["train"], test=split["test"], validation=np.zeros(0, np.int64))
    # The other settings and errors in this process (each command start loads TensorFlow again); the
    # command's own error path (exit status 2, one line) is the last check.
    from scl_amp_tf.evaluating import evaluate_run

    with pytest.raises(ValueError, match="train it with --validation_fraction"):
        evaluate_run(str(unvalidated), reject_threshold="auto")
    assert evaluate_run(config.model_dir, reference_shots=1, seed=3)[0]["num_references"] == 38
    with pytest.raises(ValueError, match="--representation=backbone"):
        evaluate_run(tiny_runs["ce"][0].model_dir, reject_threshold=0.5)
    with pytest.raises(ValueError, match="--prototypes=normalised works on reference databases"):
        evaluate_run(tiny_runs["ce"][0].model_dir, prototypes="normalised")
    with pytest.raises(ValueError, match="none, auto or a number"):
        open_set.parse_threshold("high")
    done = _evaluate(f"--model_dir={tmp_path / 'nothing'}", f"--output_dir={tmp_path / 'f'}")
    assert done.returncode == 2 and "not a finished training run" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "f").exists()


def test_evaluate_a_run_on_the_tfds_builder_with_dummy_data(tmp_path):
    """The TFDS path end to end: NEU built from the builder's dummy files (2 images per class),
    trained with 1 image per class, evaluated by the command with the data dir it recorded."""
    dummy = os.path.join(os.path.dirname(__file__), os.pardir, "datasets", "neu", "dummy_data")
    config = TrainConfig(model_dir=str(tmp_path / "run"), dataset="neu", data_dir=str(tmp_path / "tfds"),
                         manual_dir=os.path.abspath(dummy), shots_per_class=1, image_size=32,
                         backbone="resnet_tiny", epochs=1, batch_size=6, verbose=0)
    metrics = train_and_evaluate(config)
    assert metrics["num_train"] == 6 and metrics["num_test"] == 6
    done = _evaluate(f"--model_dir={config.model_dir}", "--noprojector")
    assert done.returncode == 0, done.stderr
    result = json.load(open(os.path.join(config.model_dir, "evaluation", "evaluation.json")))
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"]) and result["dataset"] == "neu"
    assert sorted(result["class_names"]) == ["Cr", "In", "PS", "Pa", "RS", "Sc"]
