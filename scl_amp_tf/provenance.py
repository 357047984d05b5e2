"""Where and when a result was made: the machine (CPU model, cores, GPUs, TensorFlow and Python
versions) and the date. A run records both in its metrics.json when it finishes, so that a table
put together from runs of several sessions says which machines and dates made it, not only where
the table was written (seeded runs repeat exactly on one machine, not across CPUs)."""
from __future__ import annotations

import datetime
import os
import platform


def cpu_name():
    """The processor's model name (seeded runs repeat on one kind of CPU, not across kinds)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware():
    """``"2 CPU cores (AMD EPYC), no GPU; TensorFlow 2.21.0, Python 3.11.7"``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} CPU cores ({cpu_name()})" + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU")
            + f"; TensorFlow {tf.__version__}, Python {platform.python_version()}")


def made():
    """``{"machine": hardware(), "date": "YYYY-MM-DD"}``: today, on this machine."""
    return {"machine": hardware(), "date": datetime.date.today().isoformat()}
