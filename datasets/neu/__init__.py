"""TFDS dataset folder for NEU-CLS (`neu`); the builder is in `neu_dataset_builder.py`."""
