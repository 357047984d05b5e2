"""Benchmark: ``enroll`` on the embeddings against the backbone features (``export --representation``).

``python -m scl_amp_tf.enroll`` adds a class to an exported model: the mean of its images'
normalised outputs joins the reference database beside the trained classes' prototypes
(section IV.A). Which output serves the enrolled classes better, the projection head's
embeddings or the pooled backbone features? Table IV compares them with a database of the new
classes alone; an enrolled class shares the database with the trained ones, and a query of it
can be taken by a trained class.

For each finished run trained on some classes of a dataset (``--classes``, e.g. Table IV's runs,
``reproduce --table=4``), each representation (SCL-AMP: embedding and backbone; CE: backbone) and
each k: the database of the export (every training image of the trained classes, as ``export``
builds it), plus k images of each class the run never saw, drawn per episode exactly as Table IV
draws its references (the run's seed, one generator per k); every other image of those classes a
query. Each database is scored by two prototype rules (``prototypes``: ``mean``, the mean cosine
to a class's references that ``export`` and ``enroll`` store; ``normalised``, the cosine to their
mean direction, see :func:`enrolment_figures`). One line per run, representation, rule and k,
means over the episodes:

* ``new_accuracy``: the queries of the enrolled classes classified right among every class;
* ``new_as_trained``: the share of them taken by a trained class;
* ``new_alone``: the same queries against the enrolled classes alone (Table IV's figure; checked
  against the run's ``few_shot.json`` when it has one);
* ``trained_accuracy``: the run's test images of the trained classes classified right after the
  enrolment (None when the run trained on every image of them, as Table IV's runs do);
* ``trained_alone``: the same images against the trained classes alone, before the enrolment
  (with ``mean``, the export's own accuracy on them, checked against the run's ``metrics.json``;
  None likewise);
* ``balanced_accuracy``: after the enrolment, the mean over every class, trained and enrolled, of
  its images classified right (None likewise).

Lines written before the rule was an option have no ``prototypes`` field: they are ``mean``.

Lines already in ``--output`` are skipped (the command resumes):

    python bench/enrolment.py --runs RUN_DIR [RUN_DIR ...] --episodes=100 \\
        --output=bench/results/enrolment.jsonl
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from scl_amp_tf.reference import PROTOTYPE_RULES as PROTOTYPES  # NumPy only

KS = (1, 3, 5)


def enrolment_figures(base_prototypes, novel, novel_labels, shots, episodes, seed, trained=None, trained_labels=None,
                      prototypes="mean"):
    """The means over ``episodes`` of the figures above for normalised outputs ``novel`` of the
    unseen classes (labels 0..n-1) and, if given, ``trained`` test outputs of the trained classes.

    ``prototypes``: ``"mean"`` scores a class by the mean cosine to its references (section IV.A,
    what ``export`` stores by default); ``"normalised"`` by the cosine to their mean direction
    (every prototype scaled to unit length, ``export --prototypes=normalised``), which does not
    favour a class whose few references lie close together: an enrolled class of k images has a
    longer mean vector than a trained class of hundreds."""
    from sklearn import metrics

    from scl_amp_tf import evaluation
    from scl_amp_tf.reference import ReferenceDatabase

    def database(vectors):  # the prototypes as the export stores them under the rule
        return ReferenceDatabase(vectors, np.ones(len(vectors)), range(len(vectors))).with_rule(prototypes)

    rng = np.random.default_rng(seed)  # as evaluation.few_shot_accuracies draws Table IV's episodes
    num_base = len(base_prototypes)
    has_trained = trained is not None and len(trained) > 0
    rows = []
    for _ in range(episodes):
        references, queries = evaluation.episode_split(novel_labels, shots, rng)
        enrolled = ReferenceDatabase.from_embeddings(novel[references], novel_labels[references]).with_rule(prototypes)
        full = database(np.concatenate([base_prototypes, enrolled.prototypes]))
        predicted = full.predict(novel[queries])
        truth = num_base + novel_labels[queries]
        row = {"new_accuracy": np.mean(predicted == truth),
               "new_as_trained": np.mean(predicted < num_base),
               "new_alone": np.mean(enrolled.predict(novel[queries]) == novel_labels[queries])}
        if has_trained:
            predicted_trained = full.predict(trained)
            row["trained_accuracy"] = np.mean(predicted_trained == trained_labels)
            # every class, trained or enrolled, counts alike: the mean of the per-class recalls
            row["balanced_accuracy"] = metrics.balanced_accuracy_score(
                np.concatenate([trained_labels, truth]), np.concatenate([predicted_trained, predicted]))
        rows.append(row)
    figures = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    if has_trained:
        figures["trained_alone"] = float(np.mean(database(base_prototypes).predict(trained) == trained_labels))
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="finished runs trained with --classes")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--ks", default=",".join(map(str, KS)))
    parser.add_argument("--manual_dir", default=None, help="default: the one each run recorded")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import scl_amp_tf  # noqa: F401  (quiets TensorFlow's C++ log before TF loads)
    import bench_lines
    import keras

    from scl_amp_tf import inference, run_folder
    from scl_amp_tf.reference import ReferenceDatabase, l2_normalize

    ks = [int(k) for k in args.ks.split(",")]
    for model_dir in args.runs:
        model_dir = os.path.normpath(model_dir)
        run = os.path.join(*model_dir.split(os.sep)[-3:])  # e.g. cpu-12800steps/base_In_Pa_RS/ce_seed0
        settings, train_data, test_data, everything = run_folder.load_run(model_dir, manual_dir=args.manual_dir,
                                                                          every_class=True)
        if not settings.get("classes"):
            raise SystemExit(f"{model_dir} trained on every class of its dataset: no class is left to enrol.")
        novel_ids = [i for i, n in enumerate(everything.class_names) if n not in train_data.class_names]
        novel_mask = np.isin(everything.labels, novel_ids)
        novel_labels = np.searchsorted(np.unique(everything.labels[novel_mask]), everything.labels[novel_mask])
        with open(os.path.join(model_dir, run_folder.METRICS)) as f:
            metrics = json.load(f)
        steps = metrics["steps"]
        # the run's own test accuracy on each representation's database: what trained_alone must repeat
        recorded_alone = {"embedding": metrics.get("test_accuracy"),
                          "backbone": metrics.get("reference_db_accuracy_on_features")}
        few_shot_path = os.path.join(model_dir, "few_shot.json")
        few_shot = None
        if os.path.exists(few_shot_path):
            with open(few_shot_path) as f:
                few_shot = json.load(f)
        encoder = keras.models.load_model(os.path.join(model_dir, run_folder.ENCODER))
        tta = run_folder.tta_of(settings)
        for representation in (("embedding", "backbone") if settings["method"] == "scl_amp" else ("backbone",)):
            todo = [(rule, k) for rule in PROTOTYPES for k in ks if not bench_lines.written(args.output, {
                "figure": "enrolment", "run": run, "representation": representation, "prototypes": rule, "k": k,
                "episodes": args.episodes}, defaults={"prototypes": "mean"})]  # lines before the option: "mean"
            if not todo:
                continue
            network = inference.representation_model(encoder, representation)

            def outputs(images):
                return l2_normalize(inference.embed(network, images, tta=tta))

            base = ReferenceDatabase.from_embeddings(outputs(train_data.images), train_data.labels,
                                                     train_data.class_names)
            novel = outputs(everything.images[novel_mask])
            trained = outputs(test_data.images) if len(test_data.labels) else None
            for rule, k in todo:
                figures = enrolment_figures(base.prototypes, novel, novel_labels, k, args.episodes,
                                            settings["seed"], trained, test_data.labels, prototypes=rule)
                if rule == "mean":  # what the run itself recorded, with the same database
                    check_against_run(model_dir, representation, k, figures, few_shot, args.episodes,
                                      recorded_alone[representation])
                bench_lines.emit({
                    "figure": "enrolment", "run": run, "method": settings["method"], "seed": settings["seed"],
                    "steps": steps, "dataset": settings["dataset"],
                    "trained_classes": list(train_data.class_names),
                    "enrolled_classes": [everything.class_names[i] for i in novel_ids],
                    "representation": representation, "prototypes": rule, "k": k, "episodes": args.episodes,
                    "num_trained_test": int(len(test_data.labels)), **figures,
                    **{key: figures.get(key) for key in ("trained_accuracy", "trained_alone", "balanced_accuracy")},
                    **bench_lines.provenance()}, args.output)


def check_against_run(model_dir, representation, k, figures, few_shot, episodes, recorded_alone):
    """Stops if the "alone" figures differ from the run's own: Table IV's ``few_shot.json`` (the
    same episodes) and the trained classes' test accuracy in ``metrics.json`` (a CE run is
    measured on its backbone features only, its ``reference_db_accuracy_on_features``)."""
    if few_shot and representation in few_shot["representations"] and few_shot["episodes"] == episodes:
        table = float(np.mean(few_shot["representations"][representation][f"accuracy_k{k}"]))
        if abs(table - figures["new_alone"]) > 1e-6:
            raise SystemExit(f"{model_dir}: {representation} k={k} alone gives {figures['new_alone']}, "
                             f"Table IV's few_shot.json {table}: not the same episodes.")
    if figures.get("trained_alone") is not None and recorded_alone is not None and \
            abs(recorded_alone - figures["trained_alone"]) > 1e-6:
        raise SystemExit(f"{model_dir}: {representation} gives {figures['trained_alone']} on the trained "
                         f"classes' test images, the run's metrics.json {recorded_alone}: not the same database.")


if __name__ == "__main__":
    main()
