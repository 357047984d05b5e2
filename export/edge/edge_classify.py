"""Classify images on an edge device with an exported LiteRT model and its reference database.

Needs LiteRT, NumPy and Pillow only (no TensorFlow, no scl_amp_tf)::

    pip install ai-edge-litert numpy pillow
    python edge_classify.py --bundle=BUNDLE --images=DIR|FILE [--variant=int8] [--output=predictions.csv]

``BUNDLE`` is the ``assets.extra`` folder of an exported version (``EXPORT/<model>/<version>/
assets.extra``, written by ``python -m scl_amp_tf.export``); this script is copied there too.
It holds ``scl_amp_tf.json`` (image size, channels, class names, the .tflite file of each
variant), ``reference_db.npz`` (one prototype per class, section IV.A of the paper) and the
``model_<variant>.tflite`` files, which map ``[N, S, S, C]`` pixel values to embeddings
(L2-normalised by fp32 and fp16; this runner normalises every variant's output). A query's score
for a class is the dot product with the class prototype: its mean cosine similarity to that
class's references, or the cosine to their mean direction when the export stored unit-length
prototypes (``scl_amp_tf.json``: ``prototypes``); the prediction is the best-scoring class, or
``unknown`` when the export set a reject threshold (``scl_amp_tf.json``: ``reject_threshold``) and
the best score is below it.

Images are converted to the model's channels and resized to ``S x S`` with Pillow's bilinear
filter, which antialiases when it shrinks, like the ``tf.image.resize(antialias=True)`` of
training (the two agree to one gray level). An image that cannot be read, or has more than
``MAX_IMAGE_PIXELS`` pixels (checked from its header, before decoding), is named on stderr and
skipped; the others are classified, and the exit code is 1. The .tflite file must be the one the
bundle's JSON describes (its SHA-256): a model file of another export is refused.

Its flags are argparse's, not absl's like every ``python -m scl_amp_tf.*`` command: this file is
copied alone onto a device that installs only the three packages above (same flag names).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile

import numpy as np
from PIL import Image

METADATA_FILE = "scl_amp_tf.json"
REFERENCE_DB_FILE = "reference_db.npz"
UNKNOWN_NAME = "unknown"  # class name of an image under the export's reject threshold (class id -1)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_IMAGE_PIXELS = 50_000_000  # as scl_amp_tf.data.MAX_IMAGE_PIXELS (a test keeps them equal)


def sha256_of(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_metadata(bundle):
    path = os.path.join(bundle, METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --bundle must be the assets.extra folder of an exported "
                                "version (EXPORT/<model>/<version>/assets.extra).")
    with open(path) as f:
        return json.load(f)


def load_reference_db(path):
    """``(prototypes [K, d] float32, class names)`` from a ``reference_db.npz``."""
    with np.load(path) as f:
        return f["prototypes"].astype(np.float32), json.loads(str(f["class_names"]))


def load_image(path, image_size, channels):
    """An image file -> uint8 ``[S, S, C]``, as the model expects it."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{image.width * image.height:,} pixels, above the limit of {MAX_IMAGE_PIXELS:,}")
            if image.mode.startswith("I"):  # 16- or 32-bit gray: keep the high byte, as TensorFlow's decoder does
                bits = 16 if image.mode.startswith("I;16") else 32
                image = Image.fromarray((np.asarray(image, np.uint32) >> (bits - 8)).astype(np.uint8))
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(image, np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot read image {path}: {e}") from None
    return array[..., None] if array.ndim == 2 else array


class EdgeClassifier:
    """A LiteRT model (one variant: fp32, fp16, int8 or int16x8) plus the reference database."""

    def __init__(self, bundle, variant="fp32", num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.metadata = load_metadata(bundle)
        files = self.metadata.get("tflite", {})
        if variant not in files:
            raise ValueError(f"No {variant!r} model in {bundle}; this export has: {', '.join(files) or 'none'}.")
        self.variant = variant
        self.image_size = int(self.metadata["image_size"])
        self.channels = int(self.metadata["channels"])
        self.prototypes, self.class_names = load_reference_db(os.path.join(bundle, REFERENCE_DB_FILE))
        self.reject_threshold = self.metadata.get("reject_threshold")  # None: every image gets a class
        self.tta = self.metadata.get("tta", "none")  # dihedral: the mean over the 8 rotations and flips
        if self.tta not in ("none", "dihedral"):
            raise ValueError(f"{METADATA_FILE} asks for test-time augmentation {self.tta!r}, which this runner "
                             "does not know: a runner of another version? Copy the bundle of one version whole.")
        model_path = os.path.join(bundle, files[variant]["file"])
        expected = files[variant].get("sha256")
        if expected is not None and sha256_of(model_path) != expected:
            raise ValueError(f"{model_path} is not the model that {METADATA_FILE} describes (its SHA-256 differs): "
                             "a file of another export? Copy the bundle of one version whole.")
        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        shape, width = tuple(self._input["shape"][1:]), self._output["shape"][-1]
        if shape != (self.image_size, self.image_size, self.channels) or width != self.prototypes.shape[1]:
            raise ValueError(f"{model_path} maps {shape} to {width}-d embeddings, but {METADATA_FILE} and "
                             f"{REFERENCE_DB_FILE} describe {(self.image_size, self.image_size, self.channels)} "
                             f"and {self.prototypes.shape[1]}-d: not the same model.")
        self._batch = None

    def _quantize(self, images):
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)

    def embed(self, images):
        """uint8 images ``[N, S, S, C]`` -> L2-normalised embeddings ``[N, d]`` (float32); with the
        export's ``tta`` ``dihedral``, the normalised mean of the normalised embeddings of each
        image's 8 rotations and flips (as ``scl_amp_tf.invariance`` defines them)."""
        images = np.asarray(images)
        expected = (self.image_size, self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
            raise ValueError(f"Expected a non-empty batch of images [N, {', '.join(map(str, expected))}], "
                             f"got shape {images.shape}.")
        if self.tta == "none":
            return self._embed_view(images)
        total = sum(self._embed_view(dihedral_view(images, index)) for index in range(8))
        return total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)

    def _embed_view(self, images):
        expected = images.shape[1:]
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(self._input["index"], [len(images), *expected])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self._input["index"], self._quantize(images))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"]).astype(np.float32)
        if self._output["dtype"] != np.float32:
            scale, zero_point = self._output["quantization"]
            out = (out - zero_point) * scale
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def scores(self, images):
        """``[N, K]`` the dot product of each image's embedding with each class prototype (module docstring)."""
        return self.embed(images) @ self.prototypes.T

    def classify(self, images):
        """``(class ids [N], class names [N], scores [N, K])``; with the export's reject threshold,
        an image whose best score is below it is ``-1`` / ``"unknown"``."""
        scores = self.scores(images)
        ids = np.argmax(scores, axis=1)
        if self.reject_threshold is not None:
            ids = np.where(scores.max(axis=1) < self.reject_threshold, -1, ids)
        return ids, [self.class_names[i] if i >= 0 else UNKNOWN_NAME for i in ids], scores


def dihedral_view(images, index):
    """Transform ``index`` (0..7) of square images ``[N, S, S, C]``: ``index // 2`` quarter turns
    counter-clockwise, mirrored left-right for an odd index (``scl_amp_tf.invariance``'s order)."""
    turned = np.rot90(images, index // 2, axes=(1, 2))
    return np.ascontiguousarray(turned[:, :, ::-1] if index % 2 else turned)


def image_files(path):
    """``path`` if it is a file, else every image file under the folder (any depth), sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--images={path}: no such file or directory.")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                   if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))
    if not files:
        raise FileNotFoundError(f"--images={path} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def classify_folder(classifier, folder, batch_size=32):
    """``(rows, skipped)``: rows ``(file, class name, score)`` for every readable image under
    ``folder`` (or the one file), and ``{file: reason}`` for those that could not be read."""
    if batch_size < 1:
        raise ValueError(f"--batch_size={batch_size} must be at least 1.")
    rows, skipped = [], {}
    files = image_files(folder)
    for start in range(0, len(files), batch_size):
        chunk, images = [], []
        for f in files[start:start + batch_size]:
            try:
                images.append(load_image(f, classifier.image_size, classifier.channels))
                chunk.append(f)
            except ValueError as e:
                skipped[f] = str(e)
        if not chunk:
            continue
        ids, names, scores = classifier.classify(np.stack(images))
        rows.extend((f, n, float(s.max())) for f, n, s in zip(chunk, names, scores))
    return rows, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=os.path.dirname(os.path.abspath(__file__)),
                        help="The assets.extra folder of an exported version (default: this script's folder).")
    parser.add_argument("--images", required=True, help="An image file or a folder of images (searched recursively).")
    parser.add_argument("--variant", default="fp32", choices=("fp32", "fp16", "int8", "int16x8"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--output", help="Write the predictions to this CSV file (default: standard output).")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size={args.batch_size} must be at least 1.")
    if args.num_threads is not None and args.num_threads < 1:
        parser.error(f"--num_threads={args.num_threads} must be at least 1.")
    try:
        classifier = EdgeClassifier(args.bundle, args.variant, args.num_threads)
        rows, skipped = classify_folder(classifier, args.images, args.batch_size)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "class", "score"])
    writer.writerows((f, n, f"{s:.6f}") for f, n, s in rows)
    if args.output:  # written whole, then renamed: never a half-written file
        directory = os.path.dirname(os.path.abspath(args.output))
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".csv", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text.getvalue())
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's mode
            os.replace(tmp, args.output)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        sys.stdout.write(text.getvalue())
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
