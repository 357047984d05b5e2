"""TFDS dataset builders of scl-amp-tf, installed as `scl_amp_tf.tfds_datasets`.

Importing this package registers the builders `neu` (NEU-CLS steel surface
defects) and `mixed_wm38` (MixedWM38 mixed-type wafer maps) with TFDS, so that
`tfds.builder('neu')` and `tfds.load('mixed_wm38', ...)` work afterwards. Both
need a manual download (see each folder's README.md).

Each sub-folder is laid out as `tfds new` makes it, so the command line works
on the folders too, e.g.
`tfds build datasets/neu --manual_dir=/path/to/NEU-CLS`.
"""

from .mixed_wm38 import mixed_wm38_dataset_builder
from .neu import neu_dataset_builder

__all__ = ['mixed_wm38_dataset_builder', 'neu_dataset_builder']
