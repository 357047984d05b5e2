"""The small-data recipe (issue #15) as settings, in one place.

``configs/small_data.cfg`` gives ``train`` these settings as flags (a test keeps the two equal),
and ``reproduce`` trains the tables' "SCL-AMP, recommended recipe" rows with :data:`CURES` on top
of the budget's backbone and step count. Every entry is a rule that holds for any folder of
images, chosen on training-only signals; BENCHMARKS.md ("Small data") has the measurements.

* ``arc_on_views``: L_arc (Eq. 4) on the two augmented views as well as the original image. With
  a few images per class, L_arc on the original alone memorises them.
* ``crop_scale_min="auto"``: mild crops for images in a fixed frame (wafer maps), the paper's
  crops for free textures (:func:`scl_amp_tf.augmentation.auto_crop_scale_min`).
* ``backbone="resnet_tiny"``: on a CPU, more steps of a small network beat fewer of a large one.
* ``steps``: one step budget for any number of images, where the learning curves of both methods
  have flattened.
"""
from __future__ import annotations

CURES = {"arc_on_views": True, "crop_scale_min": "auto"}
SMALL_DATA = {**CURES, "backbone": "resnet_tiny", "steps": 3200}
