"""Classify image files with a trained run or an exported model (``python -m scl_amp_tf.predict``).

Two sources answer alike (a test checks they do):

* a **run folder** (``--model_dir``): its ``encoder.keras``; SCL-AMP classifies by the reference
  database of its training images (section IV.A: the class of highest mean cosine similarity),
  CE by its softmax. Images are decoded, converted and resized exactly as training read them
  (:func:`scl_amp_tf.data.read_image`, :func:`scl_amp_tf.data.resize_images`);
* an **export** (``--export_dir``): the newest (or a named) version's SavedModel, through its
  ``classify_bytes`` signature, i.e. what TF Serving answers, enrolled classes and the export's
  reject threshold included.

Every file is read on its own: one that cannot be read, is not an image, or is larger than
:data:`scl_amp_tf.data.MAX_IMAGE_PIXELS` is reported by name and skipped; the others are still
classified.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from scl_amp_tf import data as data_lib
from scl_amp_tf import evaluation, open_set
from scl_amp_tf.reference import ReferenceDatabase

UNKNOWN_NAME = "unknown"  # the class of a rejected image, as the export names it



@dataclasses.dataclass
class Prediction:
    """One classified file: the best class and the runner-up with their scores (mean cosine
    similarity for reference databases, softmax probability for CE); ``class_name`` is
    ``unknown`` when the best score is under the reject threshold."""

    file: str
    class_name: str
    score: float
    second_class: str
    second_score: float


class RunPredictor:
    """A finished training run's encoder and its reference database (or softmax, for CE), scored
    under the ``prototypes`` rule (:data:`scl_amp_tf.reference.PROTOTYPE_RULES`)."""

    def __init__(self, model_dir, reject_threshold=None, reject_quantile=open_set.DEFAULT_REJECT_QUANTILE,
                 prototypes="mean"):
        import keras

        from scl_amp_tf import inference, run_folder

        paths = {name: os.path.join(model_dir, name)
                 for name in (run_folder.CONFIG, run_folder.ENCODER, run_folder.REFERENCE_DB)}
        self.settings = run_folder.load_settings(model_dir, tuple(paths))
        self.encoder = keras.models.load_model(paths[run_folder.ENCODER])
        self.method = self.settings["method"]
        self.prototypes = prototypes
        self.database = ReferenceDatabase.load(paths[run_folder.REFERENCE_DB]).with_rule(prototypes)
        self.class_names = list(self.database.class_names)
        _, self.image_size, _, self.channels = self.encoder.input_shape
        if reject_threshold is not None and self.method == "ce":
            raise ValueError("--reject_threshold needs a reference database: a CE run classifies by its softmax.")
        if prototypes != "mean" and self.method == "ce":
            raise ValueError(f"--prototypes={prototypes} needs a reference database: a CE run classifies by its "
                             "softmax.")
        self.tta = run_folder.tta_of(self.settings)
        self._embed = inference.embed
        if reject_threshold == "auto":
            _, train_data, _ = run_folder.load_run(model_dir)
            reject_threshold = run_folder.auto_reject_threshold(model_dir, self._outputs(train_data.images),
                                                              train_data.labels, reject_quantile, prototypes)
        self.reject_threshold = reject_threshold

    def _outputs(self, images):
        """The encoder's embeddings (SCL-AMP) or logits (CE) of uint8 images, with the run's ``--tta``."""
        return self._embed(self.encoder, images, tta=self.tta, average="raw" if self.method == "ce" else "unit")

    def use_references(self, images, labels):
        """Replaces the run's reference database by one of these uint8 images (class ids into
        :attr:`class_names`) on the run's embeddings: e.g. without images another run holds out.
        A CE run classifies by its softmax, which has no references to replace."""
        if self.method == "ce":
            raise ValueError("a CE run classifies by its softmax: it has no reference database to replace.")
        self.database = ReferenceDatabase.from_embeddings(self._outputs(images), labels,
                                                          self.class_names).with_rule(self.prototypes)

    def scores(self, images):
        """Class scores ``[N, K]`` of uint8 images at the run's size: the mean cosine similarity to
        each class's references (or, ``normalised``, to their mean direction; SCL-AMP), or the
        softmax of the classifier's logits (CE)."""
        outputs = self._outputs(images)
        if self.method != "ce":
            return self.database.scores(outputs)
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))  # the classifier outputs logits
        return shifted / shifted.sum(axis=1, keepdims=True)

    def classify(self, paths):
        """``(scores [N, K], class names [N], kept paths, failures {path: reason})`` for image files."""
        images, kept, failures = [], [], {}
        for path in paths:
            try:
                image = data_lib.to_channels(data_lib.read_image(path), self.channels)
                images.append(data_lib.resize_images(image[None],
                                                     self.image_size)[0])
                kept.append(path)
            except data_lib.DataError as e:
                failures[path] = str(e)
        if not kept:
            return np.zeros((0, len(self.class_names)), np.float32), [], kept, failures
        scores = self.scores(np.stack(images))
        best = evaluation.decide(scores, self.reject_threshold)
        names = [UNKNOWN_NAME if i == evaluation.UNKNOWN else self.class_names[i] for i in best]
        return scores, names, kept, failures


class ExportPredictor:
    """An exported version's SavedModel, through ``classify_bytes`` (as TF Serving answers)."""

    def __init__(self, export_dir, model_name=None, version=None):
        import tensorflow as tf

        from scl_amp_tf import export_versions

        root = export_versions.find_model_root(export_dir, model_name)
        version = version if version is not None else export_versions.versions(root)[-1]
        path = os.path.join(root, str(version))
        if not os.path.isdir(path):
            published = ", ".join(map(str, export_versions.versions(root)))
            raise ValueError(f"{root} has no version {version} (it has {published}).")
        self.version_dir = path
        self._classify_bytes = tf.saved_model.load(path).signatures["classify_bytes"]
        with open(os.path.join(path, export_versions.EXTRA, export_versions.METADATA_FILE)) as f:
            self.metadata = json.load(f)
        self.class_names = list(self.metadata["class_names"])
        self._tf = tf

    def classify(self, paths):
        """``(scores [N, K], class names [N], kept paths, failures {path: reason})``: the export
        decides the names (its reject threshold and enrolled classes included)."""
        tf = self._tf
        encoded, kept, failures = [], [], {}
        for path in paths:
            try:
                data_lib.read_image(path)  # the same checks as training: readable, an image, not too large
                encoded.append(tf.io.read_file(path))
                kept.append(path)
            except data_lib.DataError as e:
                failures[path] = str(e)
        if not kept:
            return np.zeros((0, len(self.class_names)), np.float32), [], kept, failures
        out = self._classify_bytes(image_bytes=tf.stack(encoded))
        return out["scores"].numpy(), [n.decode() for n in out["class_name"].numpy()], kept, failures


def predict(predictor, paths, batch_size=64, progress=None):
    """``(predictions, failures)`` for image files, ``batch_size`` files at a time.

    ``progress``: called with the number of files done after each batch (e.g. a progress bar).
    """
    predictions, failures = [], {}
    for start in range(0, len(paths), batch_size):
        scores, names, kept, failed = predictor.classify(paths[start:start + batch_size])
        failures.update(failed)
        order = np.argsort(-scores, axis=1)
        for i, path in enumerate(kept):
            second = order[i, 1] if scores.shape[1] > 1 else order[i, 0]
            predictions.append(Prediction(path, names[i], float(scores[i, order[i, 0]]),
                                          predictor.class_names[second], float(scores[i, second])))
        if progress is not None:
            progress(min(start + batch_size, len(paths)))
    return predictions, failures


def write_csv(predictions, out):
    """One row per file: file, class, score, second_class, second_score. ``out``: a path (written
    atomically) or an open text file (e.g. ``sys.stdout``)."""
    import csv

    from scl_amp_tf.files import atomic_write

    def rows(f):
        writer = csv.writer(f)
        writer.writerow(["file", "class", "score", "second_class", "second_score"])
        for p in predictions:
            writer.writerow([p.file, p.class_name, f"{p.score:.6f}", p.second_class, f"{p.second_score:.6f}"])

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            rows(f)

    if hasattr(out, "write"):
        rows(out)
    else:
        atomic_write(out, write)
