"""Command line: train SCL-AMP (or the CE baseline) and evaluate it on the test split.

    python -m scl_amp_tf.train --flagfile=configs/demo.cfg
    python -m scl_amp_tf.train --flagfile=configs/neu.cfg --manual_dir=/data/NEU-CLS
    python -m scl_amp_tf.train --dataset=folder:/data/my_defects --shots_per_class=20 \
        --model_dir=runs/mine

Rerunning the same command resumes an interrupted run (``scl_amp_tf.checkpoints``). Every
hyper-parameter of the paper's Table I is a flag; see ``--helpfull``.
"""
from __future__ import annotations

import sys

from absl import app, flags

from scl_amp_tf import command_flags
from scl_amp_tf.augmentation import ROTATIONS
from scl_amp_tf.distribute import PRECISIONS, STRATEGIES
from scl_amp_tf.invariance import TTA
from scl_amp_tf.train_config import TrainConfig

_DEFAULTS = TrainConfig(model_dir="")

flags.DEFINE_string("model_dir", None, "Directory for checkpoints, logs, the encoder and metrics.json.")
flags.DEFINE_string("dataset", _DEFAULTS.dataset,
                    "neu | mixed_wm38 | synthetic_wafers (SYNTHETIC demo data) | folder:/path/to/root "
                    "(one sub-folder of images per class).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None,
                    "Folder holding the manually downloaded files of neu / mixed_wm38 "
                    "(default <data_dir>/downloads/manual).")
flags.DEFINE_integer("synthetic_per_class", _DEFAULTS.synthetic_per_class,
                     "Maps per class generated for --dataset=synthetic_wafers.")
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Images are resized to this square size.")
flags.DEFINE_integer("shots_per_class", None, "k labelled training images per class; the rest is the test set.")
flags.DEFINE_float("train_fraction", None, "Stratified fraction of each class used for training (e.g. 0.8; "
                   "1 trains on every image and leaves no test set).")
flags.DEFINE_float("test_fraction", None,
                   "With --shots_per_class: hold out this stratified fraction of each class as the test set "
                   "first; the k training images come from the rest.")
flags.DEFINE_string("classes", None, "Train on these classes only (comma-separated names), e.g. In,Pa,RS.")
flags.DEFINE_string("unlabeled_data", None,
                    "Images without labels for L_con only (SCL-AMP), or for --pseudo_labels_from to label: rest "
                    "(the dataset's images that are neither training nor test images; needs --test_fraction) or "
                    "folder:/path (every image under it).")
flags.DEFINE_integer("unlabeled_batch_size", None,
                     "Unlabeled images added to each batch (default --batch_size).")
flags.DEFINE_string("pseudo_labels_from", None,
                    "A finished scl_amp or ce run on the same data and test images (the teacher): it labels the "
                    "images of --unlabeled_data, and its most confident ones train this run as labelled images "
                    "(self-training) instead of feeding L_con.")
flags.DEFINE_float("pseudo_label_ratio", _DEFAULTS.pseudo_label_ratio,
                   "With --pseudo_labels_from: each class takes up to this many times its labelled count of "
                   "pool images, those the teacher gives it with the largest margin over the runner-up class.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the split, the initialisation and the augmentations.")
flags.DEFINE_enum("method", _DEFAULTS.method, ["scl_amp", "ce", "contrastive"],
                  "scl_amp: the paper's method; ce: the ResNet + softmax cross-entropy baseline; contrastive: "
                  "pre-training with L_con alone on the training images without their labels plus "
                  "--unlabeled_data (start a few-shot run from it with --init_from).")
flags.DEFINE_enum("backbone", _DEFAULTS.backbone, ["resnet50", "resnet18", "resnet_tiny"], "Backbone network.")
flags.DEFINE_enum("stem", _DEFAULTS.stem, ["imagenet", "small_pool", "small", "auto"],
                  "First layers of resnet18 / resnet_tiny: imagenet (7x7 stride 2 and max pooling: the first "
                  "block sees 1/4 of the resolution), small_pool (3x3 stride 1 and max pooling: 1/2), small "
                  "(3x3 stride 1: every pixel; He et al.'s CIFAR stem), auto (imagenet from 96 px up, else "
                  "small_pool). The smaller stems cost more compute.")
flags.DEFINE_string("backbone_weights", _DEFAULTS.backbone_weights,
                    "none | imagenet (resnet50, Keras download) | path to a weights file.")
flags.DEFINE_string("init_from", None,
                    "A finished run's folder (e.g. a --method=contrastive pre-training): the backbone starts "
                    "from its weights (MODEL_DIR/backbone.weights.h5; the same file works as --backbone_weights).")
flags.DEFINE_float("bn_momentum", _DEFAULTS.bn_momentum, "Momentum of every batch-norm moving average.")
flags.DEFINE_bool("bn_recalibration", _DEFAULTS.bn_recalibration,
                  "After training, set batch-norm statistics to those of (up to 256) training images.")
flags.DEFINE_integer("embedding_dim", _DEFAULTS.embedding_dim, "Embedding size d (Table I: 128).")
flags.DEFINE_integer("projection_dim", _DEFAULTS.projection_dim, "Hidden width of the MLP projection head.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size N (Table I: 32).")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs (Table I: 100).")
flags.DEFINE_integer("steps", None,
                     "Train for about this many optimizer steps instead of --epochs (epochs = ceil(steps / steps "
                     "per epoch)): the same work for 100 images as for 10,000.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Learning rate (Table I: 5e-4 with Adam).")
flags.DEFINE_enum("lr_schedule", _DEFAULTS.lr_schedule, ["constant", "cosine"],
                  "constant: the learning rate of Table I at every step; cosine: linear warm-up over "
                  "--warmup_fraction of the steps, then a half-cosine decay to 0 at the last step.")
flags.DEFINE_float("warmup_fraction", _DEFAULTS.warmup_fraction,
                   "With --lr_schedule=cosine: the fraction of the run's steps that warm the rate up from 0.")
flags.DEFINE_enum("optimizer", _DEFAULTS.optimizer, ["adam", "sgd"], "Optimizer (Table I: adam).")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay,
                   "Decoupled weight decay (AdamW, SGDW; beyond the paper): each step every weight matrix and "
                   "convolution kernel shrinks by learning rate x this (biases and batch norm's scales and "
                   "offsets do not); 0: none, as in Table I.")
flags.DEFINE_float("temperature", _DEFAULTS.temperature, "Temperature tau of L_con, Eq. 1 (Table I: 0.5).")
flags.DEFINE_float("margin", _DEFAULTS.margin, "Angular margin m of L_arc, Eq. 4 (Table I: 0.5).")
flags.DEFINE_float("arc_scale", _DEFAULTS.arc_scale, "Scale s of L_arc, Eq. 4.")
flags.DEFINE_float("alpha", _DEFAULTS.alpha, "Weight of L_con in Eq. 5 (paper: 0.75).")
flags.DEFINE_float("beta", _DEFAULTS.beta, "Weight of L_arc in Eq. 5 (paper: 0.25).")
flags.DEFINE_bool("symmetric", _DEFAULTS.symmetric, "Both directions of each pair in L_con, as in SimCLR.")
flags.DEFINE_bool("arc_on_views", _DEFAULTS.arc_on_views,
                  "Apply L_arc to the two augmented views too (the paper: the original image only).")
flags.DEFINE_bool("class_aware_negatives", _DEFAULTS.class_aware_negatives,
                  "L_con leaves the other images of an anchor's class out of its negatives (our extension; "
                  "the paper's Eq. 1 counts them as negatives).")
flags.DEFINE_string("crop_scale_min", str(_DEFAULTS.crop_scale_min),
                    "Smallest random-crop area, as a fraction (section IV.A: 0.25), or auto: 0.8 when the training "
                    "images share a fixed frame (wafer maps, aligned parts: where a pattern sits matters), else 0.25.")
flags.DEFINE_enum("rotations", _DEFAULTS.rotations, [*ROTATIONS, "auto"],
                  "The views' turns: quarter (section IV.A: 0, 90, 180 or 270 degrees), half (0 or 180: with "
                  "the flips a view keeps the image's horizontal and vertical axes), or auto: half when each "
                  "class's training images share an orientation (streaks along a rolling direction), else quarter.")
flags.DEFINE_float("validation_fraction", None,
                   "Hold out this stratified fraction of each class's training images (at least one each) "
                   "from fitting; their accuracy after every epoch (--validation_every) is val_accuracy in the "
                   "progress line and TensorBoard. After training they join the reference database.")
flags.DEFINE_bool("restore_best_validation", _DEFAULTS.restore_best_validation,
                  "End the run with the weights of its best val_accuracy epoch (needs --validation_fraction).")
flags.DEFINE_integer("validation_every", _DEFAULTS.validation_every,
                     "Validate after every N-th epoch and after the last (--validation_fraction): with a few "
                     "images an epoch is a step or two, and validating each of thousands of epochs costs "
                     "more than training them. --restore_best_validation picks among the validated epochs.")
flags.DEFINE_enum("tta", _DEFAULTS.tta, list(TTA),
                  "Test-time augmentation: dihedral embeds every image (references and queries) as the mean "
                  "of its 8 rotations and flips (8x the inference cost; ours, beyond the paper); none: one view.")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, list(STRATEGIES),
                  "tf.distribute strategy: auto (mirrored when several GPUs are visible, else the default "
                  "one-device strategy), one_device, mirrored (all local GPUs), multi_worker "
                  "(MultiWorkerMirroredStrategy over the machines of TF_CONFIG), tpu.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu (default: the one the environment gives).")
flags.DEFINE_enum("mixed_precision", _DEFAULTS.mixed_precision, list(PRECISIONS),
                  "Keras dtype policy of the network; losses, embeddings and logits stay float32.")
flags.DEFINE_bool("jit_compile", _DEFAULTS.jit_compile,
                  "Compile the training step with XLA (faster on GPUs; 5-9x slower on a small CPU).")
flags.DEFINE_bool("fused_batchnorm", _DEFAULTS.fused_batchnorm,
                  "Train batch normalisation with TensorFlow's fused kernel: the same computation as Keras's "
                  "layer (up to float round-off) in less time (BENCHMARKS.md, Fused batch normalisation). "
                  "--nofused_batchnorm uses Keras's layer, as the runs made before 2026-12-05 did.")
flags.DEFINE_string("profile_batches", None,
                    "Record a TensorFlow profiler trace of these training steps of the first epoch (N or "
                    "FIRST,LAST, e.g. 10,20) in MODEL_DIR/logs/train: TensorBoard's Profile tab (pip install "
                    "tensorboard-plugin-profile) shows whether a step waits on input or on compute.")
flags.DEFINE_integer("max_image_pixels", _DEFAULTS.max_image_pixels,
                     "Image files with more pixels (width x height, read from the header) are refused before "
                     "decoding, naming the file: a guard against decompression bombs.")
flags.DEFINE_float("checkpoint_seconds", _DEFAULTS.checkpoint_seconds,
                   "Write the checkpoint that resumes a killed run at the end of an epoch once this many seconds "
                   "have passed since the last one (and always after the last epoch): a kill loses at most this "
                   "much training, and many short epochs (few images, a step budget) do not wait on the disk. "
                   "0: after every epoch. The resumed run computes the same as an uninterrupted one.")
flags.DEFINE_integer("verbose", _DEFAULTS.verbose,
                     "0 silent, 1 progress bar (one line per epoch when the output is not a terminal, e.g. a "
                     "log file), 2 one line per epoch.")
flags.mark_flag_as_required("model_dir")

FLAGS = flags.FLAGS


def config_from_flags() -> TrainConfig:
    names = TrainConfig.__dataclass_fields__
    values = {name: FLAGS[name].value for name in names}
    if values["crop_scale_min"] != "auto":
        try:
            values["crop_scale_min"] = float(values["crop_scale_min"])
        except ValueError:
            raise app.UsageError(f"--crop_scale_min={values['crop_scale_min']!r} must be auto or a number") from None
    if values["verbose"] == 1 and not sys.stdout.isatty():  # a progress bar in a log file is noise
        values["verbose"] = 2
    return TrainConfig(**values)


def main(argv):
    command_flags.begin(argv, quiet_logging=False)
    from scl_amp_tf import training  # after flag parsing: TensorFlow loads here

    try:
        training.train_and_evaluate(config_from_flags())
    except ValueError as e:  # bad flag values and data problems (DataError is a ValueError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
