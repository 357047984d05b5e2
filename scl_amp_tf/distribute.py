"""``tf.distribute`` strategies and the worker roles of a run (one code path for all of them).

``--strategy``:
  * ``auto``: ``mirrored`` when several GPUs are visible, else TensorFlow's default strategy
    (one device, no distribution machinery: ``OneDeviceStrategy`` made a small CPU model's
    training 1.5x slower here, its distributed iterator costing per step);
  * ``one_device``: ``OneDeviceStrategy`` on the first GPU, or the CPU;
  * ``mirrored``: every local GPU (or, in the tests, logical CPU devices);
  * ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the machines of the standard
    ``TF_CONFIG`` environment variable (every local GPU of every worker);
  * ``tpu``: ``TPUStrategy`` on the TPU named by ``--tpu`` (or the one the environment provides).

Whatever the strategy, a global batch gives the same loss and update (see ``models`` and
``losses``: losses averaged over the global batch, negatives gathered across replicas, batch norm
synchronised), and the input pipeline splits each global batch between the workers
(``input_pipeline.pipeline`` with the input context). In a multi-worker run only the chief writes the
model directory; every worker restores from it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile

import keras
import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def make_strategy(name, tpu=None):
    """The strategy named by ``--strategy``. Create it before any other TensorFlow op runs:
    ``MultiWorkerMirroredStrategy`` must configure the collectives at program start."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r} must be one of {', '.join(STRATEGIES)}.")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable on every worker, e.g. "
                             'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                             '"task": {"type": "worker", "index": 0}}\' (see the README, "Many machines").')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise ValueError(f"--strategy=tpu: no TPU found ({e}). Run on a TPU VM or name it with --tpu.") from None
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def local_cluster(num_workers):
    """One ``TF_CONFIG`` value (a dict) per worker for ``num_workers`` processes on this machine
    (127.0.0.1, free ports): to try ``--strategy=multi_worker`` on one machine, and for tests."""
    sockets = [socket.socket() for _ in range(num_workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in range(num_workers)]


def is_chief(strategy):
    """True for the process that writes the model directory (always, except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief" or task_type is None:
        return True
    has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and not has_chief


@contextlib.contextmanager
def scratch_dir_unless(chief, path):
    """``path`` for the chief; for another worker a temporary folder, deleted afterwards (the
    usual multi-worker rule: every worker saves, only the chief's copy is kept)."""
    if chief:
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="worker_")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's ``BackupAndRestore`` for many workers: every worker restores from the chief's
    backup, only the chief writes it (workers writing one file at once would corrupt it)."""

    def __init__(self, backup_dir, chief=True):
        super().__init__(backup_dir, delete_checkpoint=False)
        self.chief = chief

    def _save_model(self):
        if self.chief:
            super()._save_model()


def fit_under_multi_worker(model, strategy):
    """Lets Keras's own ``model.fit`` run under ``MultiWorkerMirroredStrategy`` (no-op otherwise).

    Keras 3 (3.15) does not support that strategy in ``fit`` (keras-team/keras#20585), for two
    reasons, both worked around here on this model object only:

    * ``fit`` builds the model from its first batch after averaging it over the replicas with
      ``strategy.reduce``, which fails across workers on a nested batch. Only shapes and dtypes
      matter for that build: the local replica's part of the batch is used.
    * ``fit`` averages each step's logs over the workers with ``strategy.reduce(MEAN, axis=0)``,
      which fails on scalars: the step returns them with a leading axis of length 1.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    keras_build, keras_train_step = model._maybe_symbolic_build, model.train_step

    def build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(batches))
                break
        return keras_build(data_batch=data_batch)

    def train_step(data):
        return {name: tf.reshape(value, [1]) for name, value in keras_train_step(data).items()}

    model._maybe_symbolic_build = build_from_local_batch
    model.train_step = train_step
    return model


@contextlib.contextmanager
def dtype_policy(name):
    """Builds the layers made inside under Keras's ``name`` policy (``--mixed_precision``), and
    restores the previous global policy afterwards. Outputs that feed the losses (embedding,
    arc logits, CE logits) are float32 layers whatever the policy."""
    if name not in PRECISIONS:
        raise ValueError(f"--mixed_precision={name!r} must be one of {', '.join(PRECISIONS)}.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
