"""The int8 simulator (bench/int8_error_budget.py): batch-norm folding is exact, weight rounding
is LiteRT's, calibrated ranges are the converter's, and the error budget switches what it says."""
import keras
import numpy as np
import pytest

from scl_amp_tf import export_parity, exporting, int8_error_budget, models, quantization, tflite_models

SIZE = 32


def _encoder(backbone="resnet_tiny", seed=0, channels=1):
    """A random encoder whose batch-norm layers hold non-trivial statistics and affine weights."""
    keras.utils.set_random_seed(seed)
    encoder = models.build_encoder(models.build_features((SIZE, SIZE, channels), backbone), embedding_dim=8,
                                   projection_dim=16)
    rng = np.random.default_rng(seed)
    for layer in quantization.all_layers(encoder).values():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.3, 3.0, n)])
    return encoder


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 1)).astype(np.uint8)


@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet50"])
def test_folding_batch_norm_keeps_the_function_and_removes_the_layers(backbone):
    encoder = _encoder(backbone)
    folded = quantization.fold_batch_norm(encoder)
    x = _images(4, 1).astype(np.float32) / 255.0
    np.testing.assert_allclose(folded(x).numpy(), encoder(x).numpy(), rtol=1e-4, atol=1e-4)
    layers = quantization.all_layers(folded).values()
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in layers) == sum(
        isinstance(layer, keras.layers.Conv2D) for layer in quantization.all_layers(encoder).values())


def test_kernel_rounding_is_per_channel_symmetric_int8():
    w = (np.random.default_rng(0).normal(0, 1, (3, 3, 4, 5)) * np.arange(1, 6)).astype(np.float32)
    step = np.abs(w).max(axis=(0, 1, 2)) / 127.0
    expected = np.clip(np.round(w / step), -127, 127) * step  # an independent NumPy rounding
    np.testing.assert_allclose(quantization.fake_quant_kernel(w).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_simulation_matches_the_converter_and_the_budget_switches_rounding(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    encoder = _encoder()
    calibration, test = _images(32, 2), _images(24, 3)
    simulated = int8_error_budget.int8_simulation(encoder, calibration.astype(np.float32) / 255.0)
    x = test.astype(np.float32) / 255.0

    quantization.set_rounding(simulated, weights=False, activations=False)  # nothing rounded: the float model
    np.testing.assert_allclose(simulated(x).numpy(), encoder(x).numpy(), rtol=1e-4, atol=1e-4)
    quantization.set_rounding(simulated)

    path = str(tmp_path / "int8.tflite")
    tflite_models.write_tflite(encoder, path, "int8", calibration)
    interpreter = Interpreter(model_path=path)
    tensors = interpreter.get_tensor_details()
    stem = quantization.all_layers(simulated)["stem_conv"]
    kernel = next(t for t in tensors if "stem_conv" in t["name"] and len(t["shape"]) == 4
                  and t["shape"][0] == stem.filters and np.dtype(t["dtype"]) == np.int8)
    stored = (interpreter.get_tensor(kernel["index"]).astype(np.float32)
              * kernel["quantization_parameters"]["scales"][:, None, None, None]).transpose(1, 2, 3, 0)
    np.testing.assert_allclose(quantization.fake_quant_kernel(stem.kernel).numpy(), stored, rtol=1e-5, atol=1e-6)
    relu = next(t for t in tensors if t["name"].split(";")[0].find("stem_relu") >= 0
                and len(t["quantization_parameters"]["scales"]) == 1)
    # The converter takes the simulation's "mse" ranges (fixed in the edge model), not its own min / max.
    chosen = quantization.activation_ranges(simulated)
    minmax = quantization.activation_ranges(
        int8_error_budget.int8_simulation(encoder, calibration.astype(np.float32) / 255.0, ranges="minmax"))
    conv2 = next(t for t in tensors if t["name"].split(";")[0].find("stage1_block1_conv2") >= 0
                 and len(t["shape"]) == 4 and len(t["quantization_parameters"]["scales"]) == 1)
    for name, tensor in (("stem_relu", relu), ("stage1_block1_conv2", conv2)):
        assert chosen[name][1] - chosen[name][0] < 0.99 * (minmax[name][1] - minmax[name][0]), name
        np.testing.assert_allclose((chosen[name][1] - chosen[name][0]) / 255.0,
                                   tensor["quantization_parameters"]["scales"][0], rtol=1e-3)

    reference = export_parity.keras_embeddings(encoder, test)
    rows = int8_error_budget.error_budget(simulated, x, reference, lambda e: np.argmax(e[:, :3], axis=1))
    by_name = {row["exact"]: row for row in rows}
    assert by_name["nothing"]["error"] > 1e-6
    assert by_name["all activations"]["error"] < by_name["nothing"]["error"]
    assert len(rows) == 3 + len(quantization.activation_quantizers(simulated))
    again = int8_error_budget.simulated_embeddings(simulated, x)  # the budget leaves everything rounded
    np.testing.assert_allclose(np.mean(1 - np.sum(again * reference, axis=1)), by_name["nothing"]["error"], rtol=1e-5)
    # The agreement of the fully rounded model, recomputed with the same decision rule.
    agreement = np.mean(np.argmax(again[:, :3], axis=1) == np.argmax(reference[:, :3], axis=1))
    assert by_name["nothing"]["top1_agreement"] == pytest.approx(agreement)


def _numpy_int8(x, low, high):
    """An independent NumPy int8 rounding over [low, high] (zero on the grid, as in LiteRT)."""
    scale = (high - low) / 255.0
    zero_point = np.clip(np.round(-low / scale), 0, 255)
    return (np.clip(np.round(x / scale) + zero_point, 0, 255) - zero_point) * scale


def test_mse_ranges_round_each_tensor_with_less_error_than_min_max():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")
    out = keras.layers.Dense(8, name="out")
    model = keras.Model(inputs, out(hidden(inputs)))
    hidden.set_weights([np.eye(64, dtype=np.float32), np.zeros(64, np.float32)])
    x = np.random.default_rng(0).laplace(0, 1, (10000, 64)).astype(np.float32)  # long-tailed, as activations are
    values = {"hidden": np.maximum(x, 0)}
    values["out"] = values["hidden"] @ out.kernel.numpy() + out.bias.numpy()

    simulated = quantization.simulate_int8(model)
    quantization.calibrate(simulated, x, ranges="minmax")
    minmax = quantization.activation_ranges(simulated)
    quantization.calibrate(simulated, x)  # "mse"
    chosen = quantization.activation_ranges(simulated)
    assert set(chosen) == {"hidden", "out"}
    for name, v in values.items():
        np.testing.assert_allclose(minmax[name], (min(v.min(), 0), max(v.max(), 0)), rtol=1e-5)
        error = {f: np.mean((_numpy_int8(v, f * minmax[name][0], f * minmax[name][1]) - v) ** 2)
                 for f in quantization.CLIPPING_FACTORS}
        got = np.mean((_numpy_int8(v, *chosen[name]) - v) ** 2)
        assert got < 0.95 * error[1.0], (name, got, error[1.0])  # a few outliers clipped, finer steps for the rest
        assert got <= 1.01 * min(error.values()), (name, got, min(error.values()))  # the best of the factors


@pytest.mark.parametrize("backbone,channels", [("resnet_tiny", 1), ("resnet_tiny", 3), ("resnet50", 1)])
def test_int8_edge_model_is_the_encoder_reading_pixels_directly(backbone, channels):
    encoder = _encoder(backbone, channels=channels)
    edge = quantization.int8_edge_model(encoder)
    pixels = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, channels)).astype(np.uint8)
    cosine = np.sum(edge(pixels.astype(np.float32)).numpy() * export_parity.keras_embeddings(encoder, pixels), axis=1)
    assert cosine.min() > 0.9999
    layers = quantization.all_layers(edge).values()
    # ResNet-50's ImageNet-mean preprocessing shifts by up to 24 grey levels: its border is corrected exactly.
    assert any(isinstance(layer, quantization.AddConstant) for layer in layers) == (backbone == "resnet50")
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)


@pytest.mark.slow
def test_resnet50_stem_is_rounded_once_inside_the_image_despite_the_border_correction(tmp_path):
    """ResNet-50's border correction is added after its first convolution, so LiteRT rounds that
    convolution's output too. On the stem's own grid that rounding is exact inside the image
    (border 0); left to the converter it took the whole pre-ReLU range, 3x the stem's step on a
    trained ResNet-50 (BENCHMARKS.md)."""
    from ai_edge_litert.interpreter import Interpreter

    encoder = _encoder("resnet50")
    calibration = _images(16, 2)
    stem_low, stem_high = quantization.activation_ranges(
        int8_error_budget.int8_simulation(encoder, calibration.astype(np.float32) / 255.0))["conv1_relu"]
    path = str(tmp_path / "int8.tflite")
    tflite_models.write_tflite(encoder, path, "int8", calibration)
    interpreter = Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], _images(1, 3))
    interpreter.invoke()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    add = next(op for op in interpreter._get_ops_details() if op["op_name"] == "ADD"
               and "conv1_conv_border" in details[op["outputs"][0]]["name"])
    conv, border = (details[i] for i in add["inputs"])
    stem = details[add["outputs"][0]]

    def values(t):
        scale, zero_point = t["quantization"]
        return (interpreter.get_tensor(t["index"]).astype(np.float64) - zero_point) * scale

    assert conv["quantization"][0] == pytest.approx(stem["quantization"][0], rel=1e-6)  # one grid
    b = values(border)
    assert conv["quantization"][0] * 255 >= (stem_high - stem_low) + (b.max() - min(b.min(), 0)) - 1e-3
    inside = np.broadcast_to(b == 0, stem["shape"])
    assert inside.mean() > 0.5
    np.testing.assert_allclose(values(stem)[inside], np.maximum(values(conv), 0)[inside], atol=1e-6)


def test_int8_model_keeps_every_pixel_level_whatever_the_calibration_spans(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    encoder = _encoder()
    calibration = np.random.default_rng(2).integers(10, 200, (16, SIZE, SIZE, 1)).astype(np.uint8)  # not 0..255
    path = str(tmp_path / "int8.tflite")
    tflite_models.write_tflite(encoder, path, "int8", calibration)
    interpreter = Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    pixels = np.arange(256, dtype=np.uint8).repeat(4)[:SIZE * SIZE].reshape(1, SIZE, SIZE, 1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
    interpreter.invoke()
    assert interpreter.get_input_details()[0]["quantization"] == (1.0, 0)
    affine = next(t for t in interpreter.get_tensor_details() if t["name"].split(";")[0].find("pixel_affine") >= 0
                  and len(t["shape"]) == 4 and t["shape"][-1] == 3)
    scale, zero_point = affine["quantization"]
    values = (interpreter.get_tensor(affine["index"]).astype(np.float32) - zero_point) * scale
    step = 2.0 / 255.0  # our ResNets' preprocessing: [0, 255] -> [-1, 1]
    np.testing.assert_allclose(values, np.repeat(step * (pixels.astype(np.float32) - 128.0), 3, axis=-1), atol=1e-6)


@pytest.mark.parametrize("images", [None, np.zeros((0, SIZE, SIZE, 1), np.uint8)])
def test_int8_without_calibration_images_is_refused(tmp_path, images):
    with pytest.raises(exporting.ExportError, match="int8 needs representative training images"):
        tflite_models.write_tflite(_encoder(), str(tmp_path / "int8.tflite"), "int8", images)
    assert not (tmp_path / "int8.tflite").exists()
