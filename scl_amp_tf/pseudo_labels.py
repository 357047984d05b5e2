"""Pseudo-labels: a finished run (the teacher) labels an unlabeled pool; a new run (the student)
trains on its labelled images plus the pool's most confident, class-balanced share.

This is self-training (Xie et al. 2020, "Self-training with Noisy Student"; the last stage of
SimCLR v2, Chen et al. 2020, distils into a student on the unlabeled images): the student sees
the teacher's confident labels under the augmentations of training, with the same step budget,
so it learns from many more images than the few labelled ones. ``--pseudo_labels_from=RUN_DIR``
names the teacher, ``--unlabeled_data`` the pool.

The choice of images (:func:`select`) is a rule for any folder of images:

* each pool image gets the teacher's class and a confidence, the margin between its best and its
  second-best class score (the mean cosine similarity to a class's references for SCL-AMP,
  section IV.A; the softmax for a CE teacher). A map close to two classes is ambiguous however
  close it is to the best one, and the margin says so where the best score alone does not;
* class by class, the images the teacher gives that class are ranked by margin and the first
  ``ratio`` times that class's labelled count are taken (fewer if the teacher gives the class
  fewer). The student's classes keep the labelled set's proportions, and the confident share
  of a class the teacher over-predicts cannot crowd out the others.

The teacher must have been trained on the same data with the same test images: with
``--unlabeled_data=rest`` the pool is then exactly the images it neither trained on nor is
tested on, and no test image can come back as a pseudo-labelled training image. Likewise with
``--validation_fraction``: the teacher must have held out (never fitted) the student's validation
images, and an SCL-AMP teacher labels the pool with a reference database of the student's fitted
images only. Otherwise a pool image labelled for its likeness to a validation image would carry
that image's label into the student, and the student's validation accuracy, the signal for
whether to keep it, would read high. (A teacher trained with ``--restore_best_validation`` chose
its epoch on those images: a smaller leak of the same kind, left to the user.)
"""
from __future__ import annotations

import os

import numpy as np

from scl_amp_tf import run_folder

DEFAULT_RATIO = 4.0


def select(scores, labelled_counts, ratio):
    """Class-balanced confident pseudo-labels from the teacher's class scores ``[N, K]``.

    ``labelled_counts[k]``: the labelled images of class k; class k takes at most
    ``round(ratio * labelled_counts[k])`` images, those of largest margin (best minus second-best
    score) among the images whose best class is k. Returns ``(indices, labels, margins)`` into
    ``scores``, sorted by index.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [images, classes >= 2], got shape {scores.shape}.")
    if len(labelled_counts) != scores.shape[1]:
        raise ValueError(f"{len(labelled_counts)} labelled counts for {scores.shape[1]} classes.")
    best = np.argmax(scores, axis=1)
    top_two = np.sort(scores, axis=1)[:, -2:]
    margins = top_two[:, 1] - top_two[:, 0]
    chosen = []
    for k, count in enumerate(labelled_counts):
        members = np.flatnonzero(best == k)
        # stable: equal margins keep the pool's order, so the choice is a function of the scores alone
        ranked = members[np.argsort(-margins[members], kind="stable")]
        chosen.append(ranked[:int(round(ratio * count))])
    indices = np.sort(np.concatenate(chosen)).astype(np.int64)
    return indices, best[indices].astype(np.int64), margins[indices]


def check_teacher(teacher_dir, dataset, image_size, test_idx, validation_idx=()):
    """Raises ValueError unless ``teacher_dir`` is a finished scl_amp or ce run on ``dataset`` at
    ``image_size`` whose test images are ``test_idx``: so that, with ``--unlabeled_data=rest``, the
    pool holds no test image and the teacher was never tested on a training image; and unless it
    held out (never fitted) the student's validation images ``validation_idx``."""
    settings = run_folder.load_settings(teacher_dir)
    where = f"--pseudo_labels_from={teacher_dir}"
    if settings.get("method") not in ("scl_amp", "ce"):
        raise ValueError(f"{where}: a {settings.get('method')} run has no classes to give; the teacher must be "
                         "a --method=scl_amp or --method=ce run.")
    if settings.get("dataset") != dataset:
        raise ValueError(f"{where} trained on --dataset={settings.get('dataset')}, not {dataset}.")
    if settings.get("image_size") != image_size:
        raise ValueError(f"{where} trained at --image_size={settings.get('image_size')}, not {image_size}.")
    with np.load(os.path.join(teacher_dir, run_folder.SPLIT)) as split:
        theirs = np.sort(split["test"])
        its_validation = split["validation"] if "validation" in split.files else np.zeros(0, np.int64)
    if not np.array_equal(theirs, np.sort(np.asarray(test_idx))):
        raise ValueError(f"{where} holds out other test images than this run: train the teacher with the same "
                         "--seed, --shots_per_class, --test_fraction (or --train_fraction) and --classes, so that "
                         "no test image is pseudo-labelled.")
    not_held_out = np.setdiff1d(np.asarray(validation_idx, np.int64), its_validation)
    if len(not_held_out):
        raise ValueError(f"{where} did not hold out {len(not_held_out)} of the {len(validation_idx)} images this run "
                         "holds out for validation: train the teacher with the same --seed, --shots_per_class and "
                         "--validation_fraction, so that the student's validation images are labels neither run "
                         "has learned.")
    return settings


def teacher_scores(teacher_dir, images, references=None):
    """The teacher's class scores ``[N, K]`` for uint8 images at its size, as it predicts
    (its reference database, or its softmax for CE), and its class names. ``references``
    (labelled images): an SCL-AMP teacher's database is rebuilt from these alone."""
    from scl_amp_tf.predicting import RunPredictor

    teacher = RunPredictor(teacher_dir)
    if references is not None and teacher.method != "ce":
        teacher.use_references(references.images, references.labels)
    return teacher.scores(images), teacher.class_names


def for_run(config, data, train_data, test_idx, pool, pool_classes=None, validation_idx=(), fit_labelled=None):
    """``--pseudo_labels_from``: the pool's images that the teacher labels with confidence
    (:func:`select`), as labelled images, and the record of the choice for
    metrics.json. The choice is saved in the model directory on the first call and read back on a
    resume, so a resumed run trains on the same images wherever it runs. ``pool_classes``: the
    pool's true classes where they are known (``rest``), read only to report the precision.
    ``validation_idx`` (dataset indices) and ``fit_labelled`` (the labelled images the student
    fits): with ``--validation_fraction`` the teacher must have held out the former, and an SCL-AMP
    teacher labels the pool with references of the latter only. The saved choice records the
    held-out images, so that a run folder whose choice was made without that rule (before it
    existed) is refused rather than resumed on it."""
    from scl_amp_tf import data as data_lib  # here: train_config imports this module, and data imports TFDS

    path = os.path.join(config.model_dir, run_folder.PSEUDO_LABELS)
    counts = np.bincount(train_data.labels, minlength=data.num_classes)
    if os.path.exists(path):
        with np.load(path) as saved:
            indices, labels, margins = saved["indices"], saved["labels"], saved["margins"]
            held_out = saved["validation"] if "validation" in saved.files else None
        if len(validation_idx) and (held_out is None or not np.array_equal(np.sort(held_out),
                                                                           np.sort(validation_idx))):
            raise ValueError(f"--model_dir={config.model_dir}: its pseudo-labels were chosen by a teacher whose "
                             "references included this run's validation images (a run folder from before the "
                             "teacher left them out); start the run in a new --model_dir.")
    else:
        check_teacher(config.pseudo_labels_from, config.dataset, config.image_size, test_idx, validation_idx)
        scores, names = teacher_scores(config.pseudo_labels_from, pool,
                                       fit_labelled if len(validation_idx) else None)
        if list(names) != list(data.class_names):
            raise ValueError(f"--pseudo_labels_from={config.pseudo_labels_from} knows the classes "
                             f"{', '.join(names)}, not this run's {', '.join(data.class_names)}.")
        indices, labels, margins = select(scores, counts, config.pseudo_label_ratio)
    record = {"teacher": config.pseudo_labels_from, "ratio": config.pseudo_label_ratio, "pool": int(len(pool)),
              "count": int(len(indices)),
              "per_class": {n: int(c) for n, c in zip(data.class_names, np.bincount(labels, minlength=len(counts)))},
              "smallest_margin": float(margins.min()) if len(margins) else None, "precision": None}
    if pool_classes is not None and len(indices):  # how right the teacher was (never trained on)
        record["precision"] = float(np.mean(pool_classes[indices] == labels))
    images = data_lib.LabelledImages(pool[indices], labels, data.class_names, "pseudo-labelled")
    return images, (indices, labels, margins), record
