"""The k-shot reference database (section IV.A) against an explicit mean-of-cosines loop."""
import numpy as np
import pytest

from scl_amp_tf.reference import ReferenceDatabase, class_prototype, sample_references


def _mean_cosine_loop(queries, refs, labels, num_classes):
    out = np.zeros((len(queries), num_classes))
    for q_i, q in enumerate(queries):
        for c in range(num_classes):
            sims = [np.dot(q, r) / (np.linalg.norm(q) * np.linalg.norm(r))
                    for r, label in zip(refs, labels) if label == c]
            out[q_i, c] = np.mean(sims)
    return out


def test_scores_are_mean_cosine_similarity():
    rng = np.random.default_rng(0)
    refs, labels = rng.normal(size=(20, 8)) * rng.uniform(0.1, 5, (20, 1)), rng.integers(0, 4, 20)
    labels[:4] = np.arange(4)
    queries = rng.normal(size=(7, 8))
    db = ReferenceDatabase.from_embeddings(refs, labels)
    np.testing.assert_allclose(db.scores(queries), _mean_cosine_loop(queries, refs, labels, 4), atol=1e-5)
    np.testing.assert_array_equal(db.predict(queries), np.argmax(_mean_cosine_loop(queries, refs, labels, 4), 1))


def test_normalised_prototypes_score_the_cosine_to_the_mean_direction():
    """The ``normalised`` rule: the cosine between the query and the mean of the class's normalised
    references, by an explicit loop; a tight class of one reference no longer outscores a spread one."""
    rng = np.random.default_rng(4)
    refs, labels = rng.normal(size=(20, 8)) * rng.uniform(0.1, 5, (20, 1)), rng.integers(0, 4, 20)
    labels[:4] = np.arange(4)
    queries = rng.normal(size=(7, 8))
    db = ReferenceDatabase.from_embeddings(refs, labels).normalised()
    expected = np.zeros((7, 4))
    for c in range(4):
        mean = np.mean([r / np.linalg.norm(r) for r, label in zip(refs, labels) if label == c], axis=0)
        for q_i, q in enumerate(queries):
            expected[q_i, c] = np.dot(q, mean) / (np.linalg.norm(q) * np.linalg.norm(mean))
    np.testing.assert_allclose(db.scores(queries), expected, atol=1e-5)
    for c in range(4):
        np.testing.assert_allclose(class_prototype(refs[labels == c], "normalised"), db.prototypes[c], atol=1e-6)
        np.testing.assert_allclose(class_prototype(refs[labels == c]),
                                   ReferenceDatabase.from_embeddings(refs, labels).prototypes[c], atol=1e-6)
    # Two references 90 degrees apart (their mean has length 0.71) against one: a query nearer the
    # pair's mean direction (cosine 0.78, against 0.62 to the single) goes to the pair only under
    # "normalised" (under "mean", 0.55 against 0.62).
    spread, single = np.array([[1.0, 0.99], [1.0, -0.99]]), np.array([[0.0, 1.0]])
    both = ReferenceDatabase.from_embeddings(np.r_[spread, single], [0, 0, 1])
    query = np.array([[1.0, 0.8]])
    assert both.predict(query)[0] == 1 and both.normalised().predict(query)[0] == 0
    mean_db = ReferenceDatabase.from_embeddings(refs, labels)
    assert mean_db.with_rule("mean") is mean_db
    np.testing.assert_array_equal(mean_db.with_rule("normalised").prototypes, db.prototypes)
    for wrong in (lambda: class_prototype(refs, "median"), lambda: mean_db.with_rule("median")):
        with pytest.raises(ValueError, match="must be one of mean, normalised"):
            wrong()


def test_a_reference_predicts_its_own_class_when_classes_are_separated():
    rng = np.random.default_rng(1)
    centres = np.eye(3, 16) * 10
    labels = np.repeat(np.arange(3), 5)
    refs = centres[labels] + rng.normal(size=(15, 16))
    db = ReferenceDatabase.from_embeddings(refs, labels, ["a", "b", "c"])
    np.testing.assert_array_equal(db.predict(refs), labels)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    db = ReferenceDatabase.from_embeddings(rng.normal(size=(6, 4)), [0, 1, 2, 0, 1, 2], ["x", "y", "z"])
    db.save(tmp_path / "db.npz")
    loaded = ReferenceDatabase.load(tmp_path / "db.npz")
    assert loaded.class_names == ("x", "y", "z")
    q = rng.normal(size=(3, 4))
    np.testing.assert_allclose(loaded.scores(q), db.scores(q))
    assert [p.name for p in tmp_path.iterdir()] == ["db.npz"]  # no temporary file left behind


def test_errors():
    with pytest.raises(ValueError, match="No reference for class"):
        ReferenceDatabase.from_embeddings(np.ones((2, 3)), [0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        ReferenceDatabase.from_embeddings(np.ones((2, 3)), [0])


def test_sample_references_k_per_class():
    labels = np.repeat(np.arange(4), 10)
    idx = sample_references(labels, 3, seed=0)
    assert np.all(np.bincount(labels[idx]) == 3)
    assert not np.array_equal(idx, sample_references(labels, 3, seed=1))
    np.testing.assert_array_equal(idx, sample_references(labels, 3, seed=0))
