"""scl-amp-tf: surface defect recognition from small data.

TensorFlow/Keras implementation of "Improving Image Representation for Surface Defect
Recognition with Small Data" (Thai, Duong and Le, 2024): a ResNet encoder with an MLP
projection head trained with a self-contrastive loss over three views (Eq. 1-2) plus an
ArcFace angular-margin loss (Eq. 4), total ``alpha * L_con + beta * L_arc`` (Eq. 5), and
classification by cosine similarity to a k-shot reference database (section IV.A).

Importing the package registers the TFDS builders ``neu`` and ``mixed_wm38``
(``tfds.builder("neu")`` works after ``import scl_amp_tf``).
"""
import os as _os

# TensorFlow's C++ log: errors only from level 3 on, so that a CPU machine is not told at every
# start that it has no CUDA driver ("failed call to cuInit"); real failures still raise in
# Python. A user's own TF_CPP_MIN_LOG_LEVEL (e.g. 0 to see everything) is kept.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _quietly(load):
    """Runs ``load`` (which loads TensorFlow's C++ libraries) with the process's stderr (file
    descriptor 2) sent to a temporary file, then writes back every line but the INFO lines
    ("I0000 ...") and absl's note that it logs to stderr before ``absl::InitializeLog()``.
    TensorFlow 2.21 prints those from C++ while it loads, before TF_CPP_MIN_LOG_LEVEL is read, so
    only the file descriptor can hold them back; warnings and errors still reach stderr."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedded interpreter): nothing to hold back
        return load()
    with tempfile.TemporaryFile(mode="w+b") as held:
        _os.dup2(held.fileno(), 2)
        try:
            return load()
        finally:
            _os.dup2(saved, 2)
            _os.close(saved)
            held.seek(0)
            for line in held.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not (line.startswith("I0000 ") or "before absl::InitializeLog() is called" in line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _quiet_tensorflow_import():
    """Makes the first ``import tensorflow`` of the process run :func:`_quietly` (an import hook,
    so that modules that never load TensorFlow, like the serving client, stay light). Only when
    the C++ log level hides INFO (>= 1) and TensorFlow is not loaded yet."""
    import importlib.abc
    import importlib.util
    import sys

    level = _os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if "tensorflow" in sys.modules or not level.isdigit() or int(level) < 1:
        return

    class QuietLoader(importlib.abc.Loader):
        def __init__(self, real):
            self.real = real

        def create_module(self, spec):
            return self.real.create_module(spec)

        def exec_module(self, module):
            _quietly(lambda: self.real.exec_module(module))

        def __getattr__(self, name):  # anything else (resource readers, ...) is the real loader's
            return getattr(self.real, name)

    class QuietFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "tensorflow":
                return None
            sys.meta_path.remove(self)  # once: the real finders locate TensorFlow
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                spec.loader = QuietLoader(spec.loader)
            return spec

    sys.meta_path.insert(0, QuietFinder())


_quiet_tensorflow_import()

from scl_amp_tf import tfds_datasets  # noqa: E402,F401  (registers the builders)
