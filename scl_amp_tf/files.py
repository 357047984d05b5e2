"""Files that appear whole or not at all: written under a temporary name, then renamed into place.

Temporary files and folders are created private (mode 0600 / 0700); before the rename they get
the permissions an ordinary ``open`` or ``mkdir`` would have given (0666 / 0777 less the umask),
so that another user, e.g. a TF Serving container, can read what was published.
"""
from __future__ import annotations

import contextlib
import fcntl
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
    for root, _dirs, names in os.walk(path) if os.path.isdir(path) else [(None, [], [path])]:
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


@contextlib.contextmanager
def exclusive_lock(path, what):
    """Holds an exclusive lock on the file ``path`` (created if missing) while the block runs.

    ``what`` names the locked thing in the error: another process holding the lock (e.g. a second
    training started into the same model directory) gets a ``ValueError`` at once instead of
    writing into the first one's files. The lock is the operating system's (``flock``): it goes
    when its holder ends, even by a kill, so a stale lock file never blocks anybody.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{what} is in use by another process (it holds {path}). Wait for it to end, "
                         "or use another directory.") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_json(path, obj):
    """``obj`` as indented, key-sorted JSON, written atomically."""
    import json

    def write(tmp):
        with open(tmp, "w") as out:
            json.dump(obj, out, indent=2, sort_keys=True)
            out.write("\n")
    atomic_write(path, write)
