"""Losses of the SCL-AMP framework (paper Section III, Eq. 1, 2 and 4).

* :func:`self_contrastive_loss` / :func:`self_contrastive_per_example`: the
  self-contrastive loss ``L_Con`` of the SCL module, Eq. (2), built from the
  NT-Xent pair loss of Eq. (1).
* :func:`arc_margin_loss`: the per-example Arc loss ``L_Arc`` of the AMP module,
  Eq. (4), i.e. softmax cross-entropy on the logits produced by
  :class:`scl_amp_tf.layers.ArcMargin`.

All losses are computed in float32 whatever the input dtype (mixed precision).

Distribution strategies
-----------------------
The per-example functions return a ``[N]`` vector over the *local* batch so that
the caller can reduce it with ``tf.nn.compute_average_loss(per_example,
global_batch_size=...)`` inside ``strategy.run``.  For the contrastive loss the
negatives of Eq. (1) (the ``2N`` vectors of the denominator) are taken from the
*global* batch when the loss is computed in a replica context with more than
one replica: the embeddings of all replicas are gathered with a differentiable
``all_reduce(SUM)`` of zero-padded blocks (as SimCLR's TF2 objective does), the
anchors stay the local rows, and the column indices of the positive and of the
excluded self-similarity are offset by the replica's position in the gathered
batch.  The per-example vectors concatenated over the replicas are then equal to
the single-device vector for the same global batch, hence the loss and (after
the usual SUM all-reduce of the gradients) the gradients do not depend on the
number of replicas.  Local batches of different sizes (e.g. the last, partial
batch of a dataset without ``drop_remainder``) are supported: blocks are padded
to the largest local batch and the padding columns are masked out.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "self_contrastive_per_example",
    "self_contrastive_loss",
    "arc_margin_loss",
]

# Added to masked logits before logsumexp.  A large finite number (not -inf,
# whose products with 0 give NaN): exp(-1e9 - max) underflows to exactly 0.
_MASK_VALUE = -1e9


def _l2_normalize(x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)


def _distributed_replica_context():
    """The replica context when running in one replica of several, else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: plain computation on what we got
        return None
    if ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def _gather_global(ctx, stacked: tf.Tensor):
    """Gathers a local ``[n, ...]`` tensor from all replicas, differentiably.

    Each replica places its block, zero-padded to the largest local batch
    ``max_n``, into a zero tensor ``[R, max_n, ...]`` at its replica id and the
    tensors are summed with ``ReplicaContext.all_reduce`` (whose gradient is an
    all-reduce SUM of the upstream gradients, so every replica's block receives
    the gradient of the losses of all replicas).

    Returns:
      gathered: ``[R * max_n, ...]`` tensor, replica ``r``'s rows at
        ``r * max_n + k``.
      valid: ``[R * max_n]`` bool, False on padding rows.
      offset: int32 scalar, ``replica_id * max_n``: the row of this replica's
        first example in ``gathered``.
    """
    num_replicas = ctx.num_replicas_in_sync
    replica_id = tf.cast(
        tf.convert_to_tensor(ctx.replica_id_in_sync_group), tf.int32
    )
    local_n = tf.shape(stacked)[0]
    # Local batch sizes of all replicas (in float32: a plain, well supported
    # all-reduce dtype); not differentiable and not watched by any tape.
    sizes = ctx.all_reduce(
        tf.distribute.ReduceOp.SUM,
        tf.one_hot(replica_id, num_replicas, dtype=tf.float32)
        * tf.cast(local_n, tf.float32),
    )
    sizes = tf.cast(tf.round(sizes), tf.int32)
    max_n = tf.reduce_max(sizes)

    rank = len(stacked.shape)
    paddings = tf.concat(
        [[[0, max_n - local_n]], tf.zeros([rank - 1, 2], tf.int32)], axis=0
    )
    padded = tf.pad(stacked, paddings)
    full_shape = tf.concat([[num_replicas], tf.shape(padded)], axis=0)
    block = tf.scatter_nd(
        indices=tf.reshape(replica_id, [1, 1]),
        updates=padded[tf.newaxis],
        shape=full_shape,
    )
    gathered = ctx.all_reduce(tf.distribute.ReduceOp.SUM, block)
    gathered = tf.reshape(
        gathered, tf.concat([[-1], tf.shape(padded)[1:]], axis=0)
    )
    valid = tf.reshape(tf.sequence_mask(sizes, max_n), [-1])
    return gathered, valid, replica_id * max_n


def _pair_term(anchors, own_set, other_set, valid, offset, temperature, same_class=None):
    """Eq. (1) for local anchors ``a_k`` (rows of ``anchors``).

    The candidate set is ``concat(own_set, other_set)`` (``2M`` vectors, the
    global batches of the anchors' view and of the positives' view); the
    positive of anchor ``k`` is ``other_set[offset + k]`` and the excluded
    self-similarity (the indicator ``1[k != i]``) is ``own_set[offset + k]``.
    ``same_class`` (optional ``[n, M]`` bool): anchor ``k`` and global row ``c``
    share a class; such candidates are left out of the denominator (in both
    views), except the positive itself.
    All inputs are L2-normalised float32.  Returns ``[n]``.
    """
    m = tf.shape(own_set)[0]
    candidates = tf.concat([own_set, other_set], axis=0)  # [2M, d]
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    idx = offset + tf.range(tf.shape(anchors)[0])  # [n] global anchor rows
    self_mask = tf.one_hot(idx, 2 * m, on_value=True, off_value=False)
    invalid = tf.logical_not(tf.concat([valid, valid], axis=0))[tf.newaxis]
    excluded = tf.logical_or(self_mask, invalid)
    if same_class is not None:
        positive_mask = tf.one_hot(m + idx, 2 * m, on_value=True, off_value=False)
        same = tf.concat([same_class, same_class], axis=1)
        excluded = tf.logical_or(excluded, tf.logical_and(same, tf.logical_not(positive_mask)))
    masked = tf.where(excluded, tf.constant(_MASK_VALUE), logits)
    positive = tf.gather(logits, m + idx, axis=1, batch_dims=1)  # [n]
    return tf.reduce_logsumexp(masked, axis=1) - positive


def self_contrastive_per_example(
    z_n, z_i, z_j, temperature: float = 0.5, symmetric: bool = False, labels=None
) -> tf.Tensor:
    """Per-example self-contrastive loss of Eq. (2) (before the batch mean).

    ``L_Con = 1/(3N) sum_n [l(x_n, x_i) + l(x_n, x_j) + l(x_i, x_j)]``; this
    returns, for each row ``k``, ``(l_k(n, i) + l_k(n, j) + l_k(i, j)) / 3``
    where the pair loss of Eq. (1) is

        ``l_k(a, b) = -log( exp(sim(a_k, b_k)/tau)
                            / sum_{c in [a; b], c != a_k} exp(sim(a_k, c)/tau) )``

    with ``sim`` the cosine similarity and the denominator over the ``2N``
    vectors of both views except the anchor itself.  With ``symmetric=True``
    each pair term is ``(l_k(a, b) + l_k(b, a)) / 2`` (both directions, as in
    SimCLR).

    With ``labels`` (our extension, the direction the paper's section IV.D names
    as future work): the other images of the anchor's own class are left out of
    the denominator, in both views, so that the loss no longer pushes apart
    images that the Arc loss pulls together.  The positive stays.  With 20
    images per class and 6 classes, a batch of 32 holds about 5 same-class
    "negatives" per anchor; the plain Eq. (1) treats them as negatives.

    Computed in float32 with a masked ``logsumexp`` (stable for small
    temperatures such as 0.05).  In a replica context with more than one
    replica the denominators run over the global batch (see module docstring);
    reduce the result with ``tf.nn.compute_average_loss`` and the global batch
    size.

    Args:
      z_n, z_i, z_j: ``[N, d]`` embeddings of the original images and of their
        two augmented views (row ``k`` of each belongs to the same image).
      temperature: ``tau`` of Eq. (1).
      symmetric: also use the ``b -> a`` direction of each pair.
      labels: optional int class ids ``[N]``; see above.

    Returns:
      ``[N]`` float32 tensor.
    """
    z_n = _l2_normalize(tf.cast(z_n, tf.float32))
    z_i = _l2_normalize(tf.cast(z_i, tf.float32))
    z_j = _l2_normalize(tf.cast(z_j, tf.float32))
    temperature = tf.cast(temperature, tf.float32)

    ctx = _distributed_replica_context()
    if labels is not None:
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    if ctx is None:
        g_n, g_i, g_j = z_n, z_i, z_j
        g_labels = labels
        valid = tf.ones([tf.shape(z_n)[0]], tf.bool)
        offset = tf.constant(0, tf.int32)
    else:
        stacked = tf.stack([z_n, z_i, z_j], axis=1)  # [n, 3, d]: one collective
        gathered, valid, offset = _gather_global(ctx, stacked)
        g_n, g_i, g_j = tf.unstack(gathered, num=3, axis=1)
        g_labels = None
        if labels is not None:  # class ids are small integers: exact in float32
            gathered_labels, _, _ = _gather_global(ctx, tf.cast(labels, tf.float32))
            g_labels = tf.cast(tf.round(gathered_labels), tf.int32)
    same_class = None if labels is None else tf.equal(labels[:, None], g_labels[None, :])

    def pair(a, g_a, b, g_b):
        term = _pair_term(a, g_a, g_b, valid, offset, temperature, same_class)
        if symmetric:
            term = 0.5 * (term + _pair_term(b, g_b, g_a, valid, offset, temperature, same_class))
        return term

    return (
        pair(z_n, g_n, z_i, g_i)
        + pair(z_n, g_n, z_j, g_j)
        + pair(z_i, g_i, z_j, g_j)
    ) / 3.0


def self_contrastive_loss(
    z_n, z_i, z_j, temperature: float = 0.5, symmetric: bool = False, labels=None
) -> tf.Tensor:
    """Self-contrastive loss ``L_Con`` of Eq. (2): scalar float32.

    The mean over the batch of :func:`self_contrastive_per_example` (which
    implements the pair loss of Eq. (1)).  Under a multi-replica strategy this is
    the mean over the *local* rows (with global negatives); use the per-example
    function with ``tf.nn.compute_average_loss`` there instead.
    """
    return tf.reduce_mean(
        self_contrastive_per_example(z_n, z_i, z_j, temperature, symmetric, labels)
    )


def arc_margin_loss(logits_with_margin, labels) -> tf.Tensor:
    """Per-example Arc loss of Eq. (4): ``[N]`` float32.

    ``L_Arc`` is the softmax cross-entropy of the ArcMargin logits
    ``s*cos(theta_y + m)`` (target class) and ``s*cos(theta_j)`` (other
    classes), i.e. the output of ``ArcMargin(...)(embeddings, labels)``.

    Args:
      logits_with_margin: ``[N, num_classes]`` logits (any float dtype).
      labels: int class ids, shape ``[N]`` or ``[N, 1]``.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits_with_margin, tf.float32)
    )
