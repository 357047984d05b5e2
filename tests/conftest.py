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
