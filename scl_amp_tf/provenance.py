"""Where and when a result was made: the machine (CPU model, cores, GPUs, TensorFlow and Python
versions) and the date. A run records both in its metrics.json when it finishes, so that a table
put together from runs of several sessions says which machines and dates made it, not only where
the table was written (seeded runs repeat exactly on one machine, not across CPUs)."""
from __future__ import annotations

import datetime
import os
import platform


def hardware():
    """``"2 CPU cores (AMD EPYC), no GPU; TensorFlow 2.21.0, Python 3.11.7"``."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} CPU cores ({cpu})" + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU")
            + f"; TensorFlow {tf.__version__}, Python {platform.python_version()}")


def made():
    """``{"machine": hardware(), "date": "YYYY-MM-DD"}``: today, on this machine."""
    return {"machine": hardware(), "date": datetime.date.today().isoformat()}
