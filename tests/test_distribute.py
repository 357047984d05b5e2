"""Strategies: two worker processes on this machine train like one process on the same global
batch; mixed precision trains and learns; XLA gives the same loss; strategy flags and roles."""
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from scl_amp_tf import distribute, models
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate

# 38 classes x 2 images = 76 training images = 2 global batches of 38 (19 per worker): no short
# batch, so one process and two workers see exactly the same global batches.
RUN = ["--dataset=synthetic_wafers", "--synthetic_per_class=4", "--shots_per_class=2", "--batch_size=38",
       "--image_size=52", "--backbone=resnet_tiny", "--epochs=3", "--optimizer=sgd", "--learning_rate=0.01",
       "--verbose=2"]  # SGD: Adam would turn float round-off in near-zero gradients into lr-sized steps


def _start(args, cwd, log, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, "-m", "scl_amp_tf.train", *args], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _wait(processes, logs, timeout):
    """Waits for all; on a failure or the deadline, stops every process (none may hang on)."""
    deadline = time.time() + timeout
    try:
        for p in processes:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, open(log.name).read()[-4000:]


def _weights(model_dir):
    encoder = keras.models.load_model(os.path.join(model_dir, "encoder.keras"))
    return [w.numpy() for w in encoder.trainable_weights]


# What "the same" can mean here (measured, see issue #5's notes): the two runs see the same batches
# (at a learning rate of ~0 every per-step loss agrees to 6 digits, and the batch-norm statistics
# of the first step to 1e-5), and CE agrees to 1e-7 in every weight after 2 steps. Two things keep
# SCL-AMP apart by more than round-off:
# * The first SCL-AMP step on these wafer maps is ill-conditioned in float32: at initialisation
#   every image has nearly the same embedding, so the upstream gradient is mostly a component
#   common to the batch, which the batch-norm backward pass subtracts away. Float32 then gets the
#   step's gradient only to ~1e-2 (L_arc) / ~1e-3 (L_con) of the float64 value, with either
#   batch-norm formula; the two workers use the synchronised one (sums all-reduced, E[x^2] - E[x]^2),
#   the single process the local one. test_batch_norm_formulas_are_the_same_function checks that
#   they are the same function (to 1e-10 in float64), so the gap is float32's, not the distribution's.
# * This tiny-data training is chaotic: in ONE process, changing the learning rate by 1e-4
#   relative moves the loss by 1.6 % within 9 steps, so any round-off grows.
# The runs can therefore only be held to "the same training". The single process runs under
# OneDeviceStrategy: under TF's default strategy the same seeds give another (equally valid)
# shuffle and augmentation stream.
# CE over two workers runs only with -m slow (the suite stays under 10 minutes): it shares the
# multi-worker path that the SCL-AMP case checks, with the simpler loss.
@pytest.mark.parametrize("method", ["scl_amp", pytest.param("ce", marks=pytest.mark.slow)])
def test_two_workers_train_like_one_process(tmp_path, method):
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    logs = [open(tmp_path / name, "w") for name in ("single.log", "worker0.log", "worker1.log")]
    single = _start([*RUN, f"--method={method}", "--strategy=one_device", f"--model_dir={single_dir}"], tmp_path,
                    logs[0])
    _wait([single], logs[:1], timeout=300)
    workers = [_start([*RUN, f"--method={method}", "--strategy=multi_worker", f"--model_dir={multi_dir}"], tmp_path,
                      logs[1 + i], tf_config=tf_config) for i, tf_config in enumerate(distribute.local_cluster(2))]
    _wait(workers, logs[1:], timeout=300)

    one = json.loads((single_dir / "metrics.json").read_text())
    two = json.loads((multi_dir / "metrics.json").read_text())  # written by the chief (worker 0) only
    assert one["epochs_run_in_this_call"] == two["epochs_run_in_this_call"] == [1, 2, 3]
    # The last epoch's mean loss over both global batches (it moved by ~10 % during training).
    assert two["final_train_metrics"]["loss"] == pytest.approx(one["final_train_metrics"]["loss"], rel=1e-2)
    # Held loosely element-wise and by the relative size of the whole difference: chaos amplifies
    # round-off unevenly, and how much depends on the CPU's kernels. AMD EPYC (2026-11-25): every
    # weight within 5e-3. Intel Xeon (2026-11-27, with the code of 2026-11-25 as well): 6 of 2,352
    # stem-conv weights 6.4e-3 apart (that tensor 3.0 % apart in norm); all weights together 2.4e-3
    # apart in norm for SCL-AMP, 6.9e-4 for CE.
    # A worker on other data, or a gradient counted twice, would move every tensor by far more.
    one_w, two_w = _weights(single_dir), _weights(multi_dir)
    for a, b in zip(one_w, two_w):
        np.testing.assert_allclose(a, b, atol=1e-2)
    flat_one, flat_two = (np.concatenate([w.ravel() for w in ws]) for ws in (one_w, two_w))
    relative = np.linalg.norm(flat_one - flat_two) / np.linalg.norm(flat_one)
    print(f"weights of one process vs two workers: {relative:.2e} apart in norm")
    assert relative < 1e-2, relative
    assert "Epoch 3/3" in open(logs[1].name).read() and "Epoch 3/3" not in open(logs[2].name).read()
    assert sorted(os.listdir(multi_dir)) == sorted(os.listdir(single_dir))


def test_batch_norm_formulas_are_the_same_function():
    """The synchronised batch norm of several replicas and the local one of a single replica give
    the same SCL-AMP gradients in float64 (their float32 results differ: see the comment above)."""
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 3, (3, 12, 40, 40, 1)).astype(np.float64) / 2  # wafer-like: 3 levels
    data = (tuple(tf.constant(m) for m in maps), tf.constant(rng.integers(0, 5, 12)))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        gradients = []
        for synchronized in (False, True):
            keras.utils.set_random_seed(0)
            features = models.build_features((40, 40, 1), "resnet_tiny", bn_momentum=0.9)
            models.set_batchnorm(features, synchronized=synchronized)
            model = models.SclAmpModel(models.build_encoder(features, 16, 32), num_classes=5)
            model.build()
            with tf.GradientTape() as tape:
                con, arc, *_ = model._per_example_losses(data, training=True)
                loss = tf.reduce_mean(0.75 * con + 0.25 * arc)
            gradients.append(tape.gradient(loss, model.trainable_variables))
    finally:
        keras.config.set_dtype_policy(previous)
    for local, synced in zip(*gradients):
        np.testing.assert_allclose(synced.numpy(), local.numpy(), rtol=1e-10, atol=1e-12)


# mixed_float16 is the GPU policy; on a CPU TensorFlow emulates float16 slowly (this test took
# 9.5 minutes on the Intel Xeon of 2026-11-27, against 1.5 s per epoch with bfloat16, which the
# same CPU runs natively), so it is marked slow: python -m pytest -m slow.
@pytest.mark.parametrize("policy", ["mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.slow)])
def test_mixed_precision_trains_and_learns(tmp_path, policy):
    # 32 px, 6 of 12 images per class, 6 epochs: bfloat16 is emulated on an AMD EPYC (0.25 there,
    # 2026-12-03; 380 images at 52 px for 8 epochs took twice as long for the same lesson).
    config = TrainConfig(model_dir=str(tmp_path / "run"), dataset="synthetic_wafers", synthetic_per_class=12,
                         shots_per_class=6, image_size=32, backbone="resnet_tiny", epochs=6, verbose=0,
                         mixed_precision=policy)
    metrics = train_and_evaluate(config)
    assert metrics["test_accuracy"] > 6 / 38, metrics["test_accuracy"]
    assert np.isfinite(metrics["final_train_metrics"]["loss"])
    encoder = keras.models.load_model(os.path.join(config.model_dir, "encoder.keras"))
    assert encoder.get_layer("embedding").dtype_policy.name == "float32"  # losses see float32 embeddings
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.parametrize("method", ["scl_amp", pytest.param("ce", marks=pytest.mark.slow)])
def test_xla_gives_the_same_loss(method):
    """The custom train_step (SCL-AMP) and CE compile under XLA and give the same loss. The
    backbone is a one-block ResNet (conv, batch norm, pooling, a residual add): XLA compiles the
    whole step, and resnet_tiny's four stages doubled the test's time without another op to check."""
    rng = np.random.default_rng(0)
    views = tuple(tf.constant(rng.random((8, 32, 32, 1)), tf.float32) for _ in range(3))
    labels = tf.constant(rng.integers(0, 4, 8))
    losses = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        features = models.basic_resnet((32, 32, 1), (1,), (8,), name="one_block")
        if method == "scl_amp":
            model = models.SclAmpModel(models.build_encoder(features, 16, 32), num_classes=4)
            model.build()
            model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
            data = (views, labels)
        else:
            model = models.build_classifier(features, 4)
            model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            data = (views[0], labels)
        history = model.fit(tf.data.Dataset.from_tensors(data).repeat(2), epochs=1, verbose=0, shuffle=False)
        losses.append(history.history["loss"][0])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_strategy_choices_and_roles(monkeypatch):
    assert distribute.make_strategy("auto") is tf.distribute.get_strategy()  # one device (no GPU here)
    assert isinstance(distribute.make_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    assert distribute.is_chief(distribute.make_strategy("one_device"))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="must be one of"):
        distribute.make_strategy("parameter_server")
    with pytest.raises(ValueError, match="--mixed_precision"):
        TrainConfig(model_dir="x", shots_per_class=1, mixed_precision="float8").validate()
