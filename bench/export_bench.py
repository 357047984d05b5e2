"""Benchmark: exported artefacts against the Keras model on a real test set, their latency and size.

Exports a finished SCL-AMP run (or uses ``--version_dir``), then, on the run's own test split
(at most ``--max_test_images``, drawn with ``--seed``):

* parity: for the SavedModel (``serving_default``) and each LiteRT variant (``--formats``), the
  min / mean cosine of its embeddings to the Keras encoder's, the top-1 agreement of the reference
  database's decisions with the Keras model's, and the test accuracy of each;
* latency: batch 1 and batch 32 through the SavedModel signature (preprocessing included) and each
  LiteRT interpreter (one thread per core), median and interquartile range over ``--repeats``;
* size: bytes of the SavedModel folder and of each .tflite file.

One ``BENCH {json}`` line per figure:

    python bench/export_bench.py --model_dir=runs/neu_20shot --manual_dir=../shared/data/neu
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from bench_lines import emit  # bench/ is on the path when run as python bench/<script>.py
from scl_amp_tf.provenance import made


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, names in os.walk(path) for f in names)


def _timings(fn, repeats):
    fn()  # warm-up (tracing, allocation)
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--version_dir", default=None, help="an exported version of --model_dir (default: export now)")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--max_test_images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--formats", default="saved_model,tflite,tflite_int16x8", help="as python -m scl_amp_tf.export")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=None, help="also append the lines to this file")
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log)
    from scl_amp_tf import exporting

    version_dir = args.version_dir
    export_seconds = scratch = None
    if version_dir is None:
        start = time.time()
        scratch = tempfile.mkdtemp(prefix="export_bench_")
        version_dir = exporting.export_model(args.model_dir, scratch, data_dir=args.data_dir,
                                             manual_dir=args.manual_dir, formats=args.formats)
        export_seconds = round(time.time() - start, 1)
    try:
        run(args, version_dir, export_seconds)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def run(args, version_dir, export_seconds):
    import keras
    import tensorflow as tf

    from scl_amp_tf import export_parity, export_versions, run_folder, tflite_models
    from scl_amp_tf.edge import edge_classify
    from scl_amp_tf.reference import ReferenceDatabase

    settings, _, test = run_folder.load_run(args.model_dir, data_dir=args.data_dir, manual_dir=args.manual_dir)
    order = np.random.default_rng(args.seed).permutation(len(test.labels))[:args.max_test_images]
    images, labels = test.images[np.sort(order)], test.labels[np.sort(order)]
    encoder = keras.models.load_model(os.path.join(args.model_dir, "encoder.keras"))
    database = ReferenceDatabase.load(os.path.join(args.model_dir, "reference_db.npz"))
    common = {"dataset": test.description, "model_dir": os.path.abspath(args.model_dir),
              "backbone": settings["backbone"], "image_size": settings["image_size"], "tag": args.tag, **made()}

    reference = export_parity.keras_embeddings(encoder, images)
    emit({**common, "figure": "export_parity", "artefact": "keras", "images": len(labels),
           "accuracy": float(np.mean(database.predict(reference) == labels)),
           "export_seconds": export_seconds}, args.out)
    serving = tf.saved_model.load(version_dir).signatures["serving_default"]
    embedded = np.concatenate([serving(images=tf.constant(images[i:i + 256]))["embedding"].numpy()
                               for i in range(0, len(images), 256)])
    outputs = {"saved_model": embedded}
    bundle = os.path.join(version_dir, export_versions.EXTRA)
    runners = {v: edge_classify.EdgeClassifier(bundle, v, num_threads=os.cpu_count())
               for v in edge_classify.load_metadata(bundle)["tflite"]}
    for variant, runner in runners.items():
        outputs[f"tflite_{variant}"] = np.concatenate([runner.embed(images[i:i + 256])
                                                       for i in range(0, len(images), 256)])
    top2 = np.sort(database.scores(reference), axis=1)[:, -2:]
    keras_margin = top2[:, 1] - top2[:, 0]  # how close each image is to a tie in the Keras model
    for name, embeddings in outputs.items():
        figure = export_parity.agreement(reference, embeddings, database)
        differs = database.predict(reference) != database.predict(embeddings)
        emit({**common, "figure": "export_parity", "artefact": name, **figure,
               "accuracy": float(np.mean(database.predict(embeddings) == labels)),
               "disagreements": int(differs.sum()),
               "keras_top2_margin_of_disagreements": [round(float(m), 4) for m in np.sort(keras_margin[differs])][:20],
               "keras_top2_margin_median": round(float(np.median(keras_margin)), 4)}, args.out)

    metadata = edge_classify.load_metadata(bundle)
    sizes = {"saved_model": _folder_bytes(version_dir) - _folder_bytes(bundle)}
    sizes.update({f"tflite_{v}": metadata["tflite"][v]["bytes"] for v in runners})
    for name, size in sizes.items():
        emit({**common, "figure": "export_size", "artefact": name, "bytes": size}, args.out)
    for variant in (v for v in tflite_models.QUANTIZED if v in metadata["tflite"]):
        emit({**common, "figure": f"{variant}_float_ops", "ops": metadata["tflite"][variant]["float_ops"]}, args.out)

    for batch in (1, 32):
        x = images[:batch]
        candidates = {"saved_model": lambda: serving(images=tf.constant(x))["class_id"].numpy()}
        for variant, runner in runners.items():
            candidates[f"tflite_{variant}"] = lambda r=runner: r.classify(x)
        for name, fn in candidates.items():
            t = _timings(fn, args.repeats)
            q1, median, q3 = np.percentile(t, [25, 50, 75])
            emit({**common, "figure": "export_latency", "artefact": name, "batch": batch, "repeats": args.repeats,
                   "ms_per_batch": round(1000 * median, 3),
                   "ms_per_batch_iqr": [round(1000 * q1, 3), round(1000 * q3, 3)],
                   "images_per_s": round(batch / median, 1)}, args.out)


if __name__ == "__main__":
    main()
