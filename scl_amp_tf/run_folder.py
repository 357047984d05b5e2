"""A training run's folder: the names of its files, and reading a finished run back.

``python -m scl_amp_tf.train`` fills one ``--model_dir`` (see :mod:`scl_amp_tf.training`);
evaluate, export, predict, Grad-CAM and reproduce read it through this module, not the trainer.
"""
from __future__ import annotations

import json
import os

import numpy as np

from scl_amp_tf import data as data_lib
from scl_amp_tf import open_set
from scl_amp_tf import models  # noqa: F401  (registers the custom layers that encoder.keras holds)

CONFIG = "config.json"  # the run's settings
FLAGS = "flags.cfg"  # the same as an absl flag file
SPLIT = "split.npz"  # train, test and validation indices into the dataset
ENCODER = "encoder.keras"  # the SCL-AMP encoder or the CE classifier
REFERENCE_DB = "reference_db.npz"  # the reference database of the training images
METRICS = "metrics.json"
PSEUDO_LABELS = "pseudo_labels.npz"  # --pseudo_labels_from: the pool images chosen, their classes and margins
BACKBONE_WEIGHTS = "backbone.weights.h5"  # the backbone alone: --init_from / --backbone_weights
BACKUP = "backup"  # the checkpoint folder (scl_amp_tf.checkpoints)
LOGS = "logs"  # TensorBoard
LOCK = ".lock"  # held by the run that trains into the folder (files.exclusive_lock)


def saved_data_flags(model_dir):
    """``data_dir`` and ``manual_dir`` as the run recorded them in its flags.cfg (None if absent)."""
    found = {"data_dir": None, "manual_dir": None}
    path = os.path.join(model_dir, FLAGS)
    if os.path.exists(path):
        for line in open(path):
            key, _, value = line.strip().partition("=")
            if key.lstrip("-") in found and value:
                found[key.lstrip("-")] = value
    return found


def check_finished(model_dir, files=(CONFIG, SPLIT, ENCODER, REFERENCE_DB)):
    """Raises ValueError naming the missing files when ``model_dir`` is not a finished run."""
    missing = [f for f in files if not os.path.exists(os.path.join(model_dir, f))]
    if missing:
        raise ValueError(f"--model_dir={model_dir} is not a finished training run (no {', '.join(missing)}). "
                         "Train one with python -m scl_amp_tf.train --model_dir=... first.")


def load_settings(model_dir, files=(CONFIG, SPLIT, ENCODER, REFERENCE_DB)):
    """A finished run's settings (its config.json), after :func:`check_finished` on ``files``."""
    check_finished(model_dir, files)
    with open(os.path.join(model_dir, CONFIG)) as f:
        return json.load(f)


def load_run(model_dir, data_dir=None, manual_dir=None, every_class=False):
    """A finished run: ``(settings dict, training images, test images)``, split as in training;
    with ``every_class``, also its dataset with every class, also those a ``--classes`` run never
    trained on (what enrolment meets), loaded once for both.

    ``data_dir`` / ``manual_dir`` override the ones the run recorded (the data may have moved).
    Raises ValueError when ``model_dir`` is not a finished run or its data cannot be loaded.
    """
    settings = load_settings(model_dir)
    recorded = saved_data_flags(model_dir)
    everything = data_lib.load_dataset(settings["dataset"], settings["image_size"],
                                       data_dir=data_dir or recorded["data_dir"],
                                       manual_dir=manual_dir or recorded["manual_dir"],
                                       synthetic_per_class=settings["synthetic_per_class"], seed=settings["seed"])
    classes = settings.get("classes")
    data = data_lib.select_classes(everything, classes) if classes else everything
    with np.load(os.path.join(model_dir, SPLIT)) as split:
        train_idx, test_idx = split["train"], split["test"]
    if max(train_idx.max(initial=0), test_idx.max(initial=0)) >= len(data.labels):
        raise ValueError(f"{model_dir}/{SPLIT} indexes {max(train_idx.max(), test_idx.max()) + 1} images but "
                         f"the dataset ({data.description}) has {len(data.labels)}: not the data of this run.")
    run = (settings, data.subset(train_idx), data.subset(test_idx))
    return (*run, everything) if every_class else run


def rotations_of(model_dir, settings):
    """The turns the run's views took: ``metrics.json``'s ``rotations_used`` (``--rotations=auto``
    resolved on the fitted images), else its ``--rotations`` (runs made before the flag: quarter)."""
    path = os.path.join(model_dir, METRICS)
    if os.path.exists(path):
        with open(path) as f:
            used = json.load(f).get("rotations_used")
        if used is not None:
            return used
    return settings.get("rotations", "quarter")


def tta_of(settings):
    """The run's ``--tta`` (runs made before the flag existed had none)."""
    return settings.get("tta", "none")


def validation_mask(model_dir, num_train):
    """Which of a run's training images (in ``load_run``'s order) were its validation split: held
    out from fitting (``--validation_fraction``), references of the database after training."""
    with np.load(os.path.join(model_dir, SPLIT)) as split:
        train, held_out = split["train"], split["validation"] if "validation" in split else np.zeros(0, np.int64)
    if len(train) != num_train:
        raise ValueError(f"{model_dir}/{SPLIT} has {len(train)} training images, not {num_train}.")
    return np.isin(train, held_out)


def auto_reject_threshold(model_dir, train_embeddings, train_labels, quantile, prototypes="mean"):
    """``--reject_threshold=auto`` for a run: calibrated on its validation images, which the
    network never fitted, so that about ``1 - quantile`` of known-class test images are accepted
    (calibrated on fitted images it would reject most of them), scored under the ``prototypes``
    rule (:data:`scl_amp_tf.reference.PROTOTYPE_RULES`). Raises ValueError for a run trained
    without a validation split."""
    held_out = validation_mask(model_dir, len(train_labels))
    if not held_out.any():
        raise ValueError(f"--reject_threshold=auto calibrates on training images the network did not fit, and "
                         f"{model_dir} has none: train it with --validation_fraction (e.g. 0.2), or give the "
                         "threshold as a number.")
    return open_set.calibrate_threshold(train_embeddings, train_labels, quantile, held_out=held_out,
                                        prototypes=prototypes)
