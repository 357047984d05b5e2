"""Training and evaluation of one run: data -> split -> model -> fit -> reference database.

:func:`train_and_evaluate` takes a :class:`TrainConfig` (no global flags are read here) and
fills one model directory::

    model_dir/
      config.json          the run's settings (a rerun with the same settings resumes)
      flags.cfg            the same as an absl flag file (--flagfile=model_dir/flags.cfg)
      backup/              the last epoch's checkpoint (resumes an interrupted run; kill-safe,
                           see :mod:`checkpoints`)
      logs/                TensorBoard logs (train/ and the final test accuracy)
      split.npz            train and test indices into the dataset
      encoder.keras        the trained encoder (SCL-AMP) or classifier (CE baseline)
      reference_db.npz     the reference database of the training images' embeddings
      metrics.json         test accuracy and per-class accuracy; the training sessions that made the
                           run (machine, date, epochs, seconds: a resumed run names each)

The final files are written to temporary names and renamed into place, so a model directory
never holds a half-written artefact.

Why one file of about 370 lines: the steps of one run (data, split, model, fit, evaluation,
artefacts) share that run's state; every part that stands on its own has its module
(:mod:`input_pipeline`, :mod:`checkpoints`, :mod:`validation`, :mod:`pseudo_labels`,
:mod:`run_folder`, :mod:`distribute`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import augmentation
from scl_amp_tf import checkpoints
from scl_amp_tf import data as data_lib
from scl_amp_tf import distribute
from scl_amp_tf import evaluation
from scl_amp_tf import input_pipeline
from scl_amp_tf import invariance
from scl_amp_tf import models
from scl_amp_tf import pseudo_labels
from scl_amp_tf import provenance
from scl_amp_tf import run_folder
from scl_amp_tf import schedules
from scl_amp_tf import validation
from scl_amp_tf.files import atomic_write, exclusive_lock, write_json
from scl_amp_tf.inference import embed
from scl_amp_tf.run_folder import BACKBONE_WEIGHTS, LOCK
from scl_amp_tf.train_config import TrainConfig, check_model_dir

# train_config.OPTIMIZERS, as Keras classes
OPTIMIZER_CLASSES = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
BN_RECALIBRATION_IMAGES = 256  # training images whose statistics --bn_recalibration takes
UNLABELED_SEED_OFFSET = 1_000_003  # the unlabeled stream's seed: apart from any run's own seed


def _unlabeled_images(config, data, train_idx, test_idx):
    """``(uint8 images, their classes)`` for ``--unlabeled_data`` (``(None, None)`` without it):
    ``rest`` takes the dataset's images that are neither training nor test images (needs
    ``--test_fraction``; their classes are known, and only ever read to report how right
    pseudo-labels are), ``folder:/path`` a folder (classes None)."""
    if config.unlabeled_data is None:
        return None, None
    if config.unlabeled_data == "rest":
        rest = data_lib.remaining(data, train_idx, test_idx)
        if len(rest) == 0:
            raise data_lib.DataError(
                "--unlabeled_data=rest: no image is left beside the training and test images. Hold out a "
                "test set with --test_fraction (with --shots_per_class), so that the rest of the training "
                "portion can serve unlabeled.")
        images, classes = data.images[rest], data.labels[rest]
    else:
        classes = None
        images = data_lib.load_unlabeled(config.unlabeled_data, config.image_size, data.images.shape[-1],
                                         config.max_image_pixels)
    wanted = config.unlabeled_batch_size or config.batch_size
    if len(images) < wanted:
        raise data_lib.DataError(f"--unlabeled_data={config.unlabeled_data}: {len(images)} images, fewer than "
                                 f"one batch of {wanted} (--unlabeled_batch_size).")
    return images, classes


def steps_per_epoch(num_images, batch_size, num_replicas=1):
    """Optimizer steps in one pass over ``num_images`` (the last, short batch is dropped when
    several replicas share a step, see :func:`input_pipeline.pipeline`)."""
    return num_images // batch_size if num_replicas > 1 else math.ceil(num_images / batch_size)


def initial_backbone_weights(config: TrainConfig):
    """The weights the backbone starts from: ``--backbone_weights``, or the backbone of the run
    ``--init_from`` names (e.g. a ``--method=contrastive`` pre-training on unlabeled images)."""
    if config.init_from is None:
        return config.backbone_weights
    path = os.path.join(config.init_from, BACKBONE_WEIGHTS)
    settings_path = os.path.join(config.init_from, run_folder.CONFIG)
    if not os.path.exists(path) or not os.path.exists(settings_path):
        raise ValueError(f"--init_from={config.init_from} is not a finished run of this project (no "
                         f"{BACKBONE_WEIGHTS}); pre-train one with --method=contrastive --model_dir=... first.")
    with open(settings_path) as f:
        theirs = json.load(f)
    if theirs.get("backbone") != config.backbone:
        raise ValueError(f"--init_from={config.init_from} trained a {theirs.get('backbone')} backbone, "
                         f"not --backbone={config.backbone}.")
    return path


def check_pretraining_saw_no_test_image(config: TrainConfig, data, test_idx):
    """Raises ValueError when the run ``--init_from`` names fitted any of this run's test images.

    A pre-training (labels unread) on the same dataset fitted its training images and, with
    ``--unlabeled_data=rest``, every image that was neither its training nor its test image; if this
    run holds out other test images (another ``--seed``, ``--test_fraction`` or
    ``--shots_per_class``), some were already seen and the test accuracy would be flattering. Only a
    run on the same data can be checked (same dataset and classes; for the synthetic maps, which each
    seed draws anew, the same seed and size): an ``--unlabeled_data=folder:`` pool or another dataset
    is the user's to keep apart. An unfinished run is left to :func:`initial_backbone_weights`."""
    if config.init_from is None:
        return
    split_path = os.path.join(config.init_from, run_folder.SPLIT)
    settings_path = os.path.join(config.init_from, run_folder.CONFIG)
    if not (os.path.exists(split_path) and os.path.exists(settings_path)):
        return
    with open(settings_path) as f:
        theirs = json.load(f)
    same = [("dataset", config.dataset), ("classes", config.classes)]
    if config.dataset == data_lib.SYNTHETIC:
        same += [("seed", config.seed), ("synthetic_per_class", config.synthetic_per_class)]
    if any(theirs.get(key) != value for key, value in same):
        return
    with np.load(split_path) as split:
        train, test = split["train"], split["test"]
    fitted = train if theirs.get("unlabeled_data") != "rest" else np.concatenate(
        [train, data_lib.remaining(data, train, test)])
    seen = np.intersect1d(fitted, test_idx)
    if len(seen):
        raise ValueError(f"--init_from={config.init_from} pre-trained on {len(seen)} of this run's {len(test_idx)} "
                         "test images: pre-train with the same --seed, --shots_per_class and --test_fraction as "
                         "this run (with --unlabeled_data=rest), or on images outside this dataset, so that the "
                         "test images stay unseen.")


def build_model(config: TrainConfig, strategy, image_shape, num_classes, total_steps=None):
    """The run's compiled model, built under ``strategy``'s scope and ``--mixed_precision``.

    ``total_steps``: the run's optimizer steps, which ``--lr_schedule=cosine`` needs.

    Returns ``(model, encoder, features, views)``: the model ``fit`` trains, the network whose
    output is saved as ``encoder.keras`` (the SCL-AMP encoder, or the CE classifier itself), its
    backbone, and the views its input pipeline gives (``"three"`` for SCL-AMP, ``"one"`` for CE).
    Batch norm is synchronised across replicas when there are several.
    """
    with strategy.scope(), distribute.dtype_policy(config.mixed_precision):
        features = models.build_features(image_shape, config.backbone, initial_backbone_weights(config),
                                         config.bn_momentum, config.stem_used(image_shape[0]),
                                         fused_batchnorm=config.fused_batchnorm)
        if strategy.num_replicas_in_sync > 1:
            models.set_batchnorm(features, synchronized=True)
        optimizer = OPTIMIZER_CLASSES[config.optimizer](schedules.learning_rate(
            config.lr_schedule, config.learning_rate, total_steps, config.warmup_fraction),
            weight_decay=config.weight_decay or None)
        if config.method in ("scl_amp", "contrastive"):
            encoder = models.build_encoder(features, config.embedding_dim, config.projection_dim)
            model = models.SclAmpModel(encoder, num_classes, **config.loss_settings())
            model.build()
            model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
            views = "three"
        else:
            model = encoder = models.build_classifier(features, num_classes)
            model.compile(optimizer=optimizer,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          jit_compile=config.jit_compile)
            views = "one"
        if config.weight_decay:  # decoupled (Loshchilov and Hutter, AdamW) on the kernels only, as is
            # usual: biases and batch norm's scales and offsets are few and set each feature's offset and gain
            optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
        # Its slots now, not in the first trace of the training step: a tf.function whose first
        # trace creates variables is traced a second time, which doubles the start of every run.
        optimizer.build(model.trainable_variables)
        distribute.fit_under_multi_worker(model, strategy)
    return model, encoder, features, views


def fitted_views(config, fit_data, verbose=False):
    """The views' smallest crop area and turns, ``auto`` resolved on the images the run fits:
    ``((crop_scale_min, frame score or None), (rotations, orientation score or None))``
    (:func:`scl_amp_tf.augmentation.auto_crop_scale_min`, :func:`~scl_amp_tf.augmentation.auto_rotations`).
    Refuses ``--tta=dihedral`` with half turns: it would average over turns the run never trained."""
    if config.crop_scale_min == "auto":
        scale_min, score = augmentation.auto_crop_scale_min(fit_data.images)
        if verbose:
            print(f"--crop_scale_min=auto: {scale_min} (frame score {score:.3f}; above "
                  f"{augmentation.FRAMED_THRESHOLD} the images share a fixed frame and crops stay mild).")
    else:
        scale_min, score = config.crop_scale_min, None
    if config.rotations == "auto":
        rotations, orientation = augmentation.auto_rotations(fit_data.images, fit_data.labels)
        if verbose:
            print(f"--rotations=auto: {rotations} (orientation score {orientation:.3f}; above "
                  f"{augmentation.ORIENTED_THRESHOLD} each class's images share an orientation and views "
                  "turn by half turns only).")
    else:
        rotations, orientation = config.rotations, None
    invariance.check_with_turns(
        config.tta, rotations, f"--rotations={config.rotations}" + (
            f" (half turns here: the images share an orientation, score {orientation:.3f})"
            if orientation is not None else ""), "give --rotations=quarter or --tta=none")
    return (scale_min, score), (rotations, orientation)


def train_and_evaluate(config: TrainConfig, callbacks=()):
    """Runs (or resumes) one training run and returns the metrics dict written to metrics.json.

    ``callbacks``: extra Keras callbacks, run after the checkpoint and TensorBoard callbacks.
    The model directory is locked from its first write to the end (a second run into it is
    refused); a loss that is not finite stops the run with :class:`checkpoints.Diverged`.
    """
    config.validate()
    if os.path.exists(config.model_dir) and not os.path.isdir(config.model_dir):
        raise ValueError(f"--model_dir={config.model_dir} is a file, not a folder.")
    with contextlib.ExitStack() as held:  # the model directory's lock, once taken
        return _train_and_evaluate(config, callbacks, held)


def _train_and_evaluate(config, callbacks, held):
    # First: MultiWorkerMirroredStrategy must set up its collectives before any other TF op runs.
    strategy = distribute.make_strategy(config.strategy, config.tpu)
    chief = distribute.is_chief(strategy)
    data = data_lib.load_dataset(config.dataset, config.image_size, data_dir=config.data_dir,
                                 manual_dir=config.manual_dir,
                     synthetic_per_class=config.synthetic_per_class, seed=config.seed, classes=config.classes,
                     max_pixels=config.max_image_pixels)
    train_idx, test_idx = data_lib.split(data, seed=config.seed, shots_per_class=config.shots_per_class,
                                         train_fraction=config.train_fraction, test_fraction=config.test_fraction)
    train_data, test_data = data.subset(train_idx), data.subset(test_idx)
    check_pretraining_saw_no_test_image(config, data, test_idx)
    unlabeled, unlabeled_classes = _unlabeled_images(config, data, train_idx, test_idx)
    # --validation_fraction: the network fits the other training images only; after training every
    # labelled training image (the validation ones too) is a reference of the database.
    fit_pos, val_pos = (validation.carve(train_data.images, train_data.labels, config.validation_fraction,
                                         config.seed)
                        if config.validation_fraction else (np.arange(len(train_idx)), np.zeros(0, np.int64)))
    labelled_fit, val_data = train_data.subset(fit_pos), train_data.subset(val_pos)
    validation_idx = train_idx[val_pos]  # dataset indices: split.npz and pseudo_labels.npz record them
    pseudo = None  # --pseudo_labels_from: the teacher's confident share of the pool joins the labelled images
    if config.pseudo_labels_from is not None:
        pseudo = pseudo_labels.for_run(config, data, train_data, test_idx, unlabeled, unlabeled_classes,
                                       validation_idx=validation_idx, fit_labelled=labelled_fit)
        unlabeled = None
    if config.method == "contrastive":  # pre-training: every image without its label, in one pool
        pool = np.concatenate([train_data.images] + ([unlabeled] if unlabeled is not None else []))
        unlabeled = None
    fit_data = labelled_fit if config.method != "contrastive" else data_lib.LabelledImages(
        pool, np.full(len(pool), -1, np.int64), data.class_names, "unlabeled pool")
    if pseudo is not None:
        fit_data = data_lib.LabelledImages(np.concatenate([labelled_fit.images, pseudo[0].images]),
                                           np.concatenate([labelled_fit.labels, pseudo[0].labels]),
                                           data.class_names, "labelled and pseudo-labelled")
    # The views' crops and turns, fitted to the images before anything is written.
    (scale_min, score), (rotations, orientation) = fitted_views(config, fit_data, verbose=config.verbose and chief)
    crop_scale = (scale_min, 1.0)
    check_model_dir(config)
    if config.verbose and chief:
        print(f"Data: {data.description}; {data.num_classes} classes; {len(train_idx)} training and "
              f"{len(test_idx)} test images at {config.image_size}x{config.image_size}"
              + (f" ({len(val_pos)} of the training images held out for validation)" if len(val_pos) else "")
              + (f"; {len(unlabeled)} unlabeled images for L_con" if unlabeled is not None else "")
              + (f"; {pseudo[2]['count']} of {pseudo[2]['pool']} unlabeled images pseudo-labelled by "
                 f"{config.pseudo_labels_from}" if pseudo is not None else "") + ".")

    # The model is built before anything is written: a bad --backbone_weights (or any other
    # failure to build) leaves no model directory behind.
    keras.utils.set_random_seed(config.seed)
    per_epoch = steps_per_epoch(len(fit_data.labels), config.batch_size, strategy.num_replicas_in_sync)
    # --steps: the same amount of training whatever the number of images (small sets get more epochs).
    epochs = config.epochs if config.steps is None else max(1, math.ceil(config.steps / per_epoch))
    total_steps = epochs * per_epoch
    model, encoder, features, views = build_model(config, strategy, train_data.images.shape[1:], data.num_classes,
                                                  total_steps=total_steps)

    if chief:  # only the chief writes the model directory; the other workers read its backup
        try:
            os.makedirs(config.model_dir, exist_ok=True)
            # One run per folder at a time; the settings are checked again under the lock.
            held.enter_context(exclusive_lock(os.path.join(config.model_dir, LOCK),
                                              f"--model_dir={config.model_dir}"))
        except OSError as e:
            raise ValueError(f"--model_dir={config.model_dir}: cannot write there ({e.strerror}).") from None
        check_model_dir(config)
        write_json(os.path.join(config.model_dir, run_folder.CONFIG), config.run_settings())
        atomic_write(os.path.join(config.model_dir, run_folder.FLAGS),
                     lambda tmp: open(tmp, "w").write(config.as_flags()))
        atomic_write(os.path.join(config.model_dir, run_folder.SPLIT),
                     lambda tmp: np.savez(tmp, train=train_idx, test=test_idx, validation=validation_idx))
        if pseudo is not None:
            indices, labels, margins = pseudo[1]  # and the validation images the teacher's references left out
            atomic_write(os.path.join(config.model_dir, run_folder.PSEUDO_LABELS),
                         lambda tmp: np.savez(tmp, indices=indices, labels=labels, margins=margins,
                                              validation=validation_idx))

    # The epoch to start from, before the input is built: each epoch's batches are a function of
    # (seed, epoch), so a resumed run trains on what the uninterrupted run would have.
    backup_dir = os.path.join(config.model_dir, run_folder.BACKUP)
    initial_epoch = checkpoints.restore(model, backup_dir)
    trained_before = checkpoints.recorded_sessions(backup_dir, initial_epoch)  # where those epochs were trained
    made = provenance.made()
    if initial_epoch > epochs:
        raise ValueError(f"--model_dir={config.model_dir} has trained {initial_epoch} epochs already; "
                         f"{'--steps=' + str(config.steps) if config.steps else '--epochs=' + str(config.epochs)} "
                         f"asks for {epochs}. A run cannot be shortened: give at least {initial_epoch} epochs "
                         "(or the same steps), or a new --model_dir.")

    def make_input(context):
        labelled = input_pipeline.pipeline(
            fit_data, batch_size=config.batch_size, views=views, seed=config.seed, shuffle=True,
            crop_scale=crop_scale, rotations=rotations, input_context=context,
            drop_remainder=strategy.num_replicas_in_sync > 1, epochs=(initial_epoch, epochs))
        if unlabeled is None:
            return labelled
        # Each step: the labelled batch and a batch of unlabeled images (class id -1, L_con only),
        # walking through the pool in their own seeded stream; an epoch is one pass over the labelled images.
        unlabeled_batch = config.unlabeled_batch_size or config.batch_size
        extra = input_pipeline.pipeline(
            data_lib.LabelledImages(unlabeled, np.full(len(unlabeled), -1, np.int64), data.class_names, "unlabeled"),
            batch_size=unlabeled_batch, views="three", seed=config.seed + UNLABELED_SEED_OFFSET, shuffle=True,
            crop_scale=crop_scale, rotations=rotations, input_context=context, drop_remainder=True,
            epochs=(initial_epoch, epochs), samples_per_epoch=per_epoch * unlabeled_batch)
        return tf.data.Dataset.zip(labelled, extra).map(
            lambda a, b: (tuple(tf.concat([u, v], 0) for u, v in zip(a[0], b[0])), tf.concat([a[1], b[1]], 0)))

    train_ds = strategy.distribute_datasets_from_function(make_input)
    with distribute.scratch_dir_unless(chief, os.path.join(config.model_dir, run_folder.LOGS)) as log_dir:
        validating = [validation.ValidationAccuracy(
            encoder, labelled_fit, val_data, by_reference=config.method != "ce",
            restore_best=config.restore_best_validation, best_dir=config.model_dir if chief else None,
            every=config.validation_every)
        ] if len(val_pos) else []
        # Validation first: the progress bar, TensorBoard and the history then see val_accuracy.
        divergence = checkpoints.StopOnDivergence()
        callbacks = [divergence, *validating, checkpoints.EpochCheckpoint(
                         backup_dir, chief=chief, every_seconds=config.checkpoint_seconds, before=trained_before,
                         made=made, first_epoch=initial_epoch + 1),
                     keras.callbacks.TensorBoard(log_dir, profile_batch=config.profiled_steps()
                                                 if config.profile_batches and chief else 0), *callbacks]
        # One dataset for all the epochs left (steps_per_epoch keeps Keras on one iterator);
        # shuffle=False: the tf.data pipeline orders the images (seeded), Keras cannot shuffle a dataset.
        history = model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=per_epoch,
                            callbacks=callbacks, verbose=config.verbose if chief else 0,
                            shuffle=False) if initial_epoch < epochs else _no_history()
        if divergence.where is not None:
            epoch, step, loss = divergence.where
            raise checkpoints.Diverged(
                f"Training diverged: the loss was {loss} at step {step} of epoch {epoch}; the run stopped. "
                f"The checkpoint of epoch {initial_epoch if epoch == 1 else epoch - 1} is kept in {backup_dir} "
                "(nothing else was written). Lower --learning_rate, then rerun into a new --model_dir.")
    if not chief:  # the chief evaluates and writes the results
        return {"chief": False, "epochs_run_in_this_call": [e + 1 for e in history.epoch]}
    if config.bn_recalibration:
        sample = np.random.default_rng(config.seed).permutation(len(train_data.labels))[:BN_RECALIBRATION_IMAGES]
        models.recalibrate_batchnorm(features, data_lib.to_float(train_data.images[np.sort(sample)]))

    metrics, database = evaluate(config, encoder, features, train_data, test_data)
    # The whole run's sessions, as the last epoch's checkpoint records them: a resumed run says every
    # machine that trained it and its total time.
    sessions = checkpoints.recorded_sessions(backup_dir, history.epoch[-1] + 1 if history.epoch else initial_epoch)
    metrics.update(made=provenance.made(), train_seconds=checkpoints.total_seconds(sessions),
                   training_sessions=sessions, dataset_description=data.description,
                   epochs=epochs,
                   steps=total_steps, fit_images=int(len(fit_data.labels)), crop_scale_min_used=scale_min,
                   stem_used=config.stem_used(config.image_size), fused_batchnorm=config.fused_batchnorm,
                   frame_score=score, rotations_used=rotations, orientation_score=orientation,
                   pseudo_labels=None if pseudo is None else pseudo[2],
                   epochs_run_in_this_call=[e + 1 for e in history.epoch],
                   final_train_metrics={k: float(v[-1]) for k, v in history.history.items()} if history.history else {},
                   validation=None if not validating else {
                       "fraction": config.validation_fraction, "num_images": int(len(val_pos)),
                       # this call's validations: every --validation_every-th epoch and the last
                       "every": config.validation_every,
                       "validated_epochs": [e for e, _ in validating[0].validated],
                       "history": [v for _, v in validating[0].validated],
                       "final": validating[0].figures(),  # the weights the run ends with
                       "best_epoch": validating[0].best and validating[0].best["epoch"],
                       "best_val_accuracy": validating[0].best and validating[0].best["val_accuracy"],
                       "restored_best": config.restore_best_validation})
    _save_artefacts(config, encoder, features, database, metrics)
    if config.verbose and metrics["test_accuracy"] is None:
        print(f"No test images (every image trains); written to {config.model_dir}")
    elif config.verbose:
        print(f"Test accuracy {metrics['test_accuracy']:.4f} ({config.method}, {len(test_idx)} images); "
              f"written to {config.model_dir}")
    return metrics


def _no_history():
    """The ``History`` of a run that had nothing left to train."""
    history = keras.callbacks.History()
    history.epoch = []
    return history


def evaluate(config, encoder, features, train_data, test_data):
    """Test accuracy: reference database (SCL-AMP, section IV.A) or softmax (CE baseline).

    Returns the metrics dict and the reference database of the training images (for CE it is
    built on the pooled backbone features). For both methods the accuracy of a reference
    database on the pooled backbone features (before the projection head) is an extra figure.
    Without test images (``--train_fraction=1``) the accuracies are None.
    """
    labels = test_data.labels

    def database_and_predictions(model):
        predictions, _, database = evaluation.reference_predictions(
            embed(model, train_data.images, tta=config.tta), train_data.labels,
            embed(model, test_data.images, tta=config.tta), train_data.class_names)
        return database, predictions

    feature_database, feature_predictions = database_and_predictions(features)
    if config.method != "ce":
        database, predictions = database_and_predictions(encoder)
    else:
        database, predictions = feature_database, np.argmax(
            embed(encoder, test_data.images, tta=config.tta, average="raw"), axis=1)
    summary = evaluation.summarize(labels, predictions, test_data.class_names)
    return {
        "method": config.method,
        "test_accuracy": summary["accuracy"],
        "per_class_accuracy": summary["per_class_accuracy"],
        "confusion_matrix": summary["confusion_matrix"],
        "num_train": int(len(train_data.labels)),
        "num_test": int(len(labels)),
        "class_names": list(test_data.class_names),
        "reference_db_accuracy_on_features": evaluation.summarize(
            labels, feature_predictions, test_data.class_names)["accuracy"],
    }, database


def _save_artefacts(config, encoder, features, database, metrics):
    model_dir = config.model_dir
    atomic_write(os.path.join(model_dir, run_folder.ENCODER), encoder.save)
    # the ResNet inside (after the preprocessing layer)
    atomic_write(os.path.join(model_dir, BACKBONE_WEIGHTS), features.get_layer(config.backbone).save_weights)
    database.save(os.path.join(model_dir, run_folder.REFERENCE_DB))
    if metrics["test_accuracy"] is not None:
        with tf.summary.create_file_writer(os.path.join(model_dir, run_folder.LOGS, "test")).as_default():
            tf.summary.scalar("test_accuracy", metrics["test_accuracy"], step=metrics["epochs"])
    write_json(os.path.join(model_dir, run_folder.METRICS), metrics)
