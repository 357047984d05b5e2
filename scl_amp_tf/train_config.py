"""The settings of one run (:class:`TrainConfig`) and how they persist in its model folder.

A run's settings are checked (:meth:`TrainConfig.validate`, naming the flag at fault), saved with
the run (``config.json`` and ``flags.cfg``, see :mod:`scl_amp_tf.run_folder`) and compared when the
run is resumed (:func:`check_model_dir`): settings that change what a run computes must match,
those in ``RESUMABLE_KEYS`` may differ. Kept apart from the trainer (:mod:`scl_amp_tf.training`) so
that the command lines, ``reproduce`` and the benchmarks read and write settings without it, as
tensorflow/models keeps ``official/core/config_definitions.py`` apart from its trainer.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from scl_amp_tf import augmentation
from scl_amp_tf import data as data_lib
from scl_amp_tf import distribute
from scl_amp_tf import invariance
from scl_amp_tf import models
from scl_amp_tf import pseudo_labels
from scl_amp_tf import run_folder
from scl_amp_tf import schedules

# contrastive: L_con (Eq. 1-2) alone, without labels: pre-training on unlabeled images for --init_from.
METHODS = ("scl_amp", "ce", "contrastive")
# Table I: Adam. Plain SGD is there for exact comparisons: Adam scales every step to about the
# learning rate, so float round-off in a near-zero gradient turns into a full-size difference.
OPTIMIZERS = ("adam", "sgd")
# Settings that do not change what a run computes; they may differ when a run is resumed.
# ``epochs`` (or ``steps``) may grow: rerunning a finished run with more epochs continues its training.
# The strategy, XLA and the fused batch normalisation change where and how fast a run computes, not
# what (same global batch, same update, up to float round-off), so a run may be resumed on other
# hardware or code.
# The teacher of --pseudo_labels_from is read once, when the run starts: its choice is saved in the
# model directory (pseudo_labels.npz) and a resume reads that, so the teacher may have moved or gone
# (flags.cfg and metrics.json still name it).
RESUMABLE_KEYS = ("model_dir", "verbose", "data_dir", "manual_dir", "epochs", "steps", "strategy", "tpu", "jit_compile",
                  "profile_batches", "max_image_pixels", "checkpoint_seconds", "pseudo_labels_from",
                  "fused_batchnorm")


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run. Defaults are the paper's Table I where it gives one."""

    model_dir: str
    dataset: str = data_lib.SYNTHETIC
    data_dir: str | None = None
    manual_dir: str | None = None
    synthetic_per_class: int = 100
    image_size: int = 64
    shots_per_class: int | None = None
    train_fraction: float | None = None
    test_fraction: float | None = None
    classes: str | None = None
    unlabeled_data: str | None = None
    unlabeled_batch_size: int | None = None
    pseudo_labels_from: str | None = None
    pseudo_label_ratio: float = pseudo_labels.DEFAULT_RATIO
    max_image_pixels: int = data_lib.MAX_IMAGE_PIXELS
    seed: int = 0
    method: str = "scl_amp"
    backbone: str = "resnet50"
    stem: str = "imagenet"
    backbone_weights: str = "none"
    init_from: str | None = None
    bn_momentum: float = 0.9
    bn_recalibration: bool = False
    embedding_dim: int = 128
    projection_dim: int = 512
    batch_size: int = 32
    epochs: int = 100
    steps: int | None = None
    learning_rate: float = 5e-4
    lr_schedule: str = "constant"
    warmup_fraction: float = 0.0
    optimizer: str = "adam"
    weight_decay: float = 0.0  # decoupled, per step learning rate x weight_decay (training.build_model)
    temperature: float = 0.5
    margin: float = 0.5
    arc_scale: float = 30.0
    alpha: float = 0.75
    beta: float = 0.25
    symmetric: bool = False
    arc_on_views: bool = False
    class_aware_negatives: bool = False
    crop_scale_min: float | str = 0.25  # or "auto": augmentation.auto_crop_scale_min
    rotations: str = "quarter"  # the views' turns: augmentation.ROTATIONS or "auto" (augmentation.auto_rotations)
    validation_fraction: float | None = None
    restore_best_validation: bool = False
    validation_every: int = 1  # epochs between validations (the last epoch is always validated)
    tta: str = "none"  # inference only: invariance.TTA
    strategy: str = "auto"
    tpu: str | None = None
    mixed_precision: str = "float32"
    jit_compile: bool = False
    # Batch normalisation's training pass as one fused TensorFlow kernel (layers.BatchNormalization):
    # the same computation as Keras's layer, faster. Resumable, so not in config.json: metrics.json
    # records the value of the run's last call; runs whose metrics.json lacks it used Keras's layer.
    fused_batchnorm: bool = True
    profile_batches: str | None = None
    verbose: int = 1
    # How often the resume checkpoint is written (at an epoch's end; always after the last epoch).
    checkpoint_seconds: float = 60.0

    def validate(self):
        """Raises ValueError naming the flag for any value outside its range."""
        checks = [
            (self.method in METHODS, f"--method={self.method!r} must be one of {', '.join(METHODS)}"),
            (self.backbone in models.BACKBONES,
             f"--backbone={self.backbone!r} must be one of {', '.join(models.BACKBONES)}"),
            (self.stem in (*models.STEMS, "auto"),
             f"--stem={self.stem!r} must be auto or one of {', '.join(models.STEMS)}"),
            (self.stem in ("imagenet", "auto") or self.backbone != "resnet50",
             f"--stem={self.stem}: resnet50 has the ImageNet stem only; use resnet18 or resnet_tiny"),
            (self.max_image_pixels >= 1, f"--max_image_pixels={self.max_image_pixels} must be at least 1"),
            (self.checkpoint_seconds >= 0, f"--checkpoint_seconds={self.checkpoint_seconds} must be at least 0"),
            (self.image_size >= 32, f"--image_size={self.image_size} must be at least 32"),
            (self.batch_size >= 2, f"--batch_size={self.batch_size} must be at least 2"),
            (self.epochs >= 1, f"--epochs={self.epochs} must be at least 1"),
            (self.steps is None or self.steps >= 1, f"--steps={self.steps} must be at least 1"),
            (self.learning_rate > 0, f"--learning_rate={self.learning_rate} must be positive"),
            (self.lr_schedule in schedules.SCHEDULES,
             f"--lr_schedule={self.lr_schedule!r} must be one of {', '.join(schedules.SCHEDULES)}"),
            (0 <= self.warmup_fraction < 1, f"--warmup_fraction={self.warmup_fraction} must lie in [0, 1)"),
            (self.validation_fraction is None or 0 < self.validation_fraction < 1,
             f"--validation_fraction={self.validation_fraction} must lie in (0, 1)"),
            (not self.restore_best_validation or self.validation_fraction is not None,
             "--restore_best_validation needs a validation split: set --validation_fraction"),
            (self.validation_every >= 1, f"--validation_every={self.validation_every} must be at least 1"),
            (self.optimizer in OPTIMIZERS, f"--optimizer={self.optimizer!r} must be one of {', '.join(OPTIMIZERS)}"),
            (self.weight_decay == 0 or 0 < self.weight_decay < 1 / self.learning_rate,
             f"--weight_decay={self.weight_decay} must be at least 0 and under 1 / --learning_rate (a step "
             "multiplies each kernel by 1 - learning rate x weight decay)"),
            (0 < self.temperature <= 1, f"--temperature={self.temperature} must lie in (0, 1] (section III.A)"),
            (0 <= self.margin < np.pi / 2, f"--margin={self.margin} must lie in [0, pi/2)"),
            (self.arc_scale > 0, f"--arc_scale={self.arc_scale} must be positive"),
            (self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta > 0,
             f"--alpha={self.alpha} and --beta={self.beta} must be non-negative, not both zero"),
            (self.embedding_dim >= 2, f"--embedding_dim={self.embedding_dim} must be at least 2"),
            (0 <= self.bn_momentum < 1, f"--bn_momentum={self.bn_momentum} must lie in [0, 1)"),
            (self.crop_scale_min == "auto" or (not isinstance(self.crop_scale_min, str)
                                                and 0 < self.crop_scale_min <= 1),
             f"--crop_scale_min={self.crop_scale_min} must be auto or lie in (0, 1]"),
            (self.rotations in (*augmentation.ROTATIONS, "auto"),
             f"--rotations={self.rotations!r} must be auto or one of {', '.join(augmentation.ROTATIONS)}"),
            (self.tta in invariance.TTA, f"--tta={self.tta!r} must be one of {', '.join(invariance.TTA)}"),
            (self.synthetic_per_class >= 2, f"--synthetic_per_class={self.synthetic_per_class} must be >= 2"),
            (self.strategy in distribute.STRATEGIES,
             f"--strategy={self.strategy!r} must be one of {', '.join(distribute.STRATEGIES)}"),
            (self.mixed_precision in distribute.PRECISIONS,
             f"--mixed_precision={self.mixed_precision!r} must be one of {', '.join(distribute.PRECISIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if (self.shots_per_class is None) == (self.train_fraction is None):
            raise ValueError("Give exactly one of --shots_per_class and --train_fraction.")
        if self.test_fraction is not None and self.shots_per_class is None:
            raise ValueError("--test_fraction goes with --shots_per_class.")
        if self.init_from is not None and self.backbone_weights not in ("none", None):
            raise ValueError("Give one of --init_from and --backbone_weights: both set the backbone's first weights.")
        if self.pseudo_labels_from is not None:
            if self.unlabeled_data is None:
                raise ValueError("--pseudo_labels_from labels the images of --unlabeled_data: give the pool "
                                 "(rest or folder:/path).")
            if self.method == "contrastive":
                raise ValueError("--method=contrastive learns without labels; --pseudo_labels_from gives labels.")
            if not self.pseudo_label_ratio > 0:
                raise ValueError(f"--pseudo_label_ratio={self.pseudo_label_ratio} must be positive.")
        elif self.unlabeled_data is not None:
            if self.method == "ce":
                raise ValueError("--unlabeled_data feeds L_con, which --method=ce does not have (with "
                                 "--pseudo_labels_from, the pool's confidently labelled images train CE too).")
            if self.class_aware_negatives:
                raise ValueError("--class_aware_negatives needs a class for every image; it cannot be "
                                 "combined with --unlabeled_data.")
        if self.method == "contrastive" and self.class_aware_negatives:
            raise ValueError("--method=contrastive learns without labels; --class_aware_negatives needs them.")
        if self.profile_batches is not None:
            self.profiled_steps()
        if self.unlabeled_batch_size is not None and self.unlabeled_batch_size < 2:
            raise ValueError(f"--unlabeled_batch_size={self.unlabeled_batch_size} must be at least 2.")

    def profiled_steps(self):
        """``--profile_batches`` as Keras's TensorBoard ``profile_batch``: ``(first, last)`` step."""
        parts = str(self.profile_batches).split(",")
        try:
            first, last = int(parts[0]), int(parts[-1])
        except ValueError:
            first = last = 0
        if len(parts) > 2 or not 1 <= first <= last:
            raise ValueError(f"--profile_batches={self.profile_batches!r} must be a step N or a range "
                             "FIRST,LAST of steps (1 <= FIRST <= LAST), e.g. 10,20.")
        return first, last

    def as_flags(self) -> str:
        """The run as an absl flag file: ``python -m scl_amp_tf.train --flagfile=DIR/flags.cfg``."""
        lines = []
        for key, value in dataclasses.asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"--{key}" if value else f"--no{key}")
            else:
                lines.append(f"--{key}={value}")
        return "\n".join(lines) + "\n"

    def stem_used(self, image_size):
        """``--stem``, with ``auto`` resolved for this image size (:func:`models.auto_stem`)."""
        return models.auto_stem(image_size, self.backbone) if self.stem == "auto" else self.stem

    def loss_settings(self):
        """The keyword arguments of :class:`scl_amp_tf.models.SclAmpModel`: tau (Eq. 1-2), m and s
        (Eq. 4), alpha and beta (Eq. 5) and the variants; ``--method=contrastive`` has no labels,
        so L_con alone (alpha 1, beta 0)."""
        contrastive_only = self.method == "contrastive"
        return dict(temperature=self.temperature, margin=self.margin, scale=self.arc_scale,
                    alpha=1.0 if contrastive_only else self.alpha, beta=0.0 if contrastive_only else self.beta,
                    symmetric=self.symmetric, arc_on_views=self.arc_on_views,
                    class_aware_negatives=self.class_aware_negatives)

    def run_settings(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUMABLE_KEYS}


def parse_overrides(items):
    """``["epochs=5", "symmetric=True"]`` -> TrainConfig overrides, checked against its fields (the
    ``--set`` of ``reproduce`` and the benchmarks; values are JSON, True / False, or else strings)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key in ("model_dir", "seed", "method"):
            raise ValueError(f"--set={item!r}: give key=value with a training setting as key "
                             f"(not model_dir, seed or method); settings: {', '.join(sorted(fields))}.")
        if value in ("True", "False"):
            out[key] = value == "True"
        else:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def check_model_dir(config):
    """A model dir holds one run: resuming it with other settings is an error, not a silent mix."""
    path = os.path.join(config.model_dir, run_folder.CONFIG)
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    wanted = config.run_settings()
    # a setting added after the run was made had its default then
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    diff = {k: (saved.get(k, defaults[k]), v) for k, v in wanted.items() if saved.get(k, defaults[k]) != v}
    if diff:
        lines = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"--model_dir={config.model_dir} holds a run with other settings ({lines}). "
                         "Use a new --model_dir, or delete that directory to start over.")
