"""Files that appear whole or not at all: written under a temporary name, then renamed into place.

Temporary files and folders are created private (mode 0600 / 0700); before the rename they get
the permissions an ordinary ``open`` or ``mkdir`` would have given (0666 / 0777 less the umask),
so that another user, e.g. a TF Serving container, can read what was published.
"""
from __future__ import annotations

import os
import shutil
import tempfile


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path):
    """Gives ``path`` (and, for a folder, everything under it) the default permissions."""
    mask = _umask()
    for root, dirs, names in os.walk(path) if os.path.isdir(path) else [(None, [], [path])]:
        if root is not None:
            os.chmod(root, 0o777 & ~mask)
        for name in names:
            os.chmod(os.path.join(root, name) if root else name, 0o666 & ~mask)


def atomic_write(path, write):
    """Calls ``write(tmp_path)`` for a temporary file beside ``path``, then renames it to ``path``.

    The temporary name ends like ``path`` from the first dot of its name on (``.weights.h5`` for
    ``backbone.weights.h5``), since some writers (Keras's ``save_weights``) insist on the ending.
    """
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    suffix = name[name.index("."):] if "." in name else ""
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def publish_dir(tmp, path):
    """Renames a finished temporary folder to ``path`` (which must not exist) with default permissions."""
    make_readable(tmp)
    os.rename(tmp, path)


def remove_dir(tmp):
    shutil.rmtree(tmp, ignore_errors=True)
