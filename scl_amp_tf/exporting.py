"""Exported versions: a SavedModel for TF Serving with the reference database inside
(:mod:`scl_amp_tf.serving_graph`) and LiteRT models for the edge (:mod:`scl_amp_tf.tflite_models`),
written, checked against the Keras model and published as one version folder; enrolment of new
classes (:mod:`scl_amp_tf.enrolment`) publishes the next version the same way.

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

import datetime
import json
import os
import shutil
import socket
import tempfile

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import evaluation
from scl_amp_tf import files
from scl_amp_tf import models  # noqa: F401  (registers the custom layers that encoder.keras holds)
from scl_amp_tf import inference
from scl_amp_tf import run_folder
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.reference import ReferenceDatabase, l2_normalize
from scl_amp_tf.serving_graph import UNKNOWN_NAME, ExportError, build_archive
from scl_amp_tf.tflite_models import QUANTIZED, TFLITE_DEFAULT, TFLITE_VARIANTS, tflite_op_types, write_tflite

SIGNATURES = ("serving_default", "classify_bytes", "embed")
FORMATS = ("saved_model", "tflite", *(f"tflite_{v}" for v in TFLITE_VARIANTS))
EXTRA = "assets.extra"
TMP_PREFIX = ".tmp-"  # a version being written: EXPORT/<model>/.tmp-<version>-<host>-<pid>-<random>
METADATA_FILE = edge_classify.METADATA_FILE
REFERENCE_DB_FILE = edge_classify.REFERENCE_DB_FILE
ENCODER_FILE = "encoder.keras"
MIN_COSINE = 0.999  # float artefacts must agree with Keras to this cosine, and on every top-1 ...
TIE_MARGIN = 1e-3  # ... that is not a tie: where Keras's two best classes differ by less, either answer is right


# --- checking -----------------------------------------------------------------------------------

def keras_embeddings(encoder, images, tta="none"):
    """The reference: the Keras encoder's L2-normalised embeddings of uint8 ``S x S`` images,
    computed as the training run's own evaluation computes them (``tta``: its ``--tta``)."""
    return l2_normalize(inference.embed(encoder, np.asarray(images), tta=tta))


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
    bundle = os.path.join(version_dir, EXTRA)
    metadata = edge_classify.load_metadata(bundle)
    reference = keras_embeddings(encoder, images, metadata.get("tta", "none"))
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
        enforced = name.split("/")[-1] not in QUANTIZED
        if enforced and (figure["min_cosine"] < MIN_COSINE or figure["clear_disagreements"]):
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
    tta = run_folder.tta_of(settings)
    if reject_threshold == "auto":
        reject_threshold = run_folder.auto_reject_threshold(
            model_dir, keras_embeddings(encoder, train_data.images, tta), train_data.labels, reject_quantile)
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
                "tta": tta,
                "training": {"model_dir": os.path.abspath(model_dir), **settings,
                             "dataset_description": train_data.description},
                "history": [f"{now()} exported from {os.path.abspath(model_dir)}"]}
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


