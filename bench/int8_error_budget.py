"""Benchmark: where the int8 LiteRT model loses the Keras model's answers (its error budget).

For a finished SCL-AMP run, on its own test split (at most ``--max_test_images``, drawn with
``--seed``, as ``export_bench.py`` draws them):

* the real int8 model (``python -m scl_amp_tf.export``'s, calibrated on the same training images):
  mean (1 - cos) of its embeddings to the Keras encoder's and its top-1 agreement;
* the same two figures for ``scl_amp_tf.quantization``'s int8 simulation with everything rounded,
  then with all weights exact, all activations exact, and each activation tensor exact alone;
  ``share`` is the part of the error that keeping that tensor in float removes.

One ``BENCH {json}`` line per figure:

    python bench/int8_error_budget.py --model_dir=results/runs/table_3/cpu/20shot/scl_amp_seed0 \\
        --manual_dir=../shared/data/neu
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import numpy as np

from bench_lines import emit  # bench/ is on the path when run as python bench/<script>.py
from scl_amp_tf.provenance import made


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--max_test_images", type=int, default=3000)
    parser.add_argument("--representative_images", type=int, default=200, help="as python -m scl_amp_tf.export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also append the lines to this file")
    args = parser.parse_args()

    import keras

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log)
    from scl_amp_tf import export_parity, export_versions, exporting, int8_error_budget, run_folder
    from scl_amp_tf.edge import edge_classify
    from scl_amp_tf.reference import ReferenceDatabase

    settings, train, test = run_folder.load_run(args.model_dir, data_dir=args.data_dir, manual_dir=args.manual_dir)
    order = np.sort(np.random.default_rng(args.seed).permutation(len(test.labels))[:args.max_test_images])
    images = test.images[order]
    encoder = keras.models.load_model(os.path.join(args.model_dir, "encoder.keras"))
    database = ReferenceDatabase.load(os.path.join(args.model_dir, "reference_db.npz"))
    reference = export_parity.keras_embeddings(encoder, images)
    common = {"dataset": test.description, "model_dir": os.path.abspath(args.model_dir),
              "backbone": settings["backbone"], "image_size": settings["image_size"], "images": len(images), **made()}

    scratch = tempfile.mkdtemp(prefix="int8_budget_")
    try:
        version = exporting.export_model(args.model_dir, scratch, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                         formats="saved_model,tflite_int8",
                                         representative_images=args.representative_images, seed=args.seed)
        real = edge_classify.EdgeClassifier(os.path.join(version, export_versions.EXTRA), "int8").embed(images)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    decisions = database.predict(reference)
    emit({**common, "figure": "int8_real", "error": float(np.mean(1.0 - np.sum(real * reference, axis=1))),
          "top1_agreement": float(np.mean(database.predict(real) == decisions))}, args.out)

    calibration, _ = exporting.calibration_and_check_images(train.images, args.representative_images, 1, args.seed)
    simulated = int8_error_budget.int8_simulation(encoder, calibration.astype(np.float32) / 255.0)
    unit_images = images.astype(np.float32) / 255.0
    rows = int8_error_budget.error_budget(simulated, unit_images, reference, database.predict)
    everything = rows[0]["error"]
    # error_budget leaves everything rounded
    simulated_all = int8_error_budget.simulated_embeddings(simulated, unit_images)
    emit({**common, "figure": "int8_simulation_vs_real",
          "error_between": float(np.mean(1.0 - np.sum(simulated_all * real, axis=1))),
          "simulated_error": everything}, args.out)
    for row in rows:
        emit({**common, "figure": "int8_error_budget", **row,
              "share": round(1.0 - row["error"] / everything, 4)}, args.out)


if __name__ == "__main__":
    main()
