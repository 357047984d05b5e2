"""Deployment artefacts: a SavedModel for TF Serving with the reference database inside, LiteRT
models for the edge, and enrolment of new defect classes without retraining.

One exported version is one folder, in TF Serving's layout::

    EXPORT/<model_name>/<version>/
      saved_model.pb, variables/   signatures serving_default, classify_bytes, embed
      assets.extra/                the edge bundle (TF Serving ignores this folder)
        scl_amp_tf.json            image size, channels, class names, files, parity figures, history
        reference_db.npz           one prototype per class (section IV.A)
        model_fp32.tflite ...      LiteRT models: pixels [N, S, S, C] -> embedding (L2-normalised,
                                   except int16x8's: the runner normalises every variant's output)
        encoder.keras              the Keras encoder (enrolment builds the next version from it)
        edge_classify.py           the LiteRT runner (needs LiteRT, NumPy and Pillow only)

A version is written into a hidden temporary folder beside the others, reloaded and checked
against the Keras model (every signature and every LiteRT variant), and only then renamed into
place, so TF Serving never sees a half-written or unchecked version.

Classification is the paper's reference-database rule (section IV.A): the score of a class is the
mean cosine similarity of the query's embedding to the class's references, which equals the dot
product with the class prototype (the mean of the normalised references).
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import socket
import tempfile

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import data as data_lib
from scl_amp_tf import evaluation
from scl_amp_tf import files
from scl_amp_tf import models  # noqa: F401  (registers the custom layers that encoder.keras holds)
from scl_amp_tf import quantization
from scl_amp_tf import inference
from scl_amp_tf import run_folder
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.reference import ReferenceDatabase, l2_normalize

SIGNATURES = ("serving_default", "classify_bytes", "embed")
TFLITE_VARIANTS = ("fp32", "fp16", "int8", "int16x8")
TFLITE_DEFAULT = ("fp32", "fp16", "int8")  # what --formats=tflite writes; int16x8 on request
QUANTIZED = ("int8", "int16x8")  # calibrated integer variants: their parity is reported, not enforced
FORMATS = ("saved_model", "tflite", *(f"tflite_{v}" for v in TFLITE_VARIANTS))
EXTRA = "assets.extra"
TMP_PREFIX = ".tmp-"  # a version being written: EXPORT/<model>/.tmp-<version>-<host>-<pid>-<random>
METADATA_FILE = edge_classify.METADATA_FILE
REFERENCE_DB_FILE = edge_classify.REFERENCE_DB_FILE
ENCODER_FILE = "encoder.keras"
MIN_COSINE = 0.999  # float artefacts must agree with Keras to this cosine, and on every top-1 ...
TIE_MARGIN = 1e-3  # ... that is not a tie: where Keras's two best classes differ by less, either answer is right
UNKNOWN_NAME = edge_classify.UNKNOWN_NAME  # class_name of a rejected image (class_id -1)


class ExportError(ValueError):
    """An export or enrolment that cannot be done as asked; the message says why and what to do."""


# --- the SavedModel ---------------------------------------------------------------------------

def preprocess(images, image_size):
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, S, S, C]`` in [0, 1], exactly as in training.

    Training resizes every image once to ``S x S`` (bilinear, antialiased) and rounds it to uint8
    (:func:`scl_amp_tf.data.resize_images`); images already ``S x S`` are left as they are.
    """
    x = tf.cast(images, tf.float32)
    shape = tf.shape(x)
    same_size = tf.logical_and(tf.equal(shape[1], image_size), tf.equal(shape[2], image_size))
    x = tf.cond(same_size, lambda: x, lambda: tf.clip_by_value(
        tf.round(tf.image.resize(x, (image_size, image_size), antialias=True)), 0.0, 255.0))
    x = tf.ensure_shape(x, [None, image_size, image_size, images.shape[-1]])
    return x / 255.0


def to_channels(image, channels):
    """uint8 ``[H, W, c]`` (gray, gray + alpha, RGB or RGBA) -> ``[H, W, channels]``.

    As in training (``data.load_image_folder``): alpha is dropped, gray is replicated to RGB;
    an RGB image sent to a gray model is converted with the ITU-R 601 luma weights, rounded.
    """
    has_color = tf.shape(image)[-1] >= 3
    if channels == 3:
        return tf.cond(has_color, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    def luma():
        gray = tf.image.rgb_to_grayscale(tf.cast(image[..., :3], tf.float32))
        return tf.cast(tf.clip_by_value(tf.round(gray), 0.0, 255.0), tf.uint8)
    return tf.cond(has_color, luma, lambda: image[..., :1])


def header_pixels(encoded):
    """Width x height (int64) read from the header of an encoded PNG, JPEG, GIF or BMP string,
    without decoding it; -1 when it is none of them (or too short to be one)."""
    length = tf.strings.length(encoded)

    def bytes_at(offset, n):
        return tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, offset, n), tf.uint8), tf.int64)

    def big_endian(offset, n):
        b = bytes_at(offset, n)
        return tf.reduce_sum(b * tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * tf.range(n - 1, -1, -1,
                                                                                                  dtype=tf.int64)))

    def little_endian(offset, n):
        b = bytes_at(offset, n)
        return tf.reduce_sum(b * tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * tf.range(n, dtype=tf.int64)))

    def signed32(value):
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))  # a BMP stored top-down has height < 0

    head = tf.strings.substr(encoded, 0, tf.minimum(length, 4))
    png = tf.logical_and(tf.equal(head, b"\x89PNG"), length >= 24)
    jpeg = tf.equal(tf.strings.substr(head, 0, tf.minimum(tf.strings.length(head), 3)), b"\xff\xd8\xff")
    gif = tf.logical_and(tf.equal(head, b"GIF8"), length >= 10)
    bmp = tf.logical_and(tf.equal(tf.strings.substr(head, 0, tf.minimum(tf.strings.length(head), 2)), b"BM"),
                         length >= 26)
    return tf.case([
        (png, lambda: big_endian(16, 4) * big_endian(20, 4)),
        (jpeg, lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64))),
        (gif, lambda: little_endian(6, 2) * little_endian(8, 2)),
        (bmp, lambda: signed32(little_endian(18, 4)) * signed32(little_endian(22, 4))),
    ], default=lambda: tf.constant(-1, tf.int64), exclusive=False)


def decode(image_bytes, image_size, channels):
    """Encoded PNG / JPEG / BMP / GIF strings ``[N]`` -> float32 ``[N, S, S, C]`` in [0, 1].

    Each string is checked before it is decoded, and a bad one is named by its index in the
    batch: it must be one of the four formats and hold at most ``data.MAX_IMAGE_PIXELS`` pixels
    (a small PNG can hold 8000 x 8000 pixels, gigabytes once decoded)."""
    def one(item):
        index, encoded = item
        pixels = header_pixels(encoded)
        checks = [
            tf.debugging.Assert(pixels >= 0, [tf.strings.format(
                "image_bytes[{}] is not a PNG, JPEG, GIF or BMP image", index)]),
            tf.debugging.Assert(pixels <= data_lib.MAX_IMAGE_PIXELS, [tf.strings.format(
                "image_bytes[{}] has {} pixels, above the limit of {}", (index, pixels, data_lib.MAX_IMAGE_PIXELS))]),
        ]
        with tf.control_dependencies(checks):
            image = to_channels(tf.io.decode_image(encoded, expand_animations=False), channels)
        image = tf.ensure_shape(image, [None, None, channels])
        return preprocess(image[None], image_size)[0]
    indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])
    return tf.map_fn(one, (indices, image_bytes),
                     fn_output_signature=tf.TensorSpec([image_size, image_size, channels], tf.float32))


def _non_empty(batch, what):
    return tf.debugging.assert_greater(tf.shape(batch)[0], 0,
                                       message=f"Empty request: send at least one {what}.")


def build_archive(encoder, database: ReferenceDatabase, reject_threshold=None):
    """The serving model: a ``keras.export.ExportArchive`` with the three signatures.

    * ``serving_default``: ``images`` uint8 ``[N, H, W, C]`` -> ``class_id`` int64 ``[N]``,
      ``class_name`` string ``[N]``, ``scores`` float32 ``[N, K]`` (mean cosine similarity to each
      class's references), ``embedding`` float32 ``[N, d]`` (L2-normalised); with a
      ``reject_threshold``, an image whose best score is below it is ``-1`` / ``"unknown"``;
    * ``classify_bytes``: ``image_bytes`` string ``[N]`` (encoded images of any size) -> the same;
    * ``embed``: ``images`` uint8 ``[N, H, W, C]`` -> ``embedding``.

    Images of any size are resized inside; C is the model's channel count (1 gray, 3 RGB). The
    reference database is a constant of the graph, so the SavedModel classifies on its own.
    """
    _, image_size, width, channels = encoder.input_shape
    if image_size != width:
        raise ExportError(f"The encoder takes {image_size}x{width} images; only square inputs are supported.")
    if database.prototypes.shape[1] != encoder.output_shape[-1]:
        raise ExportError(f"The reference database holds {database.prototypes.shape[1]}-d prototypes but the "
                          f"encoder outputs {encoder.output_shape[-1]}-d embeddings: not the same model.")
    prototypes = tf.constant(database.prototypes)
    class_names = tf.constant(list(database.class_names))

    def embedding(x):
        return tf.math.l2_normalize(tf.cast(encoder(x, training=False), tf.float32), axis=-1)

    def classify(x):
        z = embedding(x)
        scores = tf.matmul(z, prototypes, transpose_b=True)
        class_id = tf.argmax(scores, axis=-1)
        class_name = tf.gather(class_names, class_id)
        if reject_threshold is not None:
            unknown = tf.reduce_max(scores, axis=-1) < reject_threshold
            class_id = tf.where(unknown, tf.constant(evaluation.UNKNOWN, tf.int64), class_id)
            class_name = tf.where(unknown, tf.constant(UNKNOWN_NAME), class_name)
        return {"class_id": class_id, "class_name": class_name, "scores": scores, "embedding": z}

    def serving_default(images):
        with tf.control_dependencies([_non_empty(images, "image")]):
            return classify(preprocess(images, image_size))

    def classify_bytes(image_bytes):
        with tf.control_dependencies([_non_empty(image_bytes, "encoded image")]):
            return classify(decode(image_bytes, image_size, channels))

    def embed(images):
        with tf.control_dependencies([_non_empty(images, "image")]):
            return {"embedding": embedding(preprocess(images, image_size))}

    images_spec = tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint("serving_default", serving_default, input_signature=[images_spec])
    archive.add_endpoint("classify_bytes", classify_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("embed", embed, input_signature=[images_spec])
    return archive


# --- LiteRT -------------------------------------------------------------------------------------

def edge_model(encoder, normalize=True):
    """Pixels float32 ``[N, S, S, C]`` in 0..255 -> embedding (L2-normalised if ``normalize``):
    what LiteRT runs.

    Resizing stays outside (the edge runner does it with Pillow): TFLite has no builtin for the
    antialiased resize of training, and a camera delivers one size anyway. The int16x8 converter
    has no 16-bit ``SQUARE``, so that variant leaves the normalisation to the runner (as int8
    does: ``quantization.int8_edge_model``).
    """
    pixels = keras.Input(encoder.input_shape[1:], dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(pixels)
    z = encoder(x)
    if normalize:
        z = keras.layers.UnitNormalization(name="l2_normalize")(z)
    return keras.Model(pixels, z, name="edge_embedder")


def tflite_converter_settings(variant, representative_images=None):
    """Converter settings of one variant; builtin ops only (edge runtimes have no Flex ops)."""
    if variant == "fp32":
        return {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if variant == "fp16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
                                "supported_types": [tf.float16]}}
    if variant in QUANTIZED:
        if representative_images is None or len(representative_images) == 0:
            raise ExportError(f"{variant} needs representative training images for calibration.")
        images = np.asarray(representative_images, np.float32)

        def representative_dataset():
            for image in images:
                yield [image[None]]
        calibrated = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative_dataset}
        if variant == "int8":  # full-integer: every op int8 (conversion fails otherwise); uint8 in, float32 out
            return {**calibrated, "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                    "inference_input_type": tf.uint8}
        # int8 weights, int16 activations: builtin kernels, far closer to float than int8 (BENCHMARKS.md),
        # but XNNPACK does not accelerate them; float32 pixels in, float32 out.
        return {**calibrated, "target_spec": {"supported_ops": [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]}}
    raise ExportError(f"Unknown TFLite variant {variant!r}; use one of {', '.join(TFLITE_VARIANTS)}.")


def write_tflite(encoder, path, variant, representative_images=None):
    """Converts through Keras's LiteRT export (ExportArchive -> SavedModel -> TFLiteConverter).
    int8 converts ``quantization.int8_edge_model``: the same function with batch norm folded, an
    input path that keeps every pixel level, and int8 ranges chosen on the representative images
    for the least rounding error."""
    settings = tflite_converter_settings(variant, representative_images)  # checks the images first
    model = (quantization.int8_edge_model(encoder, np.asarray(representative_images, np.float32) / 255.0)
             if variant == "int8" else edge_model(encoder, normalize=variant != "int16x8"))
    model.export(path, format="litert", verbose=False, **settings)


def tflite_op_types(path):
    """``{op name: sorted output dtypes}`` of a .tflite file (shows which ops stay float)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=path,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    ops = {}
    for op in interpreter._get_ops_details():
        ops.setdefault(op["op_name"], set()).update(dtypes[i] for i in op["outputs"] if i in dtypes)
    return {name: sorted(types) for name, types in sorted(ops.items())}


# --- checking -----------------------------------------------------------------------------------

def keras_embeddings(encoder, images):
    """The reference: the Keras encoder's L2-normalised embeddings of uint8 ``S x S`` images,
    computed as the training run's own evaluation computes them."""
    return l2_normalize(inference.embed(encoder, np.asarray(images)))


def agreement(reference, embeddings, database):
    """Min and mean cosine to the reference embeddings, the top-1 agreement of their predictions,
    and the number of disagreements on images that are not near-ties for the Keras model
    (top-2 score margin above ``TIE_MARGIN``)."""
    cosine = np.sum(l2_normalize(reference) * l2_normalize(embeddings), axis=1)
    differs = database.predict(reference) != database.predict(embeddings)
    top2 = np.sort(database.scores(reference), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > TIE_MARGIN
    return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
            "top1_agreement": float(np.mean(~differs)), "clear_disagreements": int(np.sum(differs & clear)),
            "images": int(len(cosine))}


def encode_png(images):
    return [tf.io.encode_png(image).numpy() for image in np.asarray(images, np.uint8)]


def check_version(version_dir, encoder, database, images):
    """Runs ``images`` (uint8 ``[N, S, S, C]``) through every artefact of a written version and
    compares with the Keras encoder. Raises :class:`ExportError` if a float artefact (SavedModel
    signatures, fp32, fp16) disagrees (cosine < 0.999, or a top-1 differs where Keras's decision is
    not a near-tie); the calibrated integer variants (int8, int16x8) are reported.
    """
    reference = keras_embeddings(encoder, images)
    bundle = os.path.join(version_dir, EXTRA)
    metadata = edge_classify.load_metadata(bundle)
    threshold = metadata.get("reject_threshold")
    loaded = tf.saved_model.load(version_dir)
    outputs = {
        "saved_model/serving_default": loaded.signatures["serving_default"](images=tf.constant(images)),
        "saved_model/classify_bytes": loaded.signatures["classify_bytes"](
            image_bytes=tf.constant(encode_png(images))),
        "saved_model/embed": loaded.signatures["embed"](images=tf.constant(images)),
    }
    figures = {}
    for name, out in outputs.items():
        figures[name] = agreement(reference, out["embedding"].numpy(), database)
        if "class_id" in out:  # the graph's own decision must be the database's decision
            decided = out["class_id"].numpy()
            names = [n.decode() for n in out["class_name"].numpy()]
            scores = out["scores"].numpy()
            expected = evaluation.decide(scores, threshold)
            if not (np.allclose(scores, database.scores(out["embedding"].numpy()), atol=1e-5)
                    and np.array_equal(decided, expected)
                    and names == [database.class_names[i] if i >= 0 else UNKNOWN_NAME for i in decided]):
                raise ExportError(f"{name}: scores, class ids or names disagree with the reference database.")
    for variant in metadata.get("tflite", {}):
        runner = edge_classify.EdgeClassifier(bundle, variant)
        figures[f"tflite/{variant}"] = agreement(reference, runner.embed(images), database)
    for name, figure in figures.items():
        if name.split("/")[-1] not in QUANTIZED and (figure["min_cosine"] < MIN_COSINE or figure["clear_disagreements"]):
            raise ExportError(f"{name} does not reproduce the Keras model ({figure}); nothing was published.")
    return figures


# --- versions -----------------------------------------------------------------------------------

def versions(model_root):
    """The published versions under ``EXPORT/<model_name>``, oldest first."""
    if not os.path.isdir(model_root):
        return []
    return sorted(int(name) for name in os.listdir(model_root)
                  if name.isdigit() and os.path.isdir(os.path.join(model_root, name)))


def find_model_root(export_dir, model_name=None):
    """``EXPORT/<model_name>``; without a name, the only model under ``export_dir``."""
    if model_name:
        root = os.path.join(export_dir, model_name)
        if not versions(root):
            raise ExportError(f"{root} holds no exported version. Export one with python -m scl_amp_tf.export.")
        return root
    names = sorted(n for n in os.listdir(export_dir) if versions(os.path.join(export_dir, n))) \
        if os.path.isdir(export_dir) else []
    if len(names) != 1:
        raise ExportError(f"--export_dir={export_dir} holds {len(names)} exported models "
                          f"({', '.join(names) or 'none'}); name one with --model_name.")
    return os.path.join(export_dir, names[0])


def remove_abandoned_versions(model_root):
    """Deletes the temporary version folders that a killed export or enrolment left behind: those
    written on this host by a process that no longer runs. Returns their names.

    An interrupted run (Ctrl-C, an error) removes its own folder; only a hard kill (SIGKILL, power
    loss) leaves one. Folders of other hosts (shared storage) or of running processes are kept.
    """
    removed = []
    for name in sorted(os.listdir(model_root)):
        parts = name[len(TMP_PREFIX):].split("-")
        if not name.startswith(TMP_PREFIX) or len(parts) < 4 or "-".join(parts[1:-2]) != socket.gethostname():
            continue
        try:
            os.kill(int(parts[-2]), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except (PermissionError, ValueError):  # another user's live process, or not our name
            continue
        files.remove_dir(os.path.join(model_root, name))
        removed.append(name)
    return removed


def publish_version(model_root, version, encoder, database, metadata, *, check_images, tflite_variants=(),
                    representative_images=None, tflite_source=None):
    """Writes, checks and publishes ``model_root/<version>``; returns its path.

    LiteRT files are converted (``representative_images`` calibrates int8) or, when
    ``tflite_source`` (a previous bundle of the same encoder) is given, copied from there.
    """
    final = os.path.join(model_root, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final} exists already; choose another --version (published: "
                          f"{', '.join(map(str, versions(model_root)))}).")
    os.makedirs(model_root, exist_ok=True)
    remove_abandoned_versions(model_root)
    # Not a number, so TF Serving skips it; host and process id say whose it is (remove_abandoned_versions).
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}-", dir=model_root)
    try:
        build_archive(encoder, database, metadata.get("reject_threshold")).write_out(tmp, verbose=False)
        bundle = os.path.join(tmp, EXTRA)
        os.makedirs(bundle, exist_ok=True)
        encoder.save(os.path.join(bundle, ENCODER_FILE))
        database.save(os.path.join(bundle, REFERENCE_DB_FILE))
        shutil.copy(edge_classify.__file__, os.path.join(bundle, "edge_classify.py"))
        tflite = {}
        for variant in tflite_variants:
            file = f"model_{variant}.tflite"
            if tflite_source:
                shutil.copy(os.path.join(tflite_source, file), os.path.join(bundle, file))
            else:
                write_tflite(encoder, os.path.join(bundle, file), variant, representative_images)
            tflite[variant] = {"file": file, "bytes": os.path.getsize(os.path.join(bundle, file)),
                               "sha256": edge_classify.sha256_of(os.path.join(bundle, file))}
        for variant in set(tflite) & set(QUANTIZED):
            ops = tflite_op_types(os.path.join(bundle, tflite[variant]["file"]))
            tflite[variant]["float_ops"] = sorted(op for op, types in ops.items() if "float32" in types)
        metadata = {**metadata, "version": int(version), "tflite": tflite, "class_names": list(database.class_names),
                    "reference_counts": [int(c) for c in database.counts]}
        _write_json(os.path.join(bundle, METADATA_FILE), metadata)
        metadata["parity"] = check_version(tmp, encoder, database, check_images)
        _write_json(os.path.join(bundle, METADATA_FILE), metadata)
        try:
            files.publish_dir(tmp, final)
        except OSError as e:
            raise ExportError(f"Could not publish {final} ({e}): was that version published meanwhile? "
                              "Run the command again.") from None
    except BaseException:
        files.remove_dir(tmp)
        raise
    return final


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def parse_formats(formats):
    """``"saved_model,tflite"`` -> the TFLite variants to write (the SavedModel is always written)."""
    items = [f.strip() for f in formats.split(",") if f.strip()] if isinstance(formats, str) else list(formats)
    unknown = [f for f in items if f not in FORMATS]
    if unknown:
        raise ExportError(f"--formats: unknown {', '.join(unknown)}; use saved_model plus tflite (all variants) "
                          f"or some of {', '.join(FORMATS[2:])}.")
    if "saved_model" not in items:
        raise ExportError("--formats must include saved_model: a version folder is a SavedModel (TF Serving's "
                          "unit), and the LiteRT files travel in its assets.extra folder.")
    return tuple(v for v in TFLITE_VARIANTS if f"tflite_{v}" in items or ("tflite" in items and v in TFLITE_DEFAULT))


def calibration_and_check_images(train_images, representative_images, check_images, seed=0):
    """The export's draw from the training images: ``representative_images`` calibrate int8,
    ``check_images`` (disjoint from them where there are enough) check every artefact."""
    order = np.random.default_rng(seed).permutation(len(train_images))
    return train_images[np.sort(order[:representative_images])], train_images[np.sort(order[::-1][:check_images])]


def export_model(model_dir, export_dir, *, model_name=None, version=None, formats="saved_model,tflite",
                 representative_images=200, check_images=64, data_dir=None, manual_dir=None, seed=0,
                 reject_threshold=None, reject_quantile=evaluation.DEFAULT_REJECT_QUANTILE):
    """Exports a finished SCL-AMP training run; returns the published version's path.

    ``representative_images`` training images (drawn with ``seed``) calibrate int8, and
    ``check_images`` of them check every artefact against the Keras encoder. ``reject_threshold``
    (None, ``"auto"`` or a cosine similarity) makes every artefact report images whose best score
    is below it as unknown; ``"auto"`` calibrates it on the training images as ``evaluate`` does
    (the ``reject_quantile`` of their leave-one-out similarities).
    """
    variants = parse_formats(formats)
    if check_images < 1 or representative_images < 1:
        raise ExportError("--check_images and --representative_images must be at least 1.")
    settings, train_data, _ = run_folder.load_run(model_dir, data_dir=data_dir, manual_dir=manual_dir)
    if settings.get("method") != "scl_amp":
        raise ExportError(f"{model_dir} holds a {settings.get('method')!r} model; export serves SCL-AMP models, "
                          "which classify by the reference database (the CE baseline is for comparison: "
                          "load its encoder.keras with Keras).")
    encoder = keras.models.load_model(os.path.join(model_dir, run_folder.ENCODER))
    database = ReferenceDatabase.load(os.path.join(model_dir, "reference_db.npz"))
    if reject_threshold == "auto":
        reject_threshold = run_folder.auto_reject_threshold(model_dir, keras_embeddings(encoder, train_data.images),
                                                          train_data.labels, reject_quantile)
    elif reject_threshold is not None and not -1.0 <= float(reject_threshold) <= 1.0:
        raise ExportError(f"--reject_threshold={reject_threshold} must be a cosine similarity in [-1, 1].")
    calibration, checks = calibration_and_check_images(train_data.images, representative_images, check_images, seed)
    model_name = model_name or os.path.basename(os.path.normpath(model_dir))
    model_root = os.path.join(export_dir, model_name)
    version = int(version) if version is not None else (versions(model_root) or [0])[-1] + 1
    metadata = {"format": 1, "model_name": model_name, "method": "scl_amp",
                "image_size": int(encoder.input_shape[1]), "channels": int(encoder.input_shape[-1]),
                "embedding_dim": int(encoder.output_shape[-1]), "signatures": list(SIGNATURES),
                "reject_threshold": None if reject_threshold is None else float(reject_threshold),
                "training": {"model_dir": os.path.abspath(model_dir), **settings,
                             "dataset_description": train_data.description},
                "history": [f"{_now()} exported from {os.path.abspath(model_dir)}"]}
    return publish_version(model_root, version, encoder, database, metadata, check_images=checks,
                           tflite_variants=variants, representative_images=calibration)


def describe_version(version_dir):
    """A short table of what a published version holds and how closely it matches Keras."""
    with open(os.path.join(version_dir, EXTRA, METADATA_FILE)) as f:
        metadata = json.load(f)
    lines = [f"Published {version_dir}: {len(metadata['class_names'])} classes, "
             f"{metadata['image_size']}x{metadata['image_size']}x{metadata['channels']} inputs.",
             "artefact                        bytes       min cosine  top-1 agreement (vs Keras)"]
    for name, figure in metadata["parity"].items():
        variant = name.split("/")[1] if name.startswith("tflite/") else None
        size = metadata["tflite"][variant]["bytes"] if variant else ""
        lines.append(f"{name:30s}  {size!s:>10}  {figure['min_cosine']:10.6f}  "
                     f"{100 * figure['top1_agreement']:6.1f} % of {figure['images']}")
    if metadata.get("reject_threshold") is not None:
        lines.append(f"reject threshold {metadata['reject_threshold']:.4f}: images whose best score is below it "
                     f"are {UNKNOWN_NAME!r} (class id {evaluation.UNKNOWN})")
    enrolment = metadata.get("enrolment")
    if enrolment and enrolment["predicted_as_it"] < enrolment["images"]:
        closer = ", ".join(f"{name} ({count})" for name, count in enrolment["closer_to"].items())
        lines.append(f"warning: {enrolment['images'] - enrolment['predicted_as_it']} of the {enrolment['images']} "
                     f"images enrolled as {enrolment['class_name']!r} predict as another class: {closer}. This "
                     "encoder does not set them apart; more or cleaner images of the class, or retraining with "
                     "it, may help.")
    for variant in (v for v in QUANTIZED if v in metadata["tflite"]):
        lines.append(f"{variant} ops with float32 outputs: "
                     f"{', '.join(metadata['tflite'][variant]['float_ops']) or 'none'}")
    return "\n".join(lines)


# --- enrolment ----------------------------------------------------------------------------------

def read_images(folder):
    """Encoded bytes of every image file under ``folder``; raises naming a file that cannot be decoded."""
    paths = edge_classify.image_files(folder)
    encoded = []
    for path in paths:
        data = tf.io.read_file(path)
        try:
            tf.io.decode_image(data, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise ExportError(f"Cannot decode image {path}: {e.message.strip()}. Fix or remove the file.") from None
        encoded.append(data.numpy())
    return paths, encoded


def enrolment_check(database, class_name, embeddings):
    """How the enrolled images themselves are classified by the new reference database: all of them
    as the new class when the encoder sets that class apart from the others; those closer to
    another class's prototype than to their own mean say it does not (too few, mixed or
    out-of-domain images, or an encoder that never learnt such defects)."""
    counts = collections.Counter(database.class_names[i] for i in database.predict(embeddings))
    others = sorted((name for name in counts if name != class_name), key=lambda name: (-counts[name], name))
    return {"class_name": class_name, "images": len(embeddings), "predicted_as_it": counts[class_name],
            "closer_to": {name: counts[name] for name in others}}


MAX_CLASS_NAME = 100  # characters: a class name is a label in CSVs, JSON and serving answers


def check_class_name(name):
    """Refuses a class name that would be mistaken for something else: empty or blank, the
    ``unknown`` of a rejected image, longer than MAX_CLASS_NAME, or with control characters."""
    if not name or not name.strip():
        raise ExportError("--class_name is empty: give the defect type a name.")
    if name.strip().lower() == UNKNOWN_NAME:
        raise ExportError(f"--class_name={name!r} is what a rejected image is called; choose another name.")
    if len(name) > MAX_CLASS_NAME:
        raise ExportError(f"--class_name has {len(name)} characters; at most {MAX_CLASS_NAME}.")
    if any(not c.isprintable() for c in name):
        raise ExportError(f"--class_name={name!r} holds control characters.")


def enroll(export_dir, class_name, *, images=None, mode="add", model_name=None, seed=0):
    """Adds (``mode="add"``), replaces (``"replace"``) or removes (``"remove"``) a class of the newest
    exported version and publishes the result as the next version; returns its path.

    New references are embedded by the newest version's own SavedModel (``classify_bytes``), so the
    prototypes come from exactly the preprocessing and weights that serve. The encoder and the
    LiteRT files are unchanged (copied); only the reference database differs.
    """
    if mode not in ("add", "replace", "remove"):
        raise ExportError(f"mode must be add, replace or remove, not {mode!r}.")
    if mode != "remove":
        check_class_name(class_name)
    model_root = find_model_root(export_dir, model_name)
    latest = os.path.join(model_root, str(versions(model_root)[-1]))
    bundle = os.path.join(latest, EXTRA)
    metadata = edge_classify.load_metadata(bundle)
    database = ReferenceDatabase.load(os.path.join(bundle, REFERENCE_DB_FILE))
    names = list(database.class_names)
    if mode == "add" and class_name in names:
        raise ExportError(f"Class {class_name!r} is already enrolled in {latest}; use --replace to replace its "
                          "references or --remove to remove it.")
    if mode in ("replace", "remove") and class_name not in names:
        raise ExportError(f"Class {class_name!r} is not in {latest} (classes: {', '.join(names)}).")
    if mode == "remove":
        if len(names) <= 2:
            raise ExportError(f"{latest} has {len(names)} classes; at least 2 must remain.")
        keep = [i for i, n in enumerate(names) if n != class_name]
        new = ReferenceDatabase(database.prototypes[keep], database.counts[keep], [names[i] for i in keep])
        rng = np.random.default_rng(seed)  # no new images: check the artefacts on seeded noise images
        size, channels = metadata["image_size"], metadata["channels"]
        check_images = rng.integers(0, 256, (16, size, size, channels), dtype=np.uint8)
        event, enrolment = f"removed class {class_name!r}", None
    else:
        if not images:
            raise ExportError("--images=DIR is needed: a folder of images of the class to enroll.")
        paths, encoded = read_images(images)
        out = tf.saved_model.load(latest).signatures["classify_bytes"](image_bytes=tf.constant(encoded))
        embeddings = out["embedding"].numpy()
        prototype = l2_normalize(embeddings).mean(axis=0, keepdims=True)
        if mode == "add":
            new = ReferenceDatabase(np.concatenate([database.prototypes, prototype]),
                                    np.append(database.counts, len(paths)), [*names, class_name])
        else:
            index = names.index(class_name)
            prototypes, counts = database.prototypes.copy(), database.counts.copy()
            prototypes[index], counts[index] = prototype[0], len(paths)
            new = ReferenceDatabase(prototypes, counts, names)
        pixels = decode(tf.constant(encoded[:64]), metadata["image_size"], metadata["channels"]).numpy() * 255.0
        check_images = np.round(pixels).astype(np.uint8)
        enrolment = enrolment_check(new, class_name, embeddings)
        event = f"{'added' if mode == 'add' else 'replaced'} class {class_name!r} from {len(paths)} images in " \
                f"{os.path.abspath(images)}; {enrolment['predicted_as_it']} of them predict as it"
    encoder = keras.models.load_model(os.path.join(bundle, ENCODER_FILE))
    tflite_files = metadata.get("tflite", {})
    metadata = {k: v for k, v in metadata.items() if k not in ("parity", "tflite", "version", "enrolment")}
    if enrolment is not None:
        metadata["enrolment"] = enrolment
    metadata["history"] = [*metadata.get("history", []), f"{_now()} {event} (from version {os.path.basename(latest)})"]
    variants = tuple(tflite_files)
    # The next number after the version read, not after the newest now: if another enrolment has
    # published that number meanwhile, the rename fails instead of silently dropping its change.
    return publish_version(model_root, int(os.path.basename(latest)) + 1, encoder, new, metadata,
                           check_images=check_images, tflite_variants=variants, tflite_source=bundle)
