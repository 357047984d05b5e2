"""The end-of-epoch checkpoint that resumes an interrupted run, safe against a kill at any moment.

Layout of ``model_dir/backup/``::

    epoch-00007.weights.h5     the model and optimizer state after epoch 7
    checkpoint.json            {"epoch": 7, "weights": "epoch-00007.weights.h5", "sessions": [...]}

``sessions`` are the training sessions that made those weights, in order: for each process that
trained the run, its machine, date, first and last epoch, and training seconds up to the
checkpoint (:class:`EpochCheckpoint`). A run resumed after a kill, perhaps on another machine,
so still says where and for how long all of it was trained: a seeded run repeats exactly on one
machine, not across CPUs, and its time is the sum of its sessions'.

Each file is written under a temporary name and renamed into place, the weights before the
record that names them, and an older weights file is deleted only after the record names the
newer one. So whenever the process dies (kill -9 included), the record names a complete file, or
the record is missing or unreadable and the newest weights file that loads is taken instead (its
epoch is in its name). Keras's ``BackupAndRestore`` rewrote its one weights file in place: a kill
while it wrote left a truncated file that no rerun could get past.

A checkpoint is never written after a step whose loss is not finite (:class:`StopOnDivergence`
stops such a run), so the last checkpoint is the last good state.

The run's input pipeline is a function of (seed, epoch) (:func:`scl_amp_tf.input_pipeline.pipeline`), and
:func:`restore` tells the caller the epoch to start from *before* it builds that pipeline: a
resumed run computes what the uninterrupted run would have.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import time

import keras

from scl_amp_tf.files import atomic_write

RECORD = "checkpoint.json"
_WEIGHTS = re.compile(r"epoch-(\d+)\.weights\.h5$")
# Runs made before this module: Keras BackupAndRestore's files, still read so that they resume.
_KERAS_WEIGHTS, _KERAS_RECORD = "latest.weights.h5", "training_metadata.json"


def _weights_name(epoch):
    return f"epoch-{epoch:05d}.weights.h5"


def _candidates(backup_dir):
    """``(epoch, path)`` of the checkpoints to try, best first: the recorded one, then every
    weights file by descending epoch, then a Keras ``BackupAndRestore`` backup."""
    out = []
    try:
        with open(os.path.join(backup_dir, RECORD)) as f:
            record = json.load(f)
        out.append((int(record["epoch"]), os.path.join(backup_dir, record["weights"])))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    files = [(int(_WEIGHTS.search(p).group(1)), p) for p in glob.glob(os.path.join(backup_dir, "epoch-*.weights.h5"))
             if _WEIGHTS.search(p)]
    out += sorted(files, reverse=True)
    try:
        with open(os.path.join(backup_dir, _KERAS_RECORD)) as f:
            out.append((int(json.load(f)["epoch"]), os.path.join(backup_dir, _KERAS_WEIGHTS)))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return out


def restore(model, backup_dir):
    """Loads the newest complete checkpoint into ``model`` (built, compiled) and returns its epoch
    (the number of epochs already trained); 0 when there is none. A file that does not load (a
    truncated one from a kill before this module) is skipped for the next older one."""
    if not os.path.isdir(backup_dir):
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its state is part of the checkpoint
    failures = []
    for epoch, path in _candidates(backup_dir):
        if not os.path.exists(path):
            continue
        try:
            model.load_weights(path)
        except Exception as e:  # noqa: BLE001 (h5py raises OSError, Keras ValueError: any means "not this one")
            failures.append(f"{os.path.basename(path)}: {e}")
            continue
        return epoch
    if failures:
        raise ValueError(f"{backup_dir}: no checkpoint loads ({'; '.join(failures)}). Delete the folder to train "
                         "the run from its start.")
    return 0


def recorded_sessions(backup_dir, epoch):
    """The training sessions that made the checkpoint of ``epoch`` (what :func:`restore` returned,
    or the last epoch a finished run trained): those of its record; ``[]`` for epoch 0. When the
    record does not name that epoch's sessions (it was lost to a kill, or written before records
    kept them), one session of unknown machine, date and time stands for epochs 1 to ``epoch``, so
    that nothing is claimed that is not known."""
    if epoch == 0:
        return []
    try:
        with open(os.path.join(backup_dir, RECORD)) as f:
            record = json.load(f)
        if int(record["epoch"]) == epoch and record.get("sessions"):
            return list(record["sessions"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return [{"machine": None, "date": None, "epochs": [1, epoch], "seconds": None}]


def session(made, first_epoch, last_epoch, seconds):
    """One training session: ``made`` (:func:`scl_amp_tf.provenance.made`), the epochs it trained
    (first and last, 1-based) and its training seconds."""
    return {**made, "epochs": [first_epoch, last_epoch], "seconds": round(float(seconds), 1)}


def total_seconds(sessions):
    """The training seconds of a run over its sessions; None when a session's are unknown."""
    seconds = [s.get("seconds") for s in sessions]
    return None if any(t is None for t in seconds) else float(sum(seconds))


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the checkpoint at the end of an epoch once ``every_seconds`` have passed since the
    last one, and always after the last epoch (only ``chief`` writes: in a multi-worker run the
    other workers restore from the chief's files). Skips an epoch whose logs are not finite.

    Why not after every epoch: with a step budget, a few images make many short epochs (10 images
    per class: 1,600 epochs of 2 steps), and writing the model and optimizer state costs about as
    much as a few training steps on a CPU. Resuming from an older epoch computes the same run,
    since each epoch's batches are a function of (seed, epoch); a kill loses at most
    ``every_seconds`` of training. ``every_seconds=0``: after every epoch.

    Each record names the sessions that made its weights: ``before`` (:func:`recorded_sessions`)
    and this one, ``made`` (the machine and date) from ``first_epoch`` on."""

    def __init__(self, backup_dir, chief=True, every_seconds=0.0, before=(), made=None, first_epoch=1):
        super().__init__()
        self.backup_dir, self.chief, self.every_seconds = backup_dir, chief, every_seconds
        self.before, self.made, self.first_epoch = list(before), made or {}, first_epoch
        self._last = self._start = time.monotonic()

    def on_train_begin(self, logs=None):
        self._last = self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if not self.chief or any(isinstance(v, float) and not math.isfinite(v) for v in (logs or {}).values()):
            return
        last_epoch = epoch + 1 == (self.params or {}).get("epochs")
        if last_epoch or time.monotonic() - self._last >= self.every_seconds:
            this = session(self.made, self.first_epoch, epoch + 1, time.monotonic() - self._start)
            save(self.model, self.backup_dir, epoch + 1, [*self.before, this])
            self._last = time.monotonic()


def save(model, backup_dir, epoch, sessions=()):
    """One checkpoint: the weights file, then the record naming it (and the ``sessions`` that made
    it), then older files go."""
    os.makedirs(backup_dir, exist_ok=True)
    name = _weights_name(epoch)
    record = {"epoch": epoch, "weights": name, "sessions": list(sessions)}
    atomic_write(os.path.join(backup_dir, name), lambda tmp: model.save_weights(tmp))
    atomic_write(os.path.join(backup_dir, RECORD), lambda tmp: open(tmp, "w").write(json.dumps(record) + "\n"))
    for path in glob.glob(os.path.join(backup_dir, "epoch-*.weights.h5")) + [
            os.path.join(backup_dir, _KERAS_WEIGHTS), os.path.join(backup_dir, _KERAS_RECORD)]:
        if os.path.basename(path) != name and os.path.exists(path):
            os.remove(path)


class Diverged(ValueError):
    """Training produced a loss that is not finite."""


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first step whose loss is not finite and remembers where; the caller
    raises :class:`Diverged` after ``fit`` (the checkpoint of the last good epoch stays)."""

    def __init__(self):
        super().__init__()
        self.epoch, self.where = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True
