"""Evaluation of a trained run: accuracy, per-class accuracy, confusion matrix, the k-shot
reference database of section IV.A, few-shot episodes (Table IV) and open-set rejection.

Everything here works on NumPy arrays of labels, predictions, scores and embeddings, so each
function can be checked against a direct computation; :mod:`scl_amp_tf.evaluate` is the
command line that feeds it a run's model and data.

* Reference-database inference (section IV.A): k references per class drawn at random from the
  training set (:func:`scl_amp_tf.reference.sample_references`, seeded), a query's score for a
  class is its mean cosine similarity to the class's references, the prediction the best class.
* Few-shot (section IV.B.2, Table IV): classes never seen in training, k references per class
  drawn per episode, every other image of those classes is a query (:func:`episode_split`
  never puts a reference among its own queries).
* Open-set rejection (ours, beyond the paper): a query whose best mean similarity lies under a
  threshold is reported as an unknown defect. ``auto`` calibrates the threshold on references
  the network did not fit (a run's validation images): each one's best score over the classes,
  its own class's prototype computed *without* it (leave-one-out, so it is scored like an unseen
  image), and the threshold is a low quantile of those (default 5 %: about 95 % of known-class
  images accepted). :func:`open_set_auroc`
  measures known-vs-unknown separation without any threshold.
"""
from __future__ import annotations

import textwrap

import numpy as np

from scl_amp_tf.reference import ReferenceDatabase, l2_normalize

UNKNOWN = -1  # the prediction of a rejected query
DEFAULT_REJECT_QUANTILE = 0.05


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


def leave_one_class_out_auroc(reference_embeddings, reference_labels, query_embeddings, query_labels):
    """Open-set rejection on a closed test set: each class in turn is taken out of the reference
    database, its test images become queries of an unknown defect, the other classes' test images
    stay known queries; the score is the best mean cosine similarity (what the reject threshold
    cuts). Returns ``{class id: AUROC of known vs unknown}`` (scikit-learn's ``roc_auc_score``)."""
    from sklearn import metrics

    out = {}
    for c, best in left_out_best_scores(reference_embeddings, reference_labels, query_embeddings):
        known = query_labels != c
        if known.all() or not known.any():
            continue
        out[c] = float(metrics.roc_auc_score(known.astype(int), best))
    return out


def left_out_best_scores(reference_embeddings, reference_labels, query_embeddings):
    """For each class ``c`` of the references (but a last one): ``(c, best scores [N])``, every
    query's best mean cosine similarity with ``c`` taken out of the reference database, i.e. as
    if ``c`` were a defect type never enrolled (the score the reject threshold cuts)."""
    for c in np.unique(reference_labels):
        keep = reference_labels != c
        if not keep.any():
            continue
        _, remaining = np.unique(reference_labels[keep], return_inverse=True)  # ids 0..K-2 for the database
        _, scores, _ = reference_predictions(reference_embeddings[keep], remaining, query_embeddings, None)
        yield int(c), scores.max(axis=1)


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
                          threshold=None):
    """Section IV.A: ``(predictions, scores, database)`` of queries against the references.

    ``threshold``: queries whose best mean cosine similarity is below it are ``UNKNOWN``.
    """
    database = ReferenceDatabase.from_embeddings(reference_embeddings, reference_labels, class_names)
    scores = database.scores(query_embeddings)
    return decide(scores, threshold), scores, database


def leave_one_out_best_scores(embeddings, labels, among=None):
    """Each reference's best score over the classes as if it had not been a reference: the mean
    cosine similarity to every class's references, its own class's taken without it, maximised
    over the classes. That is what the reject rule compares with the threshold for a new image
    (:func:`decide`), so a threshold at the ``q`` quantile of these accepts about ``1 - q`` of
    known-class images like them. Classes with a single reference are left out; ``among`` (a
    boolean mask): only those references' scores (the others still count in the class means).
    """
    z = l2_normalize(embeddings).astype(np.float64)
    labels = np.asarray(labels, np.int64)
    among = np.ones(len(labels), bool) if among is None else np.asarray(among, bool)
    classes = np.unique(labels)
    counts = np.array([np.sum(labels == c) for c in classes], np.float64)
    sums = np.stack([z[labels == c].sum(axis=0) for c in classes])
    out = []
    for k, label in enumerate(classes):
        chosen = np.flatnonzero((labels == label) & among)
        if counts[k] < 2 or not len(chosen):
            continue
        scores = z[chosen] @ (sums / counts[:, None]).T  # [n, classes]: every class with all its references
        scores[:, k] = np.sum(z[chosen] * (sums[k] - z[chosen]), axis=1) / (counts[k] - 1)  # own class without it
        out.append(scores.max(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def parse_threshold(value):
    """``none`` -> None, ``auto`` -> "auto", a number -> float; anything else is a ValueError."""
    value = str(value).strip().lower()
    if value in ("none", ""):
        return None
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--reject_threshold={value!r} must be none, auto or a number (a cosine "
                         "similarity in [-1, 1]).") from None


def calibrate_threshold(embeddings, labels, quantile=DEFAULT_REJECT_QUANTILE, held_out=None):
    """The conformal ``quantile`` (:func:`conformal_quantile`) of the references' leave-one-out best
    scores (:func:`leave_one_out_best_scores`): at least ``1 - quantile`` of known-class images
    like them are then accepted, on average. (The similarity to the own class alone, which this
    used until 2026-12-02, is lower than the best score for every image that resembles another
    class more, so its threshold accepted nearly every known image; BENCHMARKS.md.)

    ``held_out`` (boolean mask): calibrate on these references only, images the network did not
    fit (a run's validation split). Images it fitted score far higher than new images of their
    class, so a threshold calibrated on them rejects most known-class test images; use
    :func:`scl_amp_tf.run_folder.auto_reject_threshold` for a run.
    """
    similarities = leave_one_out_best_scores(embeddings, labels, held_out)
    if len(similarities) == 0:
        raise ValueError("--reject_threshold=auto needs two references of one class at least "
                         "(it calibrates on each reference against the others of its class).")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"--reject_quantile={quantile} must lie in [0, 1).")
    return conformal_quantile(similarities, quantile)


def conformal_quantile(scores, quantile):
    """The ``k``-th smallest of ``n`` scores with ``k = floor((n + 1) * quantile)`` (split conformal
    prediction, e.g. Angelopoulos and Bates 2021): a new image exchangeable with the ``n`` scores
    falls below it with probability at most ``quantile``, so at least ``1 - quantile`` of known
    images are accepted on average, however few the calibration images (an interpolated quantile
    promises that only for large ``n``). Fewer than ``1 / quantile - 1`` scores promise nothing
    (``k = 0``): ValueError."""
    scores = np.sort(np.asarray(scores, np.float64))
    k = int(np.floor((len(scores) + 1) * quantile + 1e-9))
    if k < 1:
        needed = int(np.ceil(1 / quantile - 1 - 1e-9)) if quantile > 0 else None
        raise ValueError(f"--reject_threshold=auto with --reject_quantile={quantile} needs "
                         f"{needed if needed else 'infinitely many'} calibration images at least; there are "
                         f"{len(scores)}. Hold out more training images (--validation_fraction), raise "
                         "--reject_quantile, or give the threshold as a number.")
    return float(scores[k - 1])


def auroc(positive_scores, negative_scores):
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

    Computed from ranks (the Mann-Whitney U statistic), O(n log n).
    """
    pos = np.asarray(positive_scores, np.float64).reshape(-1)
    neg = np.asarray(negative_scores, np.float64).reshape(-1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs positive and negative scores.")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both), np.float64)
    sorted_scores = both[order]
    # average ranks of tied scores (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(both)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


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


def open_set_auroc(embeddings, labels, shots, episodes, seed, threshold=None):
    """Known vs unknown defect types in the few-shot setting (ours, beyond the paper).

    Each episode leaves every class out in turn: the database holds ``shots`` references of each
    other class, its queries are the other images of those classes (known) and every image of
    the left-out class (unknown, a defect type neither trained on nor enrolled). The score of a
    query is its best mean cosine similarity. Returns the AUROC of each (episode, left-out class)
    and, with ``threshold``, the fractions of known queries accepted and unknown ones rejected.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 3:
        raise ValueError("Open-set episodes need three classes at least (two known, one unknown).")
    aurocs, accepted, rejected = [], [], []
    for _ in range(episodes):
        for unknown in classes:
            known_idx = np.flatnonzero(labels != unknown)
            refs, queries = episode_split(labels[known_idx], shots, rng)
            refs, queries = known_idx[refs], known_idx[queries]
            remap = np.searchsorted(np.setdiff1d(classes, [unknown]), labels[refs])
            database = ReferenceDatabase.from_embeddings(embeddings[refs], remap)
            known_scores = database.scores(embeddings[queries]).max(axis=1)
            unknown_scores = database.scores(embeddings[labels == unknown]).max(axis=1)
            aurocs.append(auroc(known_scores, unknown_scores))
            if threshold is not None:
                accepted.append(float(np.mean(known_scores >= threshold)))
                rejected.append(float(np.mean(unknown_scores < threshold)))
    result = {"auroc": np.asarray(aurocs)}
    if threshold is not None:
        result.update(known_accepted=np.asarray(accepted), unknown_rejected=np.asarray(rejected))
    return result
