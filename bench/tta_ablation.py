"""Benchmark: test accuracy of finished runs with and without ``--tta=dihedral`` (each image's 8
rotations and flips averaged, references and queries alike), evaluated with ``evaluate`` on the
run's own split. Training is untouched, so one run gives both figures; runs already measured in
``--output`` are skipped (the command resumes). One line per run and setting:

    BENCH {"figure": "tta_accuracy", "model_dir": ..., "tta": "dihedral", "test_accuracy": ..., "method": ...}

    python bench/tta_ablation.py --manual_dir=../shared/data/mixedwm38 --output=bench/results/tta_ablation.jsonl \
        results/runs/table_6/cpu-3200steps/50shot/*_seed*
"""
from __future__ import annotations

import argparse
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+", help="finished training runs")
    parser.add_argument("--manual_dir", default=None, help="the dataset's manual folder, if not the recorded one")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    from scl_amp_tf import evaluating, run_folder

    done = {(r["model_dir"], r["tta"]) for r in bench_lines.read(args.output, "tta_accuracy")}
    for model_dir in args.model_dirs:
        name = os.path.relpath(os.path.abspath(model_dir))
        settings = run_folder.load_settings(model_dir)
        for tta in ("none", "dihedral"):
            if (name, tta) in done:
                continue
            result = evaluating.evaluate_run(model_dir, tta=tta, manual_dir=args.manual_dir)[0]
            bench_lines.emit({"figure": "tta_accuracy", "model_dir": name, "tta": tta, "method": result["method"],
                              "dataset": settings["dataset"], "seed": settings["seed"],
                              "shots_per_class": settings.get("shots_per_class"),
                              "arc_on_views": settings.get("arc_on_views", False),
                              "test_accuracy": result["accuracy"],
                              "num_test": int(sum(map(sum, result["confusion_matrix"]))),
                              **bench_lines.provenance()}, args.output)


if __name__ == "__main__":
    main()
