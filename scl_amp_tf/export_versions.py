"""The layout of an export folder: its models, their numbered versions and the files of a version.

``EXPORT/<model_name>/<version>/`` is TF Serving's layout; a version being written sits in a
hidden temporary folder (``TMP_PREFIX``) that TF Serving skips, named after its host and process
so that one a hard kill left behind can be told from one still being written.
"""
from __future__ import annotations

import os
import socket

from scl_amp_tf import files
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.serving_graph import ExportError

EXTRA = "assets.extra"
TMP_PREFIX = ".tmp-"  # a version being written: EXPORT/<model>/.tmp-<version>-<host>-<pid>-<random>
METADATA_FILE = edge_classify.METADATA_FILE
REFERENCE_DB_FILE = edge_classify.REFERENCE_DB_FILE
ENCODER_FILE = "encoder.keras"


def versions(model_root):
    """The published versions under ``EXPORT/<model_name>``, oldest first."""
    if not os.path.isdir(model_root):
        return []
    return sorted(int(name) for name in os.listdir(model_root)
                  if name.isdigit() and os.path.isdir(os.path.join(model_root, name)))


def find_model_root(export_dir, model_name=None):
    """``EXPORT/<model_name>``; without a name, the only model under ``export_dir``."""
    if model_name:
        root = os.path.join(export_dir, model_name)
        if not versions(root):
            raise ExportError(f"{root} holds no exported version. Export one with python -m scl_amp_tf.export.")
        return root
    names = sorted(n for n in os.listdir(export_dir) if versions(os.path.join(export_dir, n))) \
        if os.path.isdir(export_dir) else []
    if len(names) != 1:
        raise ExportError(f"--export_dir={export_dir} holds {len(names)} exported models "
                          f"({', '.join(names) or 'none'}); name one with --model_name.")
    return os.path.join(export_dir, names[0])


def remove_abandoned_versions(model_root):
    """Deletes the temporary version folders that a killed export or enrolment left behind: those
    written on this host by a process that no longer runs. Returns their names.

    An interrupted run (Ctrl-C, an error) removes its own folder; only a hard kill (SIGKILL, power
    loss) leaves one. Folders of other hosts (shared storage) or of running processes are kept.
    """
    removed = []
    for name in sorted(os.listdir(model_root)):
        parts = name[len(TMP_PREFIX):].split("-")
        if not name.startswith(TMP_PREFIX) or len(parts) < 4 or "-".join(parts[1:-2]) != socket.gethostname():
            continue
        try:
            os.kill(int(parts[-2]), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except (PermissionError, ValueError):  # another user's live process, or not our name
            continue
        files.remove_dir(os.path.join(model_root, name))
        removed.append(name)
    return removed
