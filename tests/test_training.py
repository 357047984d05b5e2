"""End to end: training learns, both methods run through the CLI, resume, errors, strategies."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf import data as data_lib
from scl_amp_tf import models
from scl_amp_tf import provenance
from scl_amp_tf.reference import ReferenceDatabase
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate

CHANCE = 1 / 38


def _config(tmp_path, **kwargs):
    settings = dict(model_dir=str(tmp_path / "run"), dataset="synthetic_wafers", synthetic_per_class=20,
                    shots_per_class=10, image_size=32, backbone="resnet_tiny", epochs=8, verbose=0)
    settings.update(kwargs)
    return TrainConfig(**settings)


def test_scl_amp_learns_and_writes_a_complete_model_dir(tmp_path):
    config = _config(tmp_path)
    metrics = train_and_evaluate(config)
    # 8 epochs of a tiny network at 32 px: seeds 0-2 gave 0.26-0.28 on an AMD EPYC (2026-12-03; at
    # 52 px seeds 0-3 gave 0.19-0.26); chance is 0.026, and 6x chance is a clear margin.
    assert metrics["test_accuracy"] > 6 * CHANCE, metrics["test_accuracy"]
    files = set(os.listdir(config.model_dir))
    assert {"config.json", "flags.cfg", "metrics.json", "encoder.keras", "reference_db.npz", "split.npz", "logs",
            "backup"} <= files
    assert not [f for f in files if f.startswith(".tmp_")]
    # The saved encoder and reference database reproduce the reported accuracy.
    encoder = keras.models.load_model(os.path.join(config.model_dir, "encoder.keras"))
    database = ReferenceDatabase.load(os.path.join(config.model_dir, "reference_db.npz"))
    data = data_lib.load("synthetic_wafers", image_size=config.image_size, synthetic_per_class=20, seed=0)
    test = np.load(os.path.join(config.model_dir, "split.npz"))["test"]
    predictions = database.predict(encoder.predict(data.images[test] / np.float32(255), verbose=0))
    assert np.mean(predictions == data.labels[test]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    saved = json.load(open(os.path.join(config.model_dir, "metrics.json")))
    assert set(saved["per_class_accuracy"]) == set(data.class_names)


def test_resume_after_interruption(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("simulated kill after epoch 2")

    config = _config(tmp_path, epochs=4, synthetic_per_class=6, shots_per_class=3, checkpoint_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, callbacks=[Interrupt()])
    assert not os.path.exists(os.path.join(config.model_dir, "metrics.json"))
    # the first session's record, as a different machine would have left it
    record_path = os.path.join(config.model_dir, "backup", "checkpoint.json")
    record = json.load(open(record_path))
    assert [(s["epochs"], s["machine"] == provenance.hardware()) for s in record["sessions"]] == [([1, 2], True)]
    record["sessions"][0].update(machine="another CPU", date="2026-01-01")
    json.dump(record, open(record_path, "w"))
    metrics = train_and_evaluate(config)
    assert metrics["epochs_run_in_this_call"] == [3, 4]
    # the run says both sessions: where each trained which epochs, and the time of both
    first, second = metrics["training_sessions"]
    assert (first["machine"], first["date"], first["epochs"]) == ("another CPU", "2026-01-01", [1, 2])
    assert (second["machine"], second["epochs"]) == (provenance.hardware(), [3, 4])
    assert metrics["train_seconds"] == pytest.approx(first["seconds"] + second["seconds"])
    assert 0 < first["seconds"] and 0 < second["seconds"]
    # The resumed run is the uninterrupted run: the same weights, the same answers.
    whole = train_and_evaluate(dataclasses.replace(config, model_dir=str(tmp_path / "whole")))
    assert whole["epochs_run_in_this_call"] == [1, 2, 3, 4]
    resumed_db, whole_db = (np.load(os.path.join(d, "reference_db.npz"))
                            for d in (config.model_dir, tmp_path / "whole"))
    np.testing.assert_array_equal(resumed_db["prototypes"], whole_db["prototypes"])
    assert metrics["test_accuracy"] == whole["test_accuracy"]
    assert [s["epochs"] for s in whole["training_sessions"]] == [[1, 4]]
    assert whole["train_seconds"] == whole["training_sessions"][0]["seconds"]
    again = train_and_evaluate(config)  # a finished run: nothing left to train, its sessions kept
    assert again["epochs_run_in_this_call"] == [] and again["training_sessions"] == metrics["training_sessions"]
    with pytest.raises(ValueError, match="has trained 4 epochs already; --epochs=2 asks for 2"):
        train_and_evaluate(dataclasses.replace(config, epochs=2))
    with pytest.raises(ValueError, match="other settings .*margin"):
        train_and_evaluate(_config(tmp_path, epochs=4, synthetic_per_class=6, shots_per_class=3, margin=0.3))


def _cli(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "scl_amp_tf.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


# CE through the command line also runs in the reproduce, evaluation and validation tests; its own
# case here runs with -m slow.
@pytest.mark.parametrize("method", [pytest.param("ce", marks=pytest.mark.slow), "scl_amp"])
def test_both_methods_through_the_cli(tmp_path, method):
    model_dir = tmp_path / method
    result = _cli("--dataset=synthetic_wafers", "--synthetic_per_class=20", "--shots_per_class=10",
                  "--image_size=32", "--backbone=resnet_tiny", "--epochs=6", f"--method={method}", "--verbose=2",
                  f"--model_dir={model_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["method"] == method
    assert metrics["test_accuracy"] > 4 * CHANCE
    assert "Epoch 6/6" in result.stdout
    # Rerunning the run from its own flag file resumes it: nothing is left to train.
    again = _cli(f"--flagfile={model_dir / 'flags.cfg'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((model_dir / "metrics.json").read_text())["epochs_run_in_this_call"] == []


def test_the_training_step_is_traced_once(tmp_path, monkeypatch):
    """A training step whose first trace creates the optimizer's slots is traced twice by
    tf.function; building them before fit saves that second trace at the start of every run."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    traces = []
    for cls in (models.SclAmpModel, TensorFlowTrainer):  # SCL-AMP's own step, CE's Keras step
        def counted(self, data, _step=cls.train_step):
            traces.append(type(self).__name__)
            return _step(self, data)
        monkeypatch.setattr(cls, "train_step", counted)
    for method in ("scl_amp", "ce"):
        train_and_evaluate(_config(tmp_path / method, synthetic_per_class=4, shots_per_class=2, image_size=32,
                                   batch_size=16, epochs=2, method=method))
    assert traces == ["SclAmpModel", "Functional"], traces


def test_profile_batches_records_a_trace_of_the_training_step(tmp_path):
    config = _config(tmp_path, synthetic_per_class=4, shots_per_class=2, batch_size=16, epochs=1,
                     profile_batches="2,3")
    train_and_evaluate(config)
    traces = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(config.model_dir, "logs"))
              for f in names if f.endswith(".xplane.pb")]
    assert len(traces) == 1, traces
    trace = open(traces[0], "rb").read()
    # The trace holds the training step's own ops (the backbone's convolutions and the L_arc path).
    assert b"Conv2D" in trace and b"arc_margin" in trace


@pytest.mark.parametrize("settings, message", [
    (dict(profile_batches="0"), "--profile_batches='0' must be a step N or a range"),
    (dict(temperature=2.0), "--temperature=2.0 must lie in (0, 1]"),
    (dict(dataset="folder:/no/such/dir"), "no such directory"),
    (dict(shots_per_class=30), "has 20 images"),
    (dict(backbone_weights="/no/such.weights.h5"), "cannot load it into resnet_tiny"),
])
def test_errors_are_clear_and_leave_nothing(tmp_path, settings, message):
    config = _config(tmp_path, **{"shots_per_class": 5, **settings})
    with pytest.raises(ValueError, match=re.escape(message)):
        train_and_evaluate(config)
    assert not os.path.exists(config.model_dir)


def test_the_command_reports_an_error_in_one_line_and_leaves_nothing(tmp_path):
    """The command's side of the errors above (one process start: TensorFlow loads in each): exit
    status 2 and the message, no traceback, no model dir."""
    model_dir = tmp_path / "run"
    result = _cli("--synthetic_per_class=20", "--shots_per_class=30", f"--model_dir={model_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: " in result.stderr and "has 20 images" in result.stderr and "Traceback" not in result.stderr
    assert not model_dir.exists()


def test_missing_tfds_dataset_says_where_to_put_it(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(data_lib.DataError) as info:
        data_lib.load("neu", image_size=64, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert str(manual) in str(info.value)


def _one_step_weights(strategy, batch, **model_kwargs):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        features = models.build_features((32, 32, 1), "resnet_tiny", bn_momentum=0.9)
        models.set_batchnorm(features, synchronized=strategy.num_replicas_in_sync > 1)
        model = models.SclAmpModel(models.build_encoder(features, 16, 32), num_classes=4, **model_kwargs)
        model.build()
        # SGD, not Adam: Adam divides by sqrt(v), which turns float round-off in a near-zero
        # gradient into a full-size step and would hide real differences behind noise.
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    return history.history["loss"][0], [w.numpy() for w in model.weights]


@pytest.mark.parametrize("model_kwargs", [{}, {"class_aware_negatives": True, "arc_on_views": True}])
def test_one_replica_and_two_replicas_give_the_same_update(two_cpu_strategy, model_kwargs):
    rng = np.random.default_rng(0)
    views = tuple(tf.constant(rng.random((8, 32, 32, 1)), tf.float32) for _ in range(3))
    batch = (views, tf.constant(rng.integers(0, 4, 8)))
    loss_1, weights_1 = _one_step_weights(tf.distribute.get_strategy(), batch, **model_kwargs)
    loss_2, weights_2 = _one_step_weights(two_cpu_strategy, batch, **model_kwargs)
    assert loss_1 == pytest.approx(loss_2, rel=1e-4)
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_same_seed_same_result(tmp_path):
    kwargs = dict(epochs=2, synthetic_per_class=6, shots_per_class=3)
    first = train_and_evaluate(_config(tmp_path / "a", **kwargs))
    second = train_and_evaluate(_config(tmp_path / "b", **kwargs))
    assert first["final_train_metrics"] == second["final_train_metrics"]
    assert first["test_accuracy"] == second["test_accuracy"]
    a = ReferenceDatabase.load(tmp_path / "a" / "run" / "reference_db.npz").prototypes
    b = ReferenceDatabase.load(tmp_path / "b" / "run" / "reference_db.npz").prototypes
    np.testing.assert_array_equal(a, b)


def _step_update(batch, alpha, beta, strategy=None):
    """Weights after one SGD(1) step of an SCL-AMP model whose encoder has no batch norm, so that
    an image's embedding does not depend on the other images of its batch."""
    keras.utils.set_random_seed(0)
    with (strategy or tf.distribute.get_strategy()).scope():
        inputs = keras.Input((8, 8, 1))
        z = keras.layers.Dense(6, name="embedding")(keras.layers.Dense(16, activation="tanh")(
            keras.layers.Flatten()(inputs)))
        model = models.SclAmpModel(keras.Model(inputs, z), num_classes=3, alpha=alpha, beta=beta)
        model.build()
        model.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [w.numpy() for w in model.trainable_weights]
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    return [w.numpy() - b for w, b in zip(model.trainable_weights, before)]


def test_unlabeled_images_feed_l_con_only():
    """--unlabeled_data: L_arc is the mean over the labelled images alone, L_con the mean over all."""
    rng = np.random.default_rng(0)
    views = [rng.random((10, 8, 8, 1)).astype(np.float32) for _ in range(3)]
    labels = np.array([0, 1, 2, 0, 1, 2, -1, -1, -1, -1])  # the last four are unlabeled

    def batch(rows, y):
        return tuple(tf.constant(v[rows]) for v in views), tf.constant(y)

    labelled_only = batch(slice(0, 6), labels[:6])
    mixed = batch(slice(0, 10), labels)
    # beta only: the unlabeled images change nothing
    for a, b in zip(_step_update(mixed, 0.0, 1.0), _step_update(labelled_only, 0.0, 1.0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # alpha only: the labels (and so unlabeled-ness) change nothing; L_con uses every image
    relabelled = batch(slice(0, 10), np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    for a, b in zip(_step_update(mixed, 1.0, 0.0), _step_update(relabelled, 1.0, 0.0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # both: the update is the sum of the two (SGD is linear in the gradient)
    both = _step_update(mixed, 0.75, 0.25)
    parts = zip(_step_update(mixed, 0.75, 0.0), _step_update(labelled_only, 0.0, 0.25))
    for total, (con, arc) in zip(both, parts):
        np.testing.assert_allclose(total, con + arc, rtol=1e-4, atol=1e-6)


def test_unlabeled_images_on_two_replicas_give_the_same_update(two_cpu_strategy):
    rng = np.random.default_rng(1)
    views = tuple(tf.constant(rng.random((8, 8, 8, 1)), tf.float32) for _ in range(3))
    batch = (views, tf.constant([0, 1, -1, 2, -1, 0, -1, -1]))  # replica 2 holds one labelled image
    for a, b in zip(_step_update(batch, 0.75, 0.25), _step_update(batch, 0.75, 0.25, two_cpu_strategy)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_training_with_unlabeled_rest_learns(tmp_path):
    config = _config(tmp_path, synthetic_per_class=16, shots_per_class=4, test_fraction=0.25,
                     unlabeled_data="rest", unlabeled_batch_size=32, epochs=8, verbose=2)
    metrics = train_and_evaluate(config)
    assert metrics["num_train"] == 4 * 38 and metrics["num_test"] == 4 * 38
    assert metrics["test_accuracy"] > 3 * CHANCE, metrics["test_accuracy"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(unlabeled_data="rest", method="ce"), "which --method=ce does not have"),
    (dict(unlabeled_data="rest", class_aware_negatives=True), "cannot be combined"),
    (dict(unlabeled_data="rest"), "Hold out a test set with --test_fraction"),
    (dict(unlabeled_data="folder:/no/such/dir", test_fraction=0.2), "no such directory"),
    (dict(unlabeled_data="rest", test_fraction=0.2, unlabeled_batch_size=500), "fewer than one batch"),
])
def test_unlabeled_data_errors_leave_nothing(tmp_path, kwargs, message):
    config = _config(tmp_path, synthetic_per_class=10, shots_per_class=3, **kwargs)
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config)
    assert not os.path.exists(config.model_dir)


def test_loss_settings_are_the_models_keywords_and_contrastive_drops_l_arc():
    import inspect

    config = TrainConfig(model_dir="unused", temperature=0.2, margin=0.3, arc_scale=16.0, alpha=0.6, beta=0.4,
                         arc_on_views=True)
    settings = config.loss_settings()
    keywords = {name for name, p in inspect.signature(models.SclAmpModel.__init__).parameters.items()
                if p.kind == p.KEYWORD_ONLY}
    assert set(settings) == keywords
    assert settings == dict(temperature=0.2, margin=0.3, scale=16.0, alpha=0.6, beta=0.4, symmetric=False,
                            arc_on_views=True, class_aware_negatives=False)
    contrastive = TrainConfig(model_dir="unused", method="contrastive", alpha=0.6, beta=0.4).loss_settings()
    assert (contrastive["alpha"], contrastive["beta"]) == (1.0, 0.0)
