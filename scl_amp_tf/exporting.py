"""Exported versions: a SavedModel for TF Serving with the reference database inside
(:mod:`scl_amp_tf.serving_graph`) and LiteRT models for the edge (:mod:`scl_amp_tf.tflite_models`),
written, checked against the Keras model (:mod:`scl_amp_tf.export_parity`) and published as one
version folder (:mod:`scl_amp_tf.export_versions`); enrolment of new classes
(:mod:`scl_amp_tf.enrolment`) publishes the next version the same way.

One exported version is one folder, in TF Serving's layout::

    EXPORT/<model_name>/<version>/
      saved_model.pb, variables/   signatures serving_default, classify_bytes, embed
      assets.extra/                the edge bundle (TF Serving ignores this folder)
        scl_amp_tf.json            image size, channels, class names, files, parity figures, history
        reference_db.npz           one prototype per class (section IV.A)
        model_fp32.tflite ...      LiteRT models: pixels [N, S, S, C] -> embedding (L2-normalised,
                                   except int16x8's: the runner normalises every variant's output)
        encoder.keras              the Keras network the artefacts run: the run's encoder, or its
                                   backbone features (--representation=backbone); enrolment
                                   builds the next version from it
        edge_classify.py           the LiteRT runner (needs LiteRT, NumPy and Pillow only)

A version is written into a hidden temporary folder beside the others, reloaded and checked
against the Keras model (every signature and every LiteRT variant), and only then renamed into
place, so TF Serving never sees a half-written or unchecked version.

Classification is the paper's reference-database rule (section IV.A): the score of a class is the
mean cosine similarity of the query's embedding to the class's references, which equals the dot
product with the class prototype (the mean of the normalised references). With
``--prototypes=normalised`` the stored prototypes are at unit length, so the score is the cosine to
the class's mean direction (:mod:`scl_amp_tf.reference`); every artefact just takes the dot product.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import tempfile

import keras
import numpy as np

from scl_amp_tf import evaluation, inference, open_set
from scl_amp_tf import files
from scl_amp_tf import models  # noqa: F401  (registers the custom layers that encoder.keras holds)
from scl_amp_tf import run_folder
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.evaluating import REPRESENTATIONS
from scl_amp_tf.export_parity import check_version, keras_embeddings
from scl_amp_tf.export_versions import (ENCODER_FILE, EXTRA, METADATA_FILE, REFERENCE_DB_FILE, TMP_PREFIX,
                                        remove_abandoned_versions, versions)
from scl_amp_tf.reference import ReferenceDatabase, check_prototype_rule
from scl_amp_tf.serving_graph import UNKNOWN_NAME, ExportError, build_archive
from scl_amp_tf.tflite_models import QUANTIZED, TFLITE_DEFAULT, TFLITE_VARIANTS, tflite_op_types, write_tflite

SIGNATURES = ("serving_default", "classify_bytes", "embed")
FORMATS = ("saved_model", "tflite", *(f"tflite_{v}" for v in TFLITE_VARIANTS))


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
        build_archive(encoder, database, metadata.get("reject_threshold"),
                      metadata.get("tta", "none")).write_out(tmp, verbose=False)
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
        files.write_json(os.path.join(bundle, METADATA_FILE), metadata)
        metadata["parity"] = check_version(tmp, encoder, database, check_images)
        files.write_json(os.path.join(bundle, METADATA_FILE), metadata)
        try:
            files.publish_dir(tmp, final)
        except OSError as e:
            raise ExportError(f"Could not publish {final} ({e}): was that version published meanwhile? "
                              "Run the command again.") from None
    except BaseException:
        files.remove_dir(tmp)
        raise
    return final


def now():
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
                 reject_threshold=None, reject_quantile=open_set.DEFAULT_REJECT_QUANTILE,
                 representation="embedding", prototypes="mean"):
    """Exports a finished training run; returns the published version's path.

    ``representation`` is what every artefact outputs and the reference database holds:
    ``"embedding"``, an SCL-AMP run's embeddings and the run's own database; ``"backbone"``, the
    pooled backbone features of an SCL-AMP or CE run, with a database of the run's training images
    rebuilt on them (section IV.A). Classes trained on score better on the embeddings; classes
    never trained on, which ``enroll`` adds, on the backbone features (README, "Deployment").
    ``prototypes`` is the scoring rule (:data:`scl_amp_tf.reference.PROTOTYPE_RULES`): ``"mean"``,
    the mean cosine to a class's references (section IV.A, what ``evaluate`` reports);
    ``"normalised"``, the cosine to their mean direction, which keeps classes enrolled from a few
    images from outscoring the trained ones (README, "Deployment"); ``enroll`` follows it.

    ``representative_images`` training images (drawn with ``seed``) calibrate int8, and
    ``check_images`` of them check every artefact against the Keras encoder. ``reject_threshold``
    (None, ``"auto"`` or a cosine similarity) makes every artefact report images whose best score
    is below it as unknown; ``"auto"`` calibrates it on the training images as ``evaluate`` does
    (the ``reject_quantile`` of their leave-one-out scores under the ``prototypes`` rule).
    """
    variants = parse_formats(formats)
    if check_images < 1 or representative_images < 1:
        raise ExportError("--check_images and --representative_images must be at least 1.")
    if representation not in REPRESENTATIONS:
        raise ExportError(f"--representation={representation!r} must be one of {', '.join(REPRESENTATIONS)}.")
    try:
        check_prototype_rule(prototypes)
    except ValueError as e:
        raise ExportError(f"--{e}") from None
    settings, train_data, _ = run_folder.load_run(model_dir, data_dir=data_dir, manual_dir=manual_dir)
    method = settings.get("method")
    if method == "ce" and representation == "embedding":
        raise ExportError(f"{model_dir} holds a 'ce' model, which classifies by its softmax: an export classifies "
                          "by a reference database, which a CE run has on its backbone features only. Export "
                          "them with --representation=backbone.")
    if method not in ("scl_amp", "ce"):
        raise ExportError(f"{model_dir} holds a {method!r} model, which learnt without labels: it has no classes "
                          "to serve (start a labelled run from it with --init_from, then export that run).")
    network = inference.representation_model(
        keras.models.load_model(os.path.join(model_dir, run_folder.ENCODER)), representation)
    tta = run_folder.tta_of(settings)
    train_embeddings = (keras_embeddings(network, train_data.images, tta)
                        if representation == "backbone" or reject_threshold == "auto" else None)
    if representation == "embedding":
        database = ReferenceDatabase.load(os.path.join(model_dir, run_folder.REFERENCE_DB))
    else:  # on the features, built as training builds the run's database: every training image a reference
        database = ReferenceDatabase.from_embeddings(train_embeddings, train_data.labels, train_data.class_names)
    database = database.with_rule(prototypes)
    if reject_threshold == "auto":
        reject_threshold = run_folder.auto_reject_threshold(model_dir, train_embeddings, train_data.labels,
                                                            reject_quantile, prototypes)
    elif reject_threshold is not None and not -1.0 <= float(reject_threshold) <= 1.0:
        raise ExportError(f"--reject_threshold={reject_threshold} must be a cosine similarity in [-1, 1].")
    calibration, checks = calibration_and_check_images(train_data.images, representative_images, check_images, seed)
    model_name = model_name or os.path.basename(os.path.normpath(model_dir))
    model_root = os.path.join(export_dir, model_name)
    version = int(version) if version is not None else (versions(model_root) or [0])[-1] + 1
    metadata = {"format": 1, "model_name": model_name, "method": method, "representation": representation,
                "prototypes": prototypes,
                "image_size": int(network.input_shape[1]), "channels": int(network.input_shape[-1]),
                "embedding_dim": int(network.output_shape[-1]), "signatures": list(SIGNATURES),
                "reject_threshold": None if reject_threshold is None else float(reject_threshold),
                "tta": tta,
                "training": {"model_dir": os.path.abspath(model_dir), **settings,
                             "dataset_description": train_data.description},
                "history": [f"{now()} exported from {os.path.abspath(model_dir)}"]}
    return publish_version(model_root, version, network, database, metadata, check_images=checks,
                           tflite_variants=variants, representative_images=calibration)


def prototype_rule(metadata):
    """An exported version's prototype rule; versions exported before the option hold ``mean``."""
    return metadata.get("prototypes", "mean")


def describe_version(version_dir):
    """A short table of what a published version holds and how closely it matches Keras."""
    with open(os.path.join(version_dir, EXTRA, METADATA_FILE)) as f:
        metadata = json.load(f)
    on = "backbone features" if metadata.get("representation") == "backbone" else "embeddings"
    rule = ("the cosine to each class's mean direction" if prototype_rule(metadata) == "normalised"
            else "the mean cosine to each class's references")
    lines = [f"Published {version_dir}: {len(metadata['class_names'])} classes, "
             f"{metadata['image_size']}x{metadata['image_size']}x{metadata['channels']} inputs, "
             f"a reference database on the {on}, scored by {rule}.",
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
    if (enrolment and prototype_rule(metadata) == "mean"
            and enrolment.get("prototype_length", 0) > enrolment.get("longest_other_prototype", 1)):
        lines.append(f"note: the prototype of {enrolment['class_name']!r} (from {enrolment['images']} images) has "
                     f"length {enrolment['prototype_length']:.2f}, every other class's at most "
                     f"{enrolment['longest_other_prototype']:.2f}: under the mean cosine it scores higher than they "
                     "do for images alike and may take theirs. An export with --prototypes=normalised scores by "
                     "the direction alone (README, Deployment).")
    for variant in (v for v in QUANTIZED if v in metadata["tflite"]):
        lines.append(f"{variant} ops with float32 outputs: "
                     f"{', '.join(metadata['tflite'][variant]['float_ops']) or 'none'}")
    return "\n".join(lines)


