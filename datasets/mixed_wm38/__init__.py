"""TFDS dataset folder for MixedWM38 (`mixed_wm38`); the builder is in `mixed_wm38_dataset_builder.py`."""
