"""The learning rate over a run: the paper's constant rate, or linear warm-up then cosine decay.

Table I trains with a constant Adam rate of 5e-4, the default (``--lr_schedule=constant``). With
few labelled images a constant rate leaves a run wherever its last small batches put it: test
accuracy swings by several points between neighbouring step counts (BENCHMARKS.md, "Learning
curves"). The small-data recipe (``configs/small_data.cfg``, :data:`scl_amp_tf.recipes.SCHEDULE`)
decays the rate along a half cosine to 0 at the last step (Loshchilov & Hutter, SGDR, 2017; the
schedule of SimCLR and of most contrastive training): the last steps average out the noise of
single small batches instead of stopping on one of them. ``--warmup_fraction`` (0 in the recipe)
first raises the rate linearly from 0 over that fraction of the steps.

The schedule is a function of the optimizer's step count, which the checkpoint restores, so an
interrupted run resumes on the same curve. It is computed from the run's total steps
(``--epochs`` x steps per epoch): continuing a finished run with a larger ``--epochs`` stretches
the curve (the rate rises again), a restart schedule rather than the one-shot curve.
"""
from __future__ import annotations

import keras

SCHEDULES = ("constant", "cosine")


def learning_rate(schedule: str, peak: float, total_steps: int | None = None, warmup_fraction: float = 0.0):
    """The ``learning_rate`` argument of a Keras optimizer.

    ``constant``: ``peak`` at every step. ``cosine``: 0 -> ``peak`` linearly over
    ``round(warmup_fraction * total_steps)`` steps, then ``peak * (1 + cos(pi * t)) / 2`` for the
    fraction ``t`` of the remaining steps done, reaching 0 at ``total_steps``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"--lr_schedule={schedule!r} must be one of {', '.join(SCHEDULES)}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"--warmup_fraction={warmup_fraction} must lie in [0, 1)")
    if schedule == "constant":
        return peak
    if not total_steps or total_steps < 1:
        raise ValueError("a cosine schedule needs the run's total number of steps")
    warmup = int(round(warmup_fraction * total_steps))
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total_steps)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(total_steps - warmup, 1),
                                                  warmup_target=peak, warmup_steps=warmup)
