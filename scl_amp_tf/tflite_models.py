"""LiteRT (TFLite) models of an encoder for the edge: fp32, fp16, int8 and int16x8, builtin ops
only (the pip LiteRT runtime has no Flex ops).

Each takes pixels ``[N, S, S, C]`` and gives the embedding; resizing stays with the runner
(``export/edge/edge_classify.py``). int8 converts ``quantization.int8_edge_model``, whose ranges
are chosen on representative training images.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import quantization
from scl_amp_tf.serving_graph import ExportError

TFLITE_VARIANTS = ("fp32", "fp16", "int8", "int16x8")
TFLITE_DEFAULT = ("fp32", "fp16", "int8")  # what --formats=tflite writes; int16x8 on request
QUANTIZED = ("int8", "int16x8")  # calibrated integer variants: their parity is reported, not enforced


def edge_model(encoder, normalize=True):
    """Pixels float32 ``[N, S, S, C]`` in 0..255 -> embedding (L2-normalised if ``normalize``):
    what LiteRT runs.

    Resizing stays outside (the edge runner does it with Pillow): TFLite has no builtin for the
    antialiased resize of training, and a camera delivers one size anyway. The int16x8 converter
    has no 16-bit ``SQUARE``, so that variant leaves the normalisation to the runner (as int8
    does: ``quantization.int8_edge_model``).
    """
    pixels = keras.Input(encoder.input_shape[1:], dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(pixels)
    z = encoder(x)
    if normalize:
        z = keras.layers.UnitNormalization(name="l2_normalize")(z)
    return keras.Model(pixels, z, name="edge_embedder")


def tflite_converter_settings(variant, representative_images=None):
    """Converter settings of one variant; builtin ops only (edge runtimes have no Flex ops)."""
    if variant == "fp32":
        return {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if variant == "fp16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
                                "supported_types": [tf.float16]}}
    if variant in QUANTIZED:
        if representative_images is None or len(representative_images) == 0:
            raise ExportError(f"{variant} needs representative training images for calibration.")
        images = np.asarray(representative_images, np.float32)

        def representative_dataset():
            for image in images:
                yield [image[None]]
        calibrated = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative_dataset}
        if variant == "int8":  # full-integer: every op int8 (conversion fails otherwise); uint8 in, float32 out
            return {**calibrated, "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                    "inference_input_type": tf.uint8}
        # int8 weights, int16 activations: builtin kernels, far closer to float than int8 (BENCHMARKS.md),
        # but XNNPACK does not accelerate them; float32 pixels in, float32 out.
        return {**calibrated, "target_spec": {"supported_ops": [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]}}
    raise ExportError(f"Unknown TFLite variant {variant!r}; use one of {', '.join(TFLITE_VARIANTS)}.")


def write_tflite(encoder, path, variant, representative_images=None):
    """Converts through Keras's LiteRT export (ExportArchive -> SavedModel -> TFLiteConverter).
    int8 converts ``quantization.int8_edge_model``: the same function with batch norm folded, an
    input path that keeps every pixel level, and int8 ranges chosen on the representative images
    for the least rounding error."""
    settings = tflite_converter_settings(variant, representative_images)  # checks the images first
    model = (quantization.int8_edge_model(encoder, np.asarray(representative_images, np.float32) / 255.0)
             if variant == "int8" else edge_model(encoder, normalize=variant != "int16x8"))
    model.export(path, format="litert", verbose=False, **settings)


def tflite_op_types(path):
    """``{op name: sorted output dtypes}`` of a .tflite file (shows which ops stay float)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=path,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    ops = {}
    for op in interpreter._get_ops_details():
        ops.setdefault(op["op_name"], set()).update(dtypes[i] for i in op["outputs"] if i in dtypes)
    return {name: sorted(types) for name, types in sorted(ops.items())}
