"""Session-wide test setup.

Splits the physical CPU into 2 logical devices once, before any TF op runs, so
that strategy tests can use ``tf.distribute.MirroredStrategy(["/cpu:0",
"/cpu:1"])``.  This must happen at import time of the conftest (before test
modules create tensors); if TF was already initialised by something else the
RuntimeError is swallowed and the strategy tests skip themselves (see
``two_cpu_strategy``).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import scl_amp_tf  # noqa: E402,F401  (first: its import hook holds back TensorFlow's C++ INFO lines)
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2


def _configure_logical_cpus():
    cpus = tf.config.list_physical_devices("CPU")
    if not cpus:
        return
    try:
        existing = tf.config.get_logical_device_configuration(cpus[0])
        if existing and len(existing) >= NUM_LOGICAL_CPUS:
            return
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS,
        )
    except RuntimeError:
        # "Virtual devices cannot be modified after being initialized".
        pass


_configure_logical_cpus()


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """A MirroredStrategy over 2 logical CPUs (skips if they are not there)."""
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < NUM_LOGICAL_CPUS:
        pytest.skip(
            "needs 2 logical CPU devices; TF was initialised before conftest "
            "could configure them"
        )
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Two finished runs, trained for seconds, for the tests that need a run rather than a good
    model (evaluate, Grad-CAM, export's refusals): ``{"scl_amp": (config, metrics), "ce": ...}``.
    SCL-AMP holds a validation split (for --reject_threshold=auto). Tests may add outputs
    (evaluate writes evaluation/) but must not change what training wrote."""
    from scl_amp_tf.train_config import TrainConfig
    from scl_amp_tf.training import train_and_evaluate

    root = tmp_path_factory.mktemp("tiny_runs")
    runs = {}
    for method in ("scl_amp", "ce"):
        config = TrainConfig(model_dir=str(root / method), dataset="synthetic_wafers", synthetic_per_class=4,
                             shots_per_class=2, image_size=32, backbone="resnet_tiny", epochs=1, batch_size=16,
                             method=method, validation_fraction=0.5 if method == "scl_amp" else None, verbose=0)
        runs[method] = (config, train_and_evaluate(config))
    return runs
