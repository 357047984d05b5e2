"""Enrolment: add, replace or remove a defect class of an exported model without retraining.

The newest published version's own SavedModel embeds the new images (``classify_bytes``), so the
new prototype comes from exactly the preprocessing and weights that serve; the encoder and the
LiteRT files are copied unchanged, and the result is checked and published as the next version
like any export (:func:`scl_amp_tf.exporting.publish_version`).
"""
from __future__ import annotations

import collections
import os

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf.edge import edge_classify
from scl_amp_tf.export_versions import ENCODER_FILE, EXTRA, REFERENCE_DB_FILE, find_model_root, versions
from scl_amp_tf.exporting import now, prototype_rule, publish_version
from scl_amp_tf.reference import ReferenceDatabase, class_prototype
from scl_amp_tf.serving_graph import UNKNOWN_NAME, ExportError, decode


def read_images(path):
    """Encoded bytes of the image file ``path`` or of every image file under the folder ``path``;
    raises naming a file that cannot be decoded."""
    paths = edge_classify.image_files(path)
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
    out-of-domain images, or an encoder that never learnt such defects). With the lengths of the
    new prototype and of the longest other one: under the mean rule a longer prototype scores
    higher for images alike (:mod:`scl_amp_tf.reference`)."""
    counts = collections.Counter(database.class_names[i] for i in database.predict(embeddings))
    others = sorted((name for name in counts if name != class_name), key=lambda name: (-counts[name], name))
    lengths = np.linalg.norm(database.prototypes, axis=1)
    index = database.class_names.index(class_name)
    return {"class_name": class_name, "images": len(embeddings), "predicted_as_it": counts[class_name],
            "closer_to": {name: counts[name] for name in others},
            "prototype_length": round(float(lengths[index]), 4),
            "longest_other_prototype": round(float(np.delete(lengths, index).max()), 4)}


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
        prototype = class_prototype(embeddings, prototype_rule(metadata))[None]  # the rule of the export
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
    metadata["history"] = [*metadata.get("history", []), f"{now()} {event} (from version {os.path.basename(latest)})"]
    variants = tuple(tflite_files)
    # The next number after the version read, not after the newest now: if another enrolment has
    # published that number meanwhile, the rename fails instead of silently dropping its change.
    return publish_version(model_root, int(os.path.basename(latest)) + 1, encoder, new, metadata,
                           check_images=check_images, tflite_variants=variants, tflite_source=bundle)
