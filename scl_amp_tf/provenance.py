"""Where, when and by what code a result was made: the machine (CPU model, cores, GPUs, TensorFlow
and Python versions), the date and the git commit of the library. A run records them in its
metrics.json (and each training session in its checkpoint), so that a table put together from
runs of several sessions says which machines, dates and code made it, not only where the table
was written (seeded runs repeat exactly on one machine, not across CPUs)."""
from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess


def cpu_name(cpuinfo="/proc/cpuinfo"):
    """The processor's model name and its widest vector instructions, ``"AMD EPYC, AVX2"``.

    Seeded runs repeat on one kind of CPU, not across kinds, and a virtual machine often reports
    only a family name: two "AMD EPYC" of different generations, one with AVX-512 and one without,
    trained the same network about 2x apart in speed. The vector extension (AVX-512 or AVX2; nothing
    when neither, or when the flags cannot be read) tells them apart."""
    name = flags = None
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name is None:
                    name = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
                if name is not None and flags is not None:
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    vector = None if flags is None else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{name}, {vector}" if vector else name


def hardware():
    """``"2 CPU cores (AMD EPYC, AVX2), no GPU; TensorFlow 2.21.0, Python 3.11.7"``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} CPU cores ({cpu_name()})" + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU")
            + f"; TensorFlow {tf.__version__}, Python {platform.python_version()}")


@functools.cache
def code_commit():
    """The git commit of the library that runs (``"1a2b3c4"``), with ``"+modified"`` when its files
    differ from that commit; None when it is not a git checkout's tracked files (an installed
    package, or a copy inside someone else's repository).

    Asked once per process (three git calls): the code that runs is the code imported at its
    start, so a file edited while a long run trains does not make its end record "+modified", and
    a run's start and end, or a benchmark's many lines, do not ask again."""
    package = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    try:
        git("ls-files", "--error-unmatch", os.path.basename(__file__))  # this file is tracked here
        commit = git("rev-parse", "--short", "HEAD")
        modified = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+modified" if modified else "")


def made(machine=None):
    """``{"machine": hardware(), "date": "YYYY-MM-DD", "commit": code_commit()}``: today, on this
    machine, with this code. ``machine``: another description of the machine in place of
    :func:`hardware` (the accuracy benchmarks record :func:`cpu_name` alone)."""
    return {"machine": hardware() if machine is None else machine, "date": datetime.date.today().isoformat(),
            "commit": code_commit()}
