"""Encoders: input handling, backbone weights, batch-norm settings, serialisation."""
import keras
import numpy as np
import pytest

from scl_amp_tf import layers
from scl_amp_tf import models


def test_gray_input_is_replicated_and_preprocessed():
    layer = models.ImagePreprocessing("symmetric")
    gray = np.full((1, 4, 4, 1), 0.25, np.float32)
    out = np.asarray(layer(gray))
    assert out.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(out, -0.5)
    caffe = np.asarray(models.ImagePreprocessing("caffe")(np.ones((1, 2, 2, 3), np.float32)))
    np.testing.assert_allclose(caffe[0, 0, 0], 255.0 - np.array(models.ImagePreprocessing.CAFFE_MEAN_BGR),
                               rtol=1e-6)


def test_backbone_weights_from_a_file_are_used(tmp_path):
    keras.utils.set_random_seed(1)
    first = models.build_features((32, 32, 1), "resnet_tiny")
    backbone = first.get_layer("resnet_tiny")
    path = str(tmp_path / "tiny.weights.h5")
    backbone.save_weights(path)
    keras.utils.set_random_seed(2)
    second = models.build_features((32, 32, 1), "resnet_tiny", weights=path)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(first.predict(x, verbose=0), second.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_bad_backbone_weights_say_what_to_do():
    with pytest.raises(ValueError, match=r"resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        models.build_features((32, 32, 3), "resnet50", weights="/no/such/weights.h5")
    with pytest.raises(ValueError, match="only for resnet50"):
        models.build_features((32, 32, 3), "resnet18", weights="imagenet")
    with pytest.raises(ValueError, match="not one of"):
        models.build_features((32, 32, 3), "vgg16")


def test_bn_momentum_reaches_every_batch_norm_layer():
    features = models.build_features((32, 32, 1), "resnet50", bn_momentum=0.9)
    bns = [layer for layer in features._flatten_layers(recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 53 and all(layer.momentum == 0.9 for layer in bns)
    assert all(type(layer) is layers.BatchNormalization for layer in bns)  # trained with the fused kernel


def test_encoder_round_trips_through_a_keras_file(tmp_path):
    encoder = models.build_encoder(models.build_features((32, 32, 1), "resnet_tiny"), embedding_dim=8,
                                   projection_dim=16)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).random((3, 32, 32, 1)).astype(np.float32)
    assert encoder.predict(x, verbose=0).shape == (3, 8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), encoder.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_recalibrated_batchnorm_uses_the_statistics_of_the_given_images():
    keras.utils.set_random_seed(0)
    features = models.build_features((32, 32, 1), "resnet_tiny")
    x = np.random.default_rng(0).random((16, 32, 32, 1)).astype(np.float32) * 3 + 1
    before = np.asarray(features(x, training=False))
    models.recalibrate_batchnorm(features, x)
    inference, training = np.asarray(features(x, training=False)), np.asarray(features(x, training=True))
    assert not np.allclose(before, training, atol=1e-3)  # the initial statistics were wrong for x
    np.testing.assert_allclose(inference, training, rtol=1e-3, atol=1e-4)
    bn = features.get_layer("resnet_tiny").get_layer("stem_bn")
    assert bn.momentum == 0.99  # restored
