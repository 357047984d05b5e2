"""inference.embed: the network's outputs for uint8 images, traced once per model."""
import gc
import weakref

import keras
import numpy as np

from scl_amp_tf import inference


def test_one_trace_per_model_for_every_batch_size_and_the_model_is_not_kept_alive():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    images = np.random.default_rng(0).integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    every = inference.embed(model, images, batch_size=128)  # batches of 128, 128 and 44 images
    few = inference.embed(model, images[:7])
    assert inference.forward(model).experimental_get_tracing_count() == 1
    expected = model.predict(images.astype(np.float32) / 255, verbose=0)
    np.testing.assert_allclose(every, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(few, expected[:7], rtol=1e-5, atol=1e-6)
    other = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert inference.forward(other) is not inference.forward(model)  # each model its own function
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the cache holds the model weakly
