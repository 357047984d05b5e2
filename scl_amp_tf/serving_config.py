"""TF Serving's ``models.config`` for an export root: one entry per exported model under it.

``python -m scl_amp_tf.export`` (re)writes ``EXPORT/models.config`` after every export, so the
file always names every model the folder holds, including the one just exported. The standard
model server reads it with ``--model_config_file`` (export/serving/README.md):

    docker run -p 8500:8500 -p 8501:8501 -v "$PWD/exported:/models" tensorflow/serving \\
        --model_config_file=/models/models.config --model_config_file_poll_wait_seconds=60

``base_path`` is where the container sees the export root (``/models`` in that command).
"""
from __future__ import annotations

import os
import posixpath

from scl_amp_tf.files import atomic_write

CONFIG_FILE = "models.config"
DEFAULT_BASE_PATH = "/models"


def models_config(model_names, base_path=DEFAULT_BASE_PATH):
    """The text of a ``models.config`` serving ``model_names`` from ``base_path/<name>``."""
    entries = "".join(
        f"  config {{\n    name: \"{name}\"\n    base_path: \"{posixpath.join(base_path, name)}\"\n"
        f"    model_platform: \"tensorflow\"\n    model_version_policy {{ latest {{ num_versions: 1 }} }}\n  }}\n"
        for name in sorted(model_names))
    return ("# TF Serving model config, written by python -m scl_amp_tf.export: every model of this export\n"
            "# root. The server loads the newest numbered version of each and switches to a newer one\n"
            "# when an export or enrolment publishes it (versions appear whole, by a rename).\n"
            f"model_config_list {{\n{entries}}}\n")


def write(export_dir, base_path=DEFAULT_BASE_PATH):
    """Writes ``export_dir/models.config`` naming every model with a published version; returns its path."""
    from scl_amp_tf import export_versions

    names = [n for n in sorted(os.listdir(export_dir)) if export_versions.versions(os.path.join(export_dir, n))]
    path = os.path.join(export_dir, CONFIG_FILE)
    text = models_config(names, base_path)
    atomic_write(path, lambda tmp: open(tmp, "w").write(text))
    return path
