"""Evaluation of a trained run: accuracy, per-class accuracy, confusion matrix, the k-shot
reference database of section IV.A, few-shot episodes (Table IV) and the open-set decision.

Everything here works on NumPy arrays of labels, predictions, scores and embeddings, so each
function can be checked against a direct computation; :mod:`scl_amp_tf.evaluate` is the
command line that feeds it a run's model and data.

* Reference-database inference (section IV.A): k references per class drawn at random from the
  training set (:func:`scl_amp_tf.reference.sample_references`, seeded), a query's score for a
  class is its mean cosine similarity to the class's references, the prediction the best class.
* Few-shot (section IV.B.2, Table IV): classes never seen in training, k references per class
  drawn per episode, every other image of those classes is a query (:func:`episode_split`
  never puts a reference among its own queries).
* Open-set rejection (ours, beyond the paper): :func:`decide` reports a query whose best mean
  similarity lies under a threshold as an unknown defect (``UNKNOWN``); the threshold's
  calibration and the known-vs-unknown measures are in :mod:`scl_amp_tf.open_set`.
"""
from __future__ import annotations

import textwrap

import numpy as np

from scl_amp_tf.reference import ReferenceDatabase

UNKNOWN = -1  # the prediction of a rejected query


def confusion_matrix(labels, predictions, num_classes):
    """``[num_classes, num_classes]`` counts, rows the true class, columns the predicted one.

    Rejected queries (``UNKNOWN``) are not counted in any column (scikit-learn's matrix over the
    known classes).
    """
    from sklearn import metrics

    if len(labels) == 0:
        return np.zeros((num_classes, num_classes), np.int64)
    return metrics.confusion_matrix(np.asarray(labels, np.int64), np.asarray(predictions, np.int64),
                                    labels=np.arange(num_classes)).astype(np.int64)


def per_class_accuracy(labels, predictions, class_names):
    """``{class name: accuracy}`` over the queries of each class (None for a class without any)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return {name: float(np.mean(predictions[labels == i] == i)) if np.any(labels == i) else None
            for i, name in enumerate(class_names)}


def summarize(labels, predictions, class_names):
    """What a quality engineer asks of one test set (scikit-learn's metrics):

    accuracy; balanced accuracy (the mean of the per-class recalls: on an imbalanced set, where
    plain accuracy rewards the big class); precision, recall and F1 of each class and their macro
    means; per-class accuracy (= recall); the confusion matrix (nested lists); the rejected
    queries. A query rejected as unknown counts as a miss of its class and as no class's
    prediction. Classes without test images are left out of the macro means.
    """
    from sklearn import metrics

    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    present = np.unique(labels)
    out = {
        "accuracy": float(np.mean(predictions == labels)) if len(labels) else None,
        "per_class_accuracy": per_class_accuracy(labels, predictions, class_names),
        "confusion_matrix": confusion_matrix(labels, predictions, len(class_names)).tolist(),
        "rejected": int(np.sum(predictions == UNKNOWN)),
        "rejected_per_class": [int(np.sum((labels == i) & (predictions == UNKNOWN)))
                               for i in range(len(class_names))],
        "num_queries": int(len(labels)),
        "balanced_accuracy": None, "macro_precision": None, "macro_recall": None, "macro_f1": None,
        "per_class": {},
    }
    if len(labels):
        precision, recall, f1, support = metrics.precision_recall_fscore_support(
            labels, predictions, labels=np.arange(len(class_names)), zero_division=0)
        out["per_class"] = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                   "support": int(support[i])} for i, name in enumerate(class_names)}
        for key, values in (("macro_precision", precision), ("macro_recall", recall), ("macro_f1", f1)):
            out[key] = float(np.mean(values[present]))
        out["balanced_accuracy"] = out["macro_recall"]
    return out


def confusion_markdown(matrix, class_names, rejected_per_class=None):
    """The confusion matrix as a markdown table (rows: true class; columns: predicted class),
    with a column of the queries rejected as unknown when ``rejected_per_class`` is given."""
    matrix = np.asarray(matrix)
    rejected = np.zeros(len(class_names), np.int64) if rejected_per_class is None else np.asarray(rejected_per_class)
    extra = " unknown |" if rejected_per_class is not None else ""
    head = "| true \\ predicted | " + " | ".join(class_names) + " |" + extra + " accuracy |"
    lines = [head, "|" + " --- |" * (len(class_names) + 2 + bool(extra))]
    for i, name in enumerate(class_names):
        total = matrix[i].sum() + rejected[i]
        acc = f"{100.0 * matrix[i, i] / total:.1f} %" if total else "-"
        cells = " | ".join(str(v) for v in matrix[i]) + (f" | {rejected[i]}" if extra else "")
        lines.append(f"| **{name}** | {cells} | {acc} |")
    return "\n".join(lines) + "\n"


def save_confusion_png(matrix, class_names, path, title=""):
    """Draws the confusion matrix, normalised per true class, with the counts (scikit-learn's
    ``ConfusionMatrixDisplay``), as a PNG whose title and labels are never clipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix, np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = max(4.0, 0.32 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    display = ConfusionMatrixDisplay(rates, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", colorbar=True, include_values=False, xticks_rotation=90 if n > 8 else 0)
    display.im_.set_clim(0.0, 1.0)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.tick_params(labelsize=8 if n > 12 else 10)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, max(30, int(9 * size)))), fontsize=10)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_misclassified_gallery(images, labels, predictions, scores, class_names, path, max_images=48):
    """A PNG grid of the misclassified test images (the first ``max_images``, in test order), each
    titled ``true -> predicted`` with the predicted class's score. Returns how many it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))[:max_images]
    columns = 8
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.9 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  vmin=0, vmax=255)
        predicted = "unknown" if predictions[i] == UNKNOWN else class_names[predictions[i]]
        score = scores[i].max() if scores is not None else None
        ax.set_title(f"{class_names[labels[i]]} -> {predicted}" + (f"\n{score:.3f}" if score is not None else ""),
                     fontsize=7)
    fig.suptitle(f"{len(wrong)} of {int(np.sum(np.asarray(predictions) != np.asarray(labels)))} misclassified "
                 "test images (true -> predicted, score)", fontsize=9)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return len(wrong)


def decide(scores, threshold=None):
    """Class ids from ``[N, K]`` scores: the best class, or ``UNKNOWN`` where the best score is
    below ``threshold`` (the open-set rule; ``None`` rejects nothing)."""
    scores = np.asarray(scores)
    predictions = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    if threshold is not None and len(scores):
        predictions = np.where(scores.max(axis=1) < threshold, UNKNOWN, predictions)
    return predictions


def reference_predictions(reference_embeddings, reference_labels, query_embeddings, class_names,
                          threshold=None, prototypes="mean"):
    """Section IV.A: ``(predictions, scores, database)`` of queries against the references.

    ``threshold``: queries whose best score is below it are ``UNKNOWN``. ``prototypes``: the
    scoring rule (:data:`scl_amp_tf.reference.PROTOTYPE_RULES`; ``"mean"``, the paper's mean cosine).
    """
    database = ReferenceDatabase.from_embeddings(reference_embeddings, reference_labels, class_names)
    database = database.with_rule(prototypes)
    scores = database.scores(query_embeddings)
    return decide(scores, threshold), scores, database


def episode_split(labels, shots, rng):
    """One few-shot episode: ``shots`` references per class at random, every other image a query.

    Returns ``(reference_indices, query_indices)``, disjoint, sorted. Raises ValueError when a
    class has no image left for the queries.
    """
    labels = np.asarray(labels)
    references = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if shots >= len(members):
            raise ValueError(f"Class {label} has {len(members)} images: {shots} references leave no query.")
        references.extend(rng.choice(members, size=shots, replace=False))
    references = np.sort(np.asarray(references, np.int64))
    queries = np.setdiff1d(np.arange(len(labels)), references)
    return references, queries


def few_shot_accuracies(embeddings, labels, shots, episodes, seed):
    """Table IV: the accuracy of each of ``episodes`` k-shot episodes (seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.searchsorted(np.unique(labels), labels)  # the episode's classes as 0..n-1
    accuracies = []
    for _ in range(episodes):
        references, queries = episode_split(labels, shots, rng)
        predictions, _, _ = reference_predictions(embeddings[references], labels[references],
                                                  embeddings[queries], None)
        accuracies.append(float(np.mean(predictions == labels[queries])))
    return np.asarray(accuracies)
