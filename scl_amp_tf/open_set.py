"""Open-set rejection (ours, beyond the paper): a threshold on the best score, its calibration, AUROC.

A query whose best mean cosine similarity to the classes' references lies under a threshold is
reported as an unknown defect (:func:`scl_amp_tf.evaluation.decide`). ``auto`` calibrates the
threshold on references the network did not fit (a run's validation images): each one's best
score over the classes, its own class's prototype computed *without* it (leave-one-out, so it is
scored like an unseen image), and the threshold is their conformal quantile (default 5 %: at
least about 95 % of known-class images accepted). :func:`open_set_auroc` (few-shot episodes) and
:func:`leave_one_class_out_auroc` (a closed test set) measure known-vs-unknown separation without
any threshold.
"""
from __future__ import annotations

import numpy as np

from scl_amp_tf.evaluation import episode_split, reference_predictions
from scl_amp_tf.reference import ReferenceDatabase, check_prototype_rule, l2_normalize

DEFAULT_REJECT_QUANTILE = 0.05


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


def calibrate_threshold(embeddings, labels, quantile=DEFAULT_REJECT_QUANTILE, held_out=None, prototypes="mean"):
    """The conformal ``quantile`` (:func:`conformal_quantile`) of the references' leave-one-out best
    scores (:func:`leave_one_out_best_scores`): at least ``1 - quantile`` of known-class images
    like them are then accepted, on average. (Not the similarity to the own class alone: the rule
    compares the best score over the classes, which is higher for every image that resembles
    another class more, so a threshold on the own-class similarity accepts nearly every image.)

    ``held_out`` (boolean mask): calibrate on these references only, images the network did not
    fit (a run's validation split). Images it fitted score far higher than new images of their
    class, so a threshold calibrated on them rejects most known-class test images; use
    :func:`scl_amp_tf.run_folder.auto_reject_threshold` for a run. ``prototypes``: the rule the
    scores are compared under (:data:`scl_amp_tf.reference.PROTOTYPE_RULES`).
    """
    similarities = leave_one_out_best_scores(embeddings, labels, held_out, prototypes)
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
    """Area under the ROC curve, P(score of a positive > score of a negative) with ties counting
    1/2 (scikit-learn's ``roc_auc_score``, positives labelled 1)."""
    from sklearn import metrics

    pos = np.asarray(positive_scores, np.float64).reshape(-1)
    neg = np.asarray(negative_scores, np.float64).reshape(-1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs positive and negative scores.")
    truth = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    return float(metrics.roc_auc_score(truth, np.r_[pos, neg]))


def leave_one_out_best_scores(embeddings, labels, among=None, prototypes="mean"):
    """Each reference's best score over the classes as if it had not been a reference: the mean
    cosine similarity to every class's references, its own class's taken without it, maximised
    over the classes. That is what the reject rule compares with the threshold for a new image
    (:func:`decide`), so a threshold at the ``q`` quantile of these accepts about ``1 - q`` of
    known-class images like them. Classes with a single reference are left out; ``among`` (a
    boolean mask): only those references' scores (the others still count in the class means).
    ``prototypes="normalised"``: every class mean (the own one without the reference too) at unit
    length, as a database under that rule scores (:meth:`ReferenceDatabase.normalised`).
    """
    check_prototype_rule(prototypes)

    def rule(means):  # in float64, as the scores here
        return l2_normalize(means, dtype=np.float64) if prototypes == "normalised" else means

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
        scores = z[chosen] @ rule(sums / counts[:, None]).T  # [n, classes]: every class with all its references
        scores[:, k] = np.sum(z[chosen] * rule((sums[k] - z[chosen]) / (counts[k] - 1)), axis=1)  # own without it
        out.append(scores.max(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def leave_one_class_out_auroc(reference_embeddings, reference_labels, query_embeddings, query_labels,
                              prototypes="mean"):
    """Open-set rejection on a closed test set: each class in turn is taken out of the reference
    database, its test images become queries of an unknown defect, the other classes' test images
    stay known queries; the score is the best score under the ``prototypes`` rule (what the reject
    threshold cuts). Returns ``{class id: AUROC of known vs unknown}``."""
    out = {}
    for c, best in left_out_best_scores(reference_embeddings, reference_labels, query_embeddings, prototypes):
        known = query_labels != c
        if known.all() or not known.any():
            continue
        out[c] = auroc(best[known], best[~known])
    return out


def left_out_best_scores(reference_embeddings, reference_labels, query_embeddings, prototypes="mean"):
    """For each class ``c`` of the references (but a last one): ``(c, best scores [N])``, every
    query's best score (mean cosine similarity, or under ``prototypes``) with ``c`` taken out of the
    reference database, i.e. as if ``c`` were a defect type never enrolled (the score the reject
    threshold cuts)."""
    for c in np.unique(reference_labels):
        keep = reference_labels != c
        if not keep.any():
            continue
        _, remaining = np.unique(reference_labels[keep], return_inverse=True)  # ids 0..K-2 for the database
        _, scores, _ = reference_predictions(reference_embeddings[keep], remaining, query_embeddings, None,
                                             prototypes=prototypes)
        yield int(c), scores.max(axis=1)


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
