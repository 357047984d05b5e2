"""The SavedModel that TF Serving runs: a ``keras.export.ExportArchive`` with the reference
database inside, so the graph classifies on its own (section IV.A).

Its three signatures take images of any size and prepare them exactly as training did (one
antialiased bilinear resize to the model's size, rounded to uint8, scaled to [0, 1]);
``classify_bytes`` decodes PNG, JPEG, GIF or BMP strings after checking each header (format and
pixel count), naming a bad one by its index in the request.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from scl_amp_tf import data as data_lib
from scl_amp_tf import evaluation
from scl_amp_tf import invariance
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.reference import ReferenceDatabase

UNKNOWN_NAME = edge_classify.UNKNOWN_NAME  # class_name of a rejected image (class_id -1)


class ExportError(ValueError):
    """An export or enrolment that cannot be done as asked; the message says why and what to do."""


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


def build_archive(encoder, database: ReferenceDatabase, reject_threshold=None, tta="none"):
    """The serving model: a ``keras.export.ExportArchive`` with the three signatures.

    * ``serving_default``: ``images`` uint8 ``[N, H, W, C]`` -> ``class_id`` int64 ``[N]``,
      ``class_name`` string ``[N]``, ``scores`` float32 ``[N, K]`` (the dot product with each class's
      prototype: the mean cosine similarity to its references, or the cosine to their mean direction
      for unit-length prototypes), ``embedding`` float32 ``[N, d]`` (L2-normalised); with a
      ``reject_threshold``, an image whose best score is below it is ``-1`` / ``"unknown"``;
    * ``classify_bytes``: ``image_bytes`` string ``[N]`` (encoded images of any size) -> the same;
    * ``embed``: ``images`` uint8 ``[N, H, W, C]`` -> ``embedding``.

    Images of any size are resized inside; C is the model's channel count (1 gray, 3 RGB). The
    reference database is a constant of the graph, so the SavedModel classifies on its own. With
    ``tta="dihedral"`` the embedding is the normalised mean of the normalised embeddings of the
    image's 8 rotations and flips (:mod:`scl_amp_tf.invariance`), as the run's database was built.
    """
    _, image_size, width, channels = encoder.input_shape
    if image_size != width:
        raise ExportError(f"The encoder takes {image_size}x{width} images; only square inputs are supported.")
    if database.prototypes.shape[1] != encoder.output_shape[-1]:
        raise ExportError(f"The reference database holds {database.prototypes.shape[1]}-d prototypes but the "
                          f"encoder outputs {encoder.output_shape[-1]}-d embeddings: not the same model.")
    prototypes = tf.constant(database.prototypes)
    class_names = tf.constant(list(database.class_names))

    # One trace of the encoder, called by every signature and every view: traced once per call site
    # (3 signatures, times 8 views with TTA), it was most of a TTA export's time.
    encode = tf.function(lambda x: tf.math.l2_normalize(tf.cast(encoder(x, training=False), tf.float32), axis=-1),
                         input_signature=[tf.TensorSpec([None, image_size, image_size, channels], tf.float32)])

    def embedding(x):
        return tf.math.l2_normalize(tf.add_n([encode(v) for v in invariance.views_tf(x, tta)]), axis=-1)

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
    # Not archive.track(encoder): add_endpoint tracks the variables its functions use, and tracking
    # the model walks every layer (seconds) for lookup tables an encoder does not have.
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serving_default, input_signature=[images_spec])
    archive.add_endpoint("classify_bytes", classify_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("embed", embed, input_signature=[images_spec])
    return archive
