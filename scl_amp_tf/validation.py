"""A validation split carved from the training images, and its accuracy after every epoch.

With a few images per class the training signals say little about the test set: L_arc's
accuracy on the original training images climbs to nearly all of them while the test accuracy
stays far below (the memorisation that ``--arc_on_views`` cures). ``--validation_fraction=f`` holds out a
stratified fraction f of each class's training images; the network never trains on them. After
every epoch :class:`ValidationAccuracy` classifies them the way the run is evaluated (SCL-AMP:
the reference database of the remaining training images, section IV.A; CE: its softmax), so
memorisation shows while training, in the progress line and in TensorBoard (``val_accuracy``).
With ``--restore_best_validation`` the run ends with the weights of its best validation epoch,
so a schedule that is too long for a dataset does not end on an over-fitted network; settings
are chosen on this signal, never on the test set.
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np

from scl_amp_tf import data as data_lib
from scl_amp_tf import evaluation
from scl_amp_tf import inference
from scl_amp_tf.files import atomic_write

VALIDATION_SEED_OFFSET = 7_919  # the carving's random stream: apart from the split's own
BEST_WEIGHTS = "best_validation.weights.h5"
BEST_RECORD = "best_validation.json"


def carve(images, labels, fraction, seed):
    """``(fit, validation)`` positions into the training images: a stratified ``fraction`` of
    every class (at least one image; at least one stays for fitting) is held out.

    Exact duplicate images are held out or kept together, so that no picture is on both sides.
    Raises :class:`data.DataError` naming a class with fewer than two distinct images.
    """
    if not 0.0 < fraction < 1.0:
        raise data_lib.DataError(f"--validation_fraction={fraction} must lie in (0, 1).")
    labels = np.asarray(labels)
    digests = data_lib._digests(images)
    rng = np.random.default_rng([seed, VALIDATION_SEED_OFFSET])
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        groups = {}
        for m in members:
            groups.setdefault(digests[m], []).append(int(m))
        groups = [groups[d] for d in sorted(groups)]
        if len(groups) < 2:
            raise data_lib.DataError(
                f"--validation_fraction: class {int(label)} has {len(members)} distinct training image(s); "
                "at least two are needed to hold one out. Give more training images per class or leave "
                "--validation_fraction unset.")
        want = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        taken, _ = data_lib._take([groups[i] for i in rng.permutation(len(groups))], want)
        held.extend(taken)
    validation = np.sort(np.asarray(held, np.int64))
    fit = np.setdiff1d(np.arange(len(labels)), validation)
    return fit, validation


class ValidationAccuracy(keras.callbacks.Callback):
    """Adds ``val_accuracy`` to the logs of every ``every``-th epoch and of the last (put it first
    among the callbacks, so that the progress bar, TensorBoard and the history see it); optionally
    keeps the best validated epoch's weights.

    ``network``: the SCL-AMP encoder (embeddings, classified by a reference database of
    ``fit_data``) or the CE classifier (logits). ``best_dir``: where the best epoch's weights and
    its record go (``restore_best``), so that a resumed run remembers the best it has seen.
    ``validated``: ``[epoch, val_accuracy]`` (1-based) of every validation of this call.
    """

    def __init__(self, network, fit_data, validation_data, by_reference, *, restore_best=False,
                 best_dir=None, batch_size=256, every=1):
        super().__init__()
        self.network = network
        self.fit_data = fit_data
        self.validation_data = validation_data
        self.by_reference = by_reference
        self.restore_best = restore_best
        self.best_dir = best_dir
        self.batch_size = batch_size
        self.every = every
        self.best = None  # {"epoch": 1-based epoch, "val_accuracy": value}
        self.validated = []
        self._outputs = inference.Embedder(network, batch_size)  # traced once, called every epoch

    def predictions(self):
        queries = self._outputs(self.validation_data.images)
        if self.by_reference:
            predictions, _, _ = evaluation.reference_predictions(
                self._outputs(self.fit_data.images), self.fit_data.labels, queries, self.fit_data.class_names)
            return predictions
        return np.argmax(queries, axis=1)

    def accuracy(self):
        return float(np.mean(self.predictions() == self.validation_data.labels))

    def figures(self):
        """``{"accuracy", "per_class_recall": {class name: recall}}`` over the validation images,
        for the network as it is now (after training: the weights the run ends with)."""
        predictions, labels = self.predictions(), self.validation_data.labels
        return {"accuracy": float(np.mean(predictions == labels)),
                "per_class_recall": evaluation.per_class_accuracy(labels, predictions,
                                                                  self.validation_data.class_names)}

    def on_train_begin(self, logs=None):
        if self.restore_best and self.best_dir and os.path.exists(os.path.join(self.best_dir, BEST_RECORD)):
            with open(os.path.join(self.best_dir, BEST_RECORD)) as f:
                self.best = json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and epoch + 1 != last:
            return
        value = self.accuracy()
        self.validated.append([epoch + 1, value])
        if logs is not None:
            logs["val_accuracy"] = value
        if self.best is None or value > self.best["val_accuracy"]:
            self.best = {"epoch": epoch + 1, "val_accuracy": value}
            if self.restore_best and self.best_dir:
                atomic_write(os.path.join(self.best_dir, BEST_WEIGHTS), self.network.save_weights)
                atomic_write(os.path.join(self.best_dir, BEST_RECORD),
                             lambda tmp: open(tmp, "w").write(json.dumps(self.best) + "\n"))

    def on_train_end(self, logs=None):
        if self.restore_best and self.best_dir and os.path.exists(os.path.join(self.best_dir, BEST_WEIGHTS)):
            self.network.load_weights(os.path.join(self.best_dir, BEST_WEIGHTS))
