"""The LiteRT edge runner (``edge_classify.py``), importable as ``scl_amp_tf.edge``."""
