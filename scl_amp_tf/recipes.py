"""The small-data recipe (issue #15) as settings, in one place.

``configs/small_data.cfg`` gives ``train`` these settings as flags (a test keeps the two equal),
and ``reproduce`` trains its tables' rows with them on top of the budget's backbone and step
count. Every entry is a rule that holds for any folder of images; BENCHMARKS.md ("Small data")
has the measurements behind each.

:data:`FITTED`, settings fitted to the images, good for any method (the tables' CE rows get them
too, so that CE is the strongest baseline measured):

* ``crop_scale_min="auto"``: mild crops for images in a fixed frame (wafer maps), the paper's
  crops for free textures (:func:`scl_amp_tf.augmentation.auto_crop_scale_min`).
* ``stem="auto"``: below 96 px, a ResNet stem that keeps half the resolution for the first block
  instead of a quarter (:func:`scl_amp_tf.models.auto_stem`): small defects of small images
  survive to where the network can see them.

:data:`CURES`, SCL-AMP's own:

* ``arc_on_views``: L_arc (Eq. 4) on the two augmented views as well as the original image. With
  a few images per class, L_arc on the original alone memorises them.

:data:`SCHEDULE`, for any method trained on a step budget (the tables' CE rows get it too):

* ``lr_schedule="cosine"``: the rate decays along a half cosine to 0 at the last step
  (:mod:`scl_amp_tf.schedules`). With a few dozen images a constant rate leaves a run wherever its
  last small batches put it (test accuracy swings by several points between neighbouring step
  counts); a rate that ends at 0 ends the run in a flat place, so the result depends much less on
  the exact step count.

And for training on a CPU: ``backbone="resnet_tiny"`` (more steps of a small network beat fewer
of a large one) and ``steps``, one step budget for any number of images: the fewest steps from
which doubling them adds less than half a point of test accuracy for both SCL-AMP and CE under the
decaying rate (BENCHMARKS.md, "Learning curves under the decaying rate"; CE flattens later than
SCL-AMP).
"""
from __future__ import annotations

FITTED = {"crop_scale_min": "auto", "stem": "auto"}
CURES = {"arc_on_views": True}
SCHEDULE = {"lr_schedule": "cosine"}
SMALL_DATA = {**CURES, **FITTED, **SCHEDULE, "backbone": "resnet_tiny", "steps": 12800}
