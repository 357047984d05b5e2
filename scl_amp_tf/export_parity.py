"""Whether an exported version answers like the Keras model it came from (checked before publishing).

Every artefact of a written version (the SavedModel's three signatures, each LiteRT variant) embeds
the same images as the Keras encoder, the way the training run's evaluation does; the float ones
must agree to a cosine of ``MIN_COSINE`` and on every top-1 decision that is not a near-tie for
the Keras model, else :class:`ExportError` and nothing is published. The calibrated integer
variants (int8, int16x8) are measured and reported, not enforced.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from scl_amp_tf import evaluation
from scl_amp_tf import inference
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.export_versions import EXTRA
from scl_amp_tf.reference import l2_normalize
from scl_amp_tf.serving_graph import UNKNOWN_NAME, ExportError
from scl_amp_tf.tflite_models import QUANTIZED

MIN_COSINE = 0.999  # float artefacts must agree with Keras to this cosine, and on every top-1 ...
TIE_MARGIN = 1e-3  # ... that is not a tie: where Keras's two best classes differ by less, either answer is right


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
