"""An int8 simulator: where LiteRT's int8 model loses the Keras model's answers (beyond the paper).

Post-training int8 (the converter's calibration on training images) flips some of the Keras
model's decisions on our trained models (measured in BENCHMARKS.md). To see why, and to try remedies in
seconds instead of a conversion each, this module rebuilds an encoder as LiteRT's int8 kernels
compute it, in Keras, with every rounding point switchable:

1. :func:`fold_batch_norm` merges every ``Conv2D -> BatchNormalization`` pair into one
   ``Conv2D`` with a bias: the same function at inference, and what the converter quantises
   (it folds batch norm the same way).
2. :func:`simulate_int8` wraps that model: weights rounded per output channel, symmetric, to
   [-127, 127] x max|w| / 127 (checked equal to the converter's); every tensor LiteRT stores in
   int8 (outputs of convolutions, dense layers, additions and pooling, after a fused ReLU)
   rounded per tensor over its calibrated range, with TF's fake-quant ops (zero exactly
   representable, as in LiteRT; Jacob et al. 2018). The input is exact, as in
   :func:`int8_edge_model`.
3. :func:`calibrate` sets those ranges from the calibration images through the float model:
   their min / max (``ranges="minmax"``, what the converter's representative dataset alone
   gives) or, by default and in the export, the part of that range whose int8 rounding has the
   least squared error over the values seen (``"mse"``: a histogram per tensor; a few outliers
   clipped, a finer step for all the rest; less embedding error on our trained models, BENCHMARKS.md).
4. :mod:`scl_amp_tf.int8_error_budget` (research, used by ``bench/`` and the tests; the export
   does not import it) measures the embedding error with everything rounded, with each tensor
   (or all weights, or all activations) exact: what each rounding point costs.

:func:`int8_edge_model` is the float model that the int8 converter gets (``exporting``): batch
norm folded, and an input path that keeps every pixel level. The training preprocessing maps the
256 grey levels to [-1, 1] (or subtracts the ImageNet mean), and no int8 grid holds those levels
exactly, since an int8 grid always holds zero; the converter also gave the separate ``/ 255``,
channel copy and affine ops ranges that rounded pixels to more than one grey level (BENCHMARKS.md). Here
one 1 x 1 convolution maps the pixels to ``s * (p - 128)``, which an int8 grid of step ``s``
holds exactly, the first convolution's bias absorbs the constant difference to the training
preprocessing, and both tensors' ranges are fixed for the converter (TF's fake-quant op with
fixed bounds), whatever the calibration images span. Every other int8 tensor's range is fixed the
same way, to the ``"mse"`` range of :func:`calibrate` (the converter would take the min / max).
Where the difference is too large to leave at the border that the first convolution reads
(ResNet-50's ImageNet mean), a constant correction is added after that convolution, whose output
is then rounded on the stem's own grid (:func:`_border_ranges`), so that the stem is still
rounded once inside the image.

Why one file of about 490 lines: the export builds its int8 model from the simulator's own parts
(the folded network, the ``"mse"`` ranges, the fixed input grid), so the two are one model of
LiteRT's int8 arithmetic, changed and tested together; what only research uses is in
:mod:`scl_amp_tf.int8_error_budget`.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from scl_amp_tf import models

# Layers whose output LiteRT does not re-quantise (it keeps the input's scale): no rounding point.
_PASS_THROUGH = ("InputLayer", "MaxPooling2D", "ZeroPadding2D", "Reshape", "Flatten", "Dropout",
                 "ImagePreprocessing")  # the int8 edge model's input path is exact (int8_edge_model)
_FUSABLE = ("Conv2D", "DepthwiseConv2D", "Dense", "Add")  # LiteRT fuses a following ReLU into these
HISTOGRAM_BINS = 8192  # resolution of the calibration histograms (32 bins per int8 step of the full range)
CLIPPING_FACTORS = np.linspace(0.2, 1.0, 81)  # the fractions of the calibrated min / max that "mse" tries


def all_layers_and_models(model):
    """Every layer of ``model`` and of its nested models, nested models included (depth-first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers_and_models(layer)


def all_layers(model):
    """Every layer of ``model``, nested models' layers included (the models themselves not), by name."""
    layers = {}
    for layer in all_layers_and_models(model):
        if isinstance(layer, keras.Model):
            continue
        if layer.name in layers:
            raise ValueError(f"Two layers are named {layer.name!r}; quantisation maps layers by name.")
        layers[layer.name] = layer
    return layers


def _producers(inbound_node):
    """Names of the layers whose outputs a serialised inbound node consumes."""
    names = []

    def visit(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                names.append(value["config"]["keras_history"][0])
            else:
                for v in value.values():
                    visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
    visit(inbound_node)
    return names


def graph(model):
    """``{layer name: (class name, [consumer names], [producer names])}`` of every layer of a
    functional model and its nested functional models (within each model's own graph)."""
    nodes = {}

    def visit(config):
        for layer in config["layers"]:
            if "layers" in layer.get("config", {}):
                visit(layer["config"])
            producers = [p for node in layer.get("inbound_nodes", []) for p in _producers(node)]
            nodes.setdefault(layer["name"], [layer["class_name"], [], []])[2].extend(producers)
            for p in producers:
                nodes.setdefault(p, [None, [], []])[1].append(layer["name"])
    visit(model.get_config())
    return {name: tuple(v) for name, v in nodes.items()}


def _is_relu(layer_class, layer):
    if layer_class == "ReLU":
        return True
    return layer_class == "Activation" and getattr(layer.activation, "__name__", "") == "relu"


def _fused_relu(nodes, layers, name):
    """The ReLU that LiteRT fuses into layer ``name`` (its only consumer), or None: then LiteRT
    stores only the ReLU's output in int8. ``nodes``, ``layers``: :func:`graph`, :func:`all_layers`."""
    consumers = nodes[name][1]
    fused = (nodes[name][0] in _FUSABLE and len(consumers) == 1
             and _is_relu(nodes[consumers[0]][0], layers.get(consumers[0])))
    return consumers[0] if fused else None


def fold_batch_norm(model):
    """A copy of ``model`` in which each ``Conv2D`` whose only consumer is a ``BatchNormalization``
    absorbs it (kernel scaled by ``gamma / sqrt(var + eps)``, bias shifted): equal at inference."""
    layers, nodes = all_layers(model), graph(model)
    pairs = {}
    for name, (cls, consumers, _) in nodes.items():
        if cls == "Conv2D" and len(consumers) == 1 and nodes[consumers[0]][0] == "BatchNormalization":
            if layers[consumers[0]].axis in (-1, 3):  # per output channel of the NHWC convolution
                pairs[name] = consumers[0]
    folded_bn = set(pairs.values())

    def clone(layer):
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in folded_bn:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    copy_weights(model, folded, skip=pairs)  # the folded batch-norm layers are not in ``folded``
    targets = all_layers(folded)
    for name, bn_name in pairs.items():
        conv, bn = layers[name], layers[bn_name]
        gamma = bn.gamma.numpy() if bn.scale else 1.0
        beta = bn.beta.numpy() if bn.center else 0.0
        factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        bias = conv.bias.numpy() if conv.use_bias else 0.0
        targets[name].set_weights([conv.kernel.numpy() * factor, (bias - bn.moving_mean.numpy()) * factor + beta])
    return folded


def fake_quant_kernel(kernel):
    """Per-output-channel symmetric int8 rounding of a kernel (last axis = channel), values in
    [-127, 127] x max|w| / 127 as LiteRT stores convolution and dense weights."""
    axes = list(range(len(kernel.shape) - 1))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, -bound, bound, num_bits=8,
                                                                    narrow_range=True)


class ActivationFakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric int8 rounding of an activation (the output of layer ``source``) over
    a calibrated range.

    ``mode``: ``"round"`` (LiteRT's int8), ``"observe"`` (pass through, widening the range to what
    passes: calibration), ``"histogram"`` (pass through, counting the values over the range) or
    ``"exact"`` (pass through: this tensor in float).
    """

    def __init__(self, source=None, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.source = source
        self.mode = "round"

    def build(self, input_shape):
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer="zeros", trainable=False, name="range_max")
        self.histogram = self.add_weight(shape=(HISTOGRAM_BINS,), initializer="zeros", trainable=False,
                                         dtype="float64", name="histogram")

    def call(self, x):
        if self.mode == "exact":
            return x
        if self.mode == "observe":
            self.range_min.assign(tf.minimum(self.range_min, tf.reduce_min(x)))
            self.range_max.assign(tf.maximum(self.range_max, tf.reduce_max(x)))
            return x
        if self.mode == "histogram":
            bounds = tf.stack([tf.convert_to_tensor(self.range_min), tf.convert_to_tensor(self.range_max)])
            counts = tf.histogram_fixed_width(x, bounds, nbins=HISTOGRAM_BINS)
            self.histogram.assign_add(tf.cast(counts, tf.float64))
            return x
        return tf.quantization.fake_quant_with_min_max_vars(x, self.range_min, self.range_max, num_bits=8)

    def mse_range(self):
        """The range ``f * (min, max)`` whose int8 rounding has the least squared error over the
        histogram (each bin's values at its centre), ``f`` searched in ``CLIPPING_FACTORS``."""
        low, high = float(self.range_min.numpy()), float(self.range_max.numpy())
        counts = self.histogram.numpy()
        centres = (low + (np.arange(HISTOGRAM_BINS) + 0.5) * (high - low) / HISTOGRAM_BINS).astype(np.float32)

        def squared_error(f):
            rounded = tf.quantization.fake_quant_with_min_max_args(centres, f * low, f * high, num_bits=8).numpy()
            return float(np.sum(counts * (rounded - centres) ** 2))
        best = min(CLIPPING_FACTORS, key=squared_error)
        return best * low, best * high


class _KernelFakeQuant:
    """Mixin: the layer's kernel is rounded as LiteRT stores it, unless ``quantize_kernel`` is off."""
    quantize_kernel = True

    def _rounded(self, kernel):
        return fake_quant_kernel(kernel) if self.quantize_kernel else kernel


class SimulatedInt8Conv2D(_KernelFakeQuant, keras.layers.Conv2D):
    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, self._rounded(kernel))


class SimulatedInt8Dense(_KernelFakeQuant, keras.layers.Dense):
    def call(self, inputs, training=None):
        x = tf.matmul(inputs, self._rounded(self.kernel))
        if self.use_bias:
            x = x + self.bias
        return self.activation(x) if self.activation is not None else x


def simulate_int8(folded):
    """LiteRT's int8 arithmetic for a batch-norm-free model (:func:`fold_batch_norm`), as a Keras
    model with its own copy of the weights. Its ``ActivationFakeQuant`` ranges need
    :func:`calibrate` before use."""
    layers, nodes = all_layers(folded), graph(folded)
    if any(cls == "BatchNormalization" for cls, _, _ in nodes.values()):
        raise ValueError("Fold batch normalisation first (fold_batch_norm): LiteRT folds it into the convolution.")

    def clone(layer):
        cls = type(layer).__name__
        replacement = {"Conv2D": SimulatedInt8Conv2D, "Dense": SimulatedInt8Dense}.get(cls, layer.__class__)
        return replacement.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        cls = nodes.get(layer.name, (type(layer).__name__,))[0]
        if cls in _PASS_THROUGH or isinstance(layer, keras.Model) or _fused_relu(nodes, layers, layer.name):
            return out
        return ActivationFakeQuant(source=layer.name, name=f"{layer.name}_int8")(out)

    simulated = keras.models.clone_model(folded, clone_function=clone, call_function=call, recursive=True)
    copy_weights(folded, simulated)
    return simulated


def copy_weights(source, target, skip=()):
    """Copies every layer's weights from ``source`` to the same-named layer of ``target``
    (except the layers named in ``skip``)."""
    targets = all_layers(target)
    for name, layer in all_layers(source).items():
        if name in targets and name not in skip and layer.weights:
            targets[name].set_weights(layer.get_weights())


def activation_quantizers(simulated):
    """The ``ActivationFakeQuant`` layers of a simulated model, in graph order."""
    return [layer for layer in all_layers(simulated).values() if isinstance(layer, ActivationFakeQuant)]


def kernel_quantizers(simulated):
    return [layer for layer in all_layers(simulated).values() if isinstance(layer, _KernelFakeQuant)]


def set_rounding(simulated, weights=True, activations=True):
    """Switches all weight and / or activation rounding on (True) or off (False)."""
    for layer in kernel_quantizers(simulated):
        layer.quantize_kernel = weights
    for layer in activation_quantizers(simulated):
        layer.mode = "round" if activations else "exact"


def calibrate(simulated, images, ranges="mse", batch_size=256):
    """Sets every activation range from ``images`` (floats in [0, 1]) through the float model
    (nothing rounded upstream).

    ``ranges="minmax"``: the min / max over the images, what the converter's representative
    dataset alone gives. ``"mse"`` (what the export uses): that range shrunk to the one whose int8
    rounding has the least squared error over the values seen (a histogram per tensor), trading
    a few clipped outliers for a finer step on all the rest.
    """
    if ranges not in ("minmax", "mse"):
        raise ValueError(f"ranges must be 'minmax' or 'mse', not {ranges!r}")
    quantizers = activation_quantizers(simulated)
    set_rounding(simulated, weights=False, activations=False)

    def run(layers, mode):  # the other quantizers pass through
        for layer in quantizers:
            layer.mode = mode if layer in layers else "exact"
        for i in range(0, len(images), batch_size):
            simulated(tf.constant(images[i:i + batch_size], tf.float32), training=False)
    try:
        for layer in quantizers:
            layer.range_min.assign(0.0)  # LiteRT's ranges always hold zero
            layer.range_max.assign(0.0)
            layer.histogram.assign(tf.zeros_like(layer.histogram))
        run(quantizers, "observe")
        if ranges == "mse":  # a tensor that is zero throughout has no histogram (and nothing to round)
            live = [layer for layer in quantizers if layer.range_max.numpy() > layer.range_min.numpy()]
            run(live, "histogram")
            for layer in live:
                low, high = layer.mse_range()
                layer.range_min.assign(low)
                layer.range_max.assign(high)
    finally:
        set_rounding(simulated)


def activation_ranges(simulated):
    """``{layer name: (min, max)}``: the calibrated int8 range of each layer's output (but those
    that were zero throughout, which have none)."""
    ranges = {layer.source: (float(layer.range_min.numpy()), float(layer.range_max.numpy()))
              for layer in activation_quantizers(simulated)}
    return {name: (low, high) for name, (low, high) in ranges.items() if high > low}


# --- the float model the int8 converter gets ----------------------------------------------------

class FixedRange(keras.layers.Layer):
    """Fixes a tensor's int8 range for the converter: TF's fake-quant op with constant bounds (a
    no-op on values already on that grid, as the exact pixel path's are)."""

    def __init__(self, low, high, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.low, self.high = float(low), float(high)

    def call(self, x):
        return tf.quantization.fake_quant_with_min_max_args(x, self.low, self.high, num_bits=8)


class AddConstant(keras.layers.Layer):
    """Adds a fixed tensor (the first convolution's border correction)."""

    def __init__(self, value, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.value = np.asarray(value, np.float32)

    def build(self, input_shape):
        self.constant = self.add_weight(shape=self.value.shape, initializer="zeros", trainable=False, name="constant")
        self.constant.assign(self.value)

    def call(self, x):
        return x + self.constant


def _preprocessing(model):
    found = [layer for layer in all_layers(model).values() if isinstance(layer, models.ImagePreprocessing)]
    if len(found) != 1:
        raise ValueError(f"Expected one ImagePreprocessing layer in {model.name}, found {len(found)}.")
    return found[0]


def _first_convolution(model, start):
    """The Conv2D that the output of layer ``start`` reaches through nested-model inputs and
    zero padding alone; ValueError if it reaches anything else."""
    name = start
    nested = {layer.name: layer for layer in all_layers_and_models(model) if isinstance(layer, keras.Model)}
    nodes = graph(model)
    while True:
        consumers = nodes[name][1]
        if len(consumers) != 1:
            raise ValueError(f"The exact int8 input path needs {name!r} to feed one layer, not {consumers}.")
        name = consumers[0]
        if name in nested:
            name = nested[name].layers[0].name  # the nested model's input layer
            continue
        cls = nodes[name][0]
        if cls == "Conv2D":
            return all_layers(model)[name]
        if cls != "ZeroPadding2D":
            raise ValueError(f"The exact int8 input path needs the preprocessing to feed a convolution; "
                             f"it feeds {name!r} ({cls}).")


def _border_ranges(folded, first, border, ranges):
    """int8 ranges around the first convolution's border correction (``int8_edge_model``).

    The correction is added after the convolution, so LiteRT rounds the convolution's output
    before it and the sum after it. Left to the converter, the first rounding took the range of
    the whole pre-ReLU output (ResNet-50: 3x the step of the stem's output, and 2.8x the stem's
    error). Here both get the same step ``s``: the convolution's range covers every value that
    can reach the stem's range once a border value is added (``[lo - max b, hi - min b]``, its
    top to within one step, as its bottom is moved onto the lattice), and
    the stem's range is widened to that width, so that both grids are the same lattice. Inside
    the image (border 0) the sum is then exact and the stem's output is rounded once, at a step
    ``1 + (max b - min b) / (hi - lo)`` times the calibrated one; the border is rounded twice.
    Returns the convolution's range and ``{stem: its range}``; ``None, {}`` without calibrated
    ranges or without a ReLU after the convolution (our ResNets all have one)."""
    stem = _fused_relu(graph(folded), all_layers(folded), first.name)
    if stem is None or stem not in ranges:
        return None, {}
    lo, hi = ranges[stem]
    b_low, b_high = min(float(border.min()), 0.0), max(float(border.max()), 0.0)
    width = (hi - lo) + (b_high - b_low)
    step = width / 255.0
    conv_low = -np.ceil((b_high - lo) / step - 1e-6) * step
    stem_low = -np.ceil(-lo / step - 1e-6) * step
    return (conv_low, conv_low + width), {stem: (stem_low, stem_low + width)}


def int8_edge_model(encoder, calibration_images=None):
    """Pixels float32 ``[N, S, S, C]`` in 0..255 -> embedding (not normalised: the runner does
    that, in float): ``tflite_models.edge_model`` for the int8 converter, with every pixel level kept
    (module docstring) and, given ``calibration_images`` (floats in [0, 1]), every int8 range
    chosen as :func:`calibrate`'s ``"mse"`` chooses it and fixed for the converter.

    The preprocessing is affine: ``x_j = sum_i A_ij p_i + c_j``. The model computes
    ``u_j = sum_i A_ij (p_i - 128)`` with one 1 x 1 convolution and adds the difference
    ``c_j + 128 sum_i A_ij`` to the first convolution through its bias. That is exact inside the
    image; where the first convolution reads its zero padding, the difference is missing. When it
    is at most half a step of the input grid (our ResNets: 1/255 in [-1, 1]), that is left as it is
    (less than rounding the input would cost); a larger one (the ImageNet mean subtraction of
    ResNet-50) gets an exact border correction added after the first convolution.

    The L2 normalisation stays out: in int8 it is four more rounded ops and a float ``SQUARE``.
    """
    folded = fold_batch_norm(encoder)
    ranges = {}
    if calibration_images is not None:  # simulated on the folded weights (copied) before the bias below changes
        simulated = simulate_int8(folded)
        calibrate(simulated, calibration_images)
        ranges = activation_ranges(simulated)
    preprocessing = _preprocessing(folded)
    channels = int(encoder.input_shape[-1])
    zero = preprocessing(np.zeros((1, 1, 1, channels), np.float32)).numpy().reshape(-1)
    affine = np.stack([preprocessing(np.eye(channels, dtype=np.float32)[i].reshape(1, 1, 1, channels))
                       .numpy().reshape(-1) - zero for i in range(channels)]) / 255.0  # [C, 3] per grey level
    step = float(np.abs(affine).max())
    offset = zero + 128.0 * affine.sum(axis=0)
    first = _first_convolution(folded, preprocessing.name)
    owner = [m for m in all_layers_and_models(folded) if isinstance(m, keras.Model) and first in m.layers]
    if not owner or not first.use_bias:
        raise ValueError(f"The exact int8 input path needs {first.name!r} to have a bias (batch norm folded into "
                         "it) and to sit in the backbone model that the preprocessing feeds.")
    kernel, bias = first.get_weights()
    to_first = keras.Model(owner[0].inputs[0], first.output)
    size = encoder.input_shape[1:3]
    black = np.zeros((1, *size, channels), np.float32)
    true_black = to_first(preprocessing(black)).numpy()[0]
    first.set_weights([kernel, bias + np.einsum("hwio,i->o", kernel, offset)])
    shifted = ((black - 128.0).reshape(-1, channels) @ affine).reshape(1, *size, 3).astype(np.float32)
    border = true_black - to_first(shifted).numpy()[0]
    correct_border = bool(np.abs(offset).max() > step / 2 * (1 + 1e-3))  # float32 slack

    pixels = keras.Input(encoder.input_shape[1:], dtype="float32", name="pixels")
    to_input = keras.layers.Conv2D(3, 1, name="pixel_affine")
    x = to_input(FixedRange(0.0, 255.0, name="pixel_range")(pixels))
    to_input.set_weights([affine.reshape(1, 1, channels, 3).astype(np.float32),
                          (-128.0 * affine.sum(axis=0)).astype(np.float32)])
    x = FixedRange(-128.0 * step, 127.0 * step, name="pixel_affine_range")(x)

    conv_range = None
    if correct_border:
        conv_range, stem_range = _border_ranges(folded, first, border, ranges)
        ranges.update(stem_range)

    def call(layer, *args, **kwargs):
        if layer is preprocessing:
            return x
        out = layer(*args, **kwargs)
        if layer is first and correct_border:
            if conv_range:
                out = FixedRange(*conv_range, name=f"{layer.name}_range")(out)
            out = AddConstant(border, name=f"{layer.name}_border")(out)
        if layer.name in ranges:
            out = FixedRange(*ranges[layer.name], name=f"{layer.name}_range")(out)
        return out

    z = keras.models.clone_model(folded, input_tensors=pixels, clone_function=lambda layer: layer,
                                 call_function=call, recursive=True).output
    return keras.Model(pixels, z, name="int8_edge_embedder")
