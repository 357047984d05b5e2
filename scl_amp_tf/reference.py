"""The k-shot reference database of section IV.A.

Reference images drawn from the training set are embedded; a query's score for a class is the
mean cosine similarity between the query and that class's references, and the prediction is
the class with the highest mean. Since ``mean_k cos(q, r_k) = q_hat . mean_k(r_hat_k)``, the
database keeps one prototype per class (the mean of its L2-normalised references), so scoring is
one matrix product; this is exact, not an approximation.

That mean is shorter the more a class's references differ, so for images alike a class of one
reference (length 1) scores higher than a class of many varied ones (ours, beyond the paper). The
``normalised`` prototype rule scales every prototype to unit length: a score is then the cosine to
the class's mean direction, whatever the number and spread of its references. ``export
--prototypes`` chooses the rule; ``enroll`` follows the exported one.
"""
from __future__ import annotations

import json
import os
import numpy as np

from scl_amp_tf.files import atomic_write

PROTOTYPE_RULES = ("mean", "normalised")  # the mean of the normalised references; that mean at unit length


def l2_normalize(x, eps=1e-12, dtype=np.float32):
    x = np.asarray(x, dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def check_prototype_rule(rule):
    if rule not in PROTOTYPE_RULES:
        raise ValueError(f"prototypes={rule!r} must be one of {', '.join(PROTOTYPE_RULES)}.")


def class_prototype(embeddings, rule="mean"):
    """One class's prototype ``[d]`` from its references' embeddings ``[M, d]`` under ``rule``
    (:data:`PROTOTYPE_RULES`): the mean of their normalised embeddings, or that mean at unit length."""
    check_prototype_rule(rule)
    prototype = l2_normalize(embeddings).mean(axis=0)
    return l2_normalize(prototype) if rule == "normalised" else prototype


class ReferenceDatabase:
    """Class prototypes ``[num_classes, d]`` built from labelled reference embeddings."""

    def __init__(self, prototypes, counts, class_names):
        self.prototypes = np.asarray(prototypes, np.float32)
        self.counts = np.asarray(counts, np.int64)
        self.class_names = tuple(str(c) for c in class_names)
        if len(self.class_names) != len(self.prototypes):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.prototypes)} classes.")

    @classmethod
    def from_embeddings(cls, embeddings, labels, class_names=None):
        """Builds the database from reference embeddings ``[M, d]`` and class ids ``[M]``.

        Every class in ``class_names`` (default: ``0 .. max(labels)``) needs one reference at least.
        """
        embeddings = l2_normalize(embeddings)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(embeddings) != len(labels):
            raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels.")
        if len(labels) == 0:
            raise ValueError("A reference database needs at least one reference.")
        num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"Labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}.")
        counts = np.bincount(labels, minlength=num_classes)
        names = class_names if class_names is not None else [str(i) for i in range(num_classes)]
        missing = [names[i] for i in np.flatnonzero(counts == 0)]
        if missing:
            raise ValueError(f"No reference for class(es) {', '.join(map(str, missing))}.")
        sums = np.zeros((num_classes, embeddings.shape[1]), np.float64)
        np.add.at(sums, labels, embeddings)
        return cls((sums / counts[:, None]).astype(np.float32), counts, names)

    def normalised(self):
        """The same classes with every prototype at unit length (the ``normalised`` rule)."""
        return ReferenceDatabase(l2_normalize(self.prototypes), self.counts, self.class_names)

    def with_rule(self, rule):
        """This database (built by the ``mean`` rule) as ``rule`` (:data:`PROTOTYPE_RULES`) scores."""
        check_prototype_rule(rule)
        return self.normalised() if rule == "normalised" else self

    @property
    def num_classes(self):
        return len(self.class_names)

    def scores(self, queries):
        """``[N, num_classes]``: mean cosine similarity of each query to each class's references (to
        their mean direction for a :meth:`normalised` database)."""
        return l2_normalize(queries) @ self.prototypes.T

    def predict(self, queries):
        """Class id with the highest mean similarity, ``[N]``."""
        return np.argmax(self.scores(queries), axis=1)

    def save(self, path):
        """Writes an ``.npz`` file atomically (a temporary file renamed into place)."""
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, prototypes=self.prototypes, counts=self.counts,
                         class_names=np.array(json.dumps(self.class_names)))
        atomic_write(os.fspath(path), write)

    @classmethod
    def load(cls, path):
        with np.load(path) as f:
            return cls(f["prototypes"], f["counts"], json.loads(str(f["class_names"])))


def sample_references(labels, shots_per_class, seed):
    """Indices of ``shots_per_class`` references per class drawn at random (all if fewer)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.extend(rng.choice(members, size=min(shots_per_class, len(members)), replace=False))
    return np.sort(np.asarray(chosen, np.int64))
