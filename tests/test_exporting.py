"""Deployment: export a tiny trained model, reload every artefact and compare with Keras; requests
through the serving client (REST and gRPC, over local sockets); the edge runner without
TensorFlow; enrolment of a new class; bad requests and failed checks leave nothing behind."""
import base64
import concurrent.futures
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from scl_amp_tf import data as data_lib
from scl_amp_tf import (enrolment, evaluating, export_versions, exporting, predicting, serving_graph,
                        serving_requests, synthetic_wafers)
from scl_amp_tf.edge import edge_classify
from scl_amp_tf.export_parity import agreement, encode_png, keras_embeddings
from scl_amp_tf.reference import ReferenceDatabase, l2_normalize
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate

TRAINED = ["C", "D", "EL", "L", "NF"]  # Center, Donut, Edge-Loc, Loc, Near-full  # the model learns these ...
NEW = "R"  # Random  # ... and this one is enrolled after export
SIZE = 52


def _write_class_folders(root, names, per_class, seed):
    maps, labels, _ = synthetic_wafers.generate(per_class, seed=seed)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        index = synthetic_wafers.CLASS_NAMES.index(name)
        for k, m in enumerate(maps[labels == index]):
            # 60x60 files: the model's 52x52 input is reached by the same resize as in training
            image = Image.fromarray(m.astype(np.uint8) * data_lib.WAFER_SCALE)
            image.resize((60, 60), Image.NEAREST).save(folder / f"{k:03d}.png")
    return root


def _new_class_folder(folder, count=8):
    """Images of a class the model never saw: one Random-pattern wafer with 20 dies flipped per copy.

    The copies are close to each other on purpose: the test is about the enrolment mechanism, which
    must not hinge on how well a model trained for seconds generalises to unseen patterns.
    """
    maps, labels, _ = synthetic_wafers.generate(1, seed=5)
    base = maps[labels == synthetic_wafers.CLASS_NAMES.index(NEW)][0]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for k in range(count):
        m = base.copy()
        dies = np.argwhere(m > 0)
        flip = dies[rng.choice(len(dies), 20, replace=False)]
        m[flip[:, 0], flip[:, 1]] = 3 - m[flip[:, 0], flip[:, 1]]  # pass <-> fail
        Image.fromarray(m.astype(np.uint8) * data_lib.WAFER_SCALE).resize((60, 60), Image.NEAREST).save(
            folder / f"{k:03d}.png")
    return folder


def _cli(module, *args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A resnet_tiny SCL-AMP model trained briefly on 5 wafer classes, exported through the CLI."""
    root = tmp_path_factory.mktemp("export")
    data_root = _write_class_folders(root / "data", TRAINED, per_class=24, seed=1)
    config = TrainConfig(model_dir=str(root / "run"), dataset=f"folder:{data_root}", shots_per_class=12,
                         image_size=SIZE, backbone="resnet_tiny", epochs=8, validation_fraction=0.25, verbose=0)
    metrics = train_and_evaluate(config)
    result = _cli("scl_amp_tf.export", f"--model_dir={config.model_dir}", f"--export_dir={root / 'exported'}",
                  "--model_name=wafers", "--representative_images=60", "--check_images=32",
                  "--formats=saved_model,tflite,tflite_int16x8", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tflite/int8" in result.stdout and "tflite/int16x8" in result.stdout
    data = data_lib.load(f"folder:{data_root}", image_size=SIZE)
    test = np.load(os.path.join(config.model_dir, "split.npz"))["test"]
    return dict(root=root, version=root / "exported" / "wafers" / "1", model_dir=config.model_dir,
                data_root=data_root, images=data.images[test], labels=data.labels[test], metrics=metrics)


def _keras(exported):
    encoder = keras.models.load_model(os.path.join(exported["model_dir"], "encoder.keras"))
    database = ReferenceDatabase.load(os.path.join(exported["model_dir"], "reference_db.npz"))
    return encoder, database


def test_layout_and_metadata(exported):
    version = exported["version"]
    assert sorted(os.listdir(version.parent)) == ["1"]  # no temporary folder left
    assert {"saved_model.pb", "variables", "assets.extra"} <= set(os.listdir(version))
    metadata = json.loads((version / "assets.extra" / "scl_amp_tf.json").read_text())
    assert metadata["class_names"] == TRAINED and metadata["image_size"] == SIZE and metadata["channels"] == 1
    assert set(metadata["tflite"]) == {"fp32", "fp16", "int8", "int16x8"}
    assert metadata["tflite"]["int8"]["bytes"] < metadata["tflite"]["fp32"]["bytes"] / 2
    assert metadata["tflite"]["int8"]["float_ops"] == ["DEQUANTIZE"]  # integer up to the embedding
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (version, version / "saved_model.pb", version / "assets.extra" / "reference_db.npz"):
        # not private like the temporary folder it was written in: readable as the umask allows
        assert os.stat(path).st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~umask, path


def test_every_artefact_matches_keras_on_held_out_images(exported):
    encoder, database = _keras(exported)
    images, labels = exported["images"], exported["labels"]
    reference = keras_embeddings(encoder, images)
    keras_predictions = database.predict(reference)
    # The reloaded graph reproduces the accuracy the training run reported.
    assert np.mean(keras_predictions == labels) == pytest.approx(exported["metrics"]["test_accuracy"], abs=1e-6)
    loaded = tf.saved_model.load(str(exported["version"]))
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    assert np.array_equal(served["class_id"].numpy(), keras_predictions)
    assert [n.decode() for n in served["class_name"].numpy()] == [TRAINED[i] for i in keras_predictions]
    np.testing.assert_allclose(served["scores"].numpy(), database.scores(reference), atol=1e-5)
    by_bytes = loaded.signatures["classify_bytes"](image_bytes=tf.constant(encode_png(images)))
    assert np.array_equal(by_bytes["class_id"].numpy(), keras_predictions)
    embedded = loaded.signatures["embed"](images=tf.constant(images))["embedding"].numpy()
    assert agreement(reference, embedded, database)["min_cosine"] >= 0.999
    bundle = str(exported["version"] / "assets.extra")
    for variant in ("fp32", "fp16"):
        figure = agreement(reference, edge_classify.EdgeClassifier(bundle, variant).embed(images), database)
        assert figure["min_cosine"] >= 0.999 and figure["clear_disagreements"] == 0, (variant, figure)
    int8 = agreement(reference, edge_classify.EdgeClassifier(bundle, "int8").embed(images), database)
    assert int8["min_cosine"] > 0.95 and int8["top1_agreement"] >= 0.9, int8
    # 16-bit activations: closer to the float model than int8, image by image.
    int16x8 = agreement(reference, edge_classify.EdgeClassifier(bundle, "int16x8").embed(images), database)
    assert int16x8["min_cosine"] > max(0.99, int8["min_cosine"]), (int16x8, int8)
    assert int16x8["mean_cosine"] > int8["mean_cosine"], (int16x8, int8)


def test_signatures_resize_and_convert_like_training(exported):
    """Images of another size (and RGB files for a gray model) go through the training resize."""
    encoder, _ = _keras(exported)
    rng = np.random.default_rng(0)
    large = rng.integers(0, 256, (3, 75, 90, 1), dtype=np.uint8)
    expected = keras_embeddings(encoder, data_lib.resize_images(large, SIZE))
    loaded = tf.saved_model.load(str(exported["version"]))
    got = loaded.signatures["embed"](images=tf.constant(large))["embedding"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    rgb_png = [tf.io.encode_png(np.repeat(im, 3, axis=-1)).numpy() for im in large]
    by_bytes = loaded.signatures["classify_bytes"](image_bytes=tf.constant(rgb_png))["embedding"].numpy()
    np.testing.assert_allclose(by_bytes, expected, atol=1e-5)
    # Every format the docs promise, gray or colour, with or without alpha (lossless ones: exact).
    files = []
    for image, mode, fmt in ((large[0], "L", "BMP"), (large[1], "RGB", "BMP"), (large[2], "LA", "PNG"),
                             (large[0], "RGBA", "PNG"), (large[1], "L", "GIF")):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).convert(mode).save(buffer, format=fmt)
        files.append((buffer.getvalue(), image))
    out = loaded.signatures["classify_bytes"](image_bytes=tf.constant([f for f, _ in files]))["embedding"].numpy()
    np.testing.assert_allclose(out, keras_embeddings(
        encoder, data_lib.resize_images(np.stack([im for _, im in files]), SIZE)), atol=1e-5)
    jpeg = tf.io.encode_jpeg(large[0], quality=95).numpy()  # lossy: the decoded pixels are the reference
    decoded = tf.io.decode_jpeg(jpeg).numpy()[None]
    np.testing.assert_allclose(loaded.signatures["classify_bytes"](image_bytes=tf.constant([jpeg]))["embedding"],
                               keras_embeddings(encoder, data_lib.resize_images(decoded, SIZE)), atol=1e-5)


def test_bad_requests_get_an_error_message(exported):
    local = serving_requests.LocalModel(str(exported["version"]))
    good = exported["images"][:2]
    bad_bodies = {
        "float pixels": {"signature_name": "serving_default", "inputs": {"images": (good / 255.0).tolist()}},
        "no batch axis": {"signature_name": "serving_default", "inputs": {"images": good[0].tolist()}},
        "three channels": {"signature_name": "serving_default",
                           "inputs": {"images": np.repeat(good, 3, axis=-1).tolist()}},
        "empty batch": {"signature_name": "serving_default", "inputs": {"images": []}},
        "undecodable bytes": {"signature_name": "classify_bytes",
                              "inputs": {"image_bytes": [{"b64": "bm90IGFuIGltYWdl"}]}},
        "empty bytes batch": {"signature_name": "classify_bytes", "inputs": {"image_bytes": []}},
        "unknown signature": {"signature_name": "predict", "inputs": {"images": good.tolist()}},
        "no inputs": {"signature_name": "serving_default"},
    }
    for what, body in bad_bodies.items():
        answer = local.predict_rest(body)
        assert set(answer) == {"error"} and answer["error"], (what, answer)
    assert "image_bytes[0] is not a PNG, JPEG, GIF or BMP image" in local.predict_rest(
        bad_bodies["undecodable bytes"])["error"]
    # one bad string of a batch is named by its index; a decompression bomb is refused before decoding
    huge = io.BytesIO()
    Image.new("L", (8000, 8000)).save(huge, "PNG")  # 64 megapixels in a few tens of kilobytes
    small = encode_png(good[:1])[0]
    for batch, message in (([small, b"junk", small], "image_bytes[1] is not a PNG"),
                           ([small, small, huge.getvalue()], "image_bytes[2] has 64000000 pixels, above the limit")):
        error = local.predict_rest({"signature_name": "classify_bytes", "inputs": {"image_bytes": [
            {"b64": base64.b64encode(b).decode()} for b in batch]}})["error"]
        assert message in error, error
    request = serving_requests.grpc_request("wafers", "serving_default", good)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(good.astype(np.float32)))
    with pytest.raises(serving_requests.ServingError, match="uint8"):
        local.predict_grpc(request)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((0, SIZE, SIZE, 1), np.uint8)))
    with pytest.raises(serving_requests.ServingError, match="Empty request"):  # the graph's own check
        local.predict_grpc(request)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(good.astype(np.int32)))
    with pytest.raises(serving_requests.ServingError, match="uint8"):  # gRPC carries a dtype: no silent cast
        local.predict_grpc(request)
    # A single-output signature answers its value unnamed, as TF Serving's columnar format does.
    answer = local.predict_rest(serving_requests.rest_body("embed", good))
    assert isinstance(answer["outputs"], list)
    assert serving_requests.outputs_from_rest(answer, "embed")["embedding"].shape == (2, 128)
    assert serving_requests.outputs_from_rest({"outputs": [[0.6, 0.8]]}, "embed")["embedding"].shape == (1, 2)
    with pytest.raises(ValueError, match="uint8 images"):  # the client refuses before sending
        serving_requests.rest_body("serving_default", good.astype(np.float32))
    with pytest.raises(ValueError, match="Empty request"):
        serving_requests.grpc_request("wafers", "classify_bytes", [])


def test_client_rest_and_grpc_round_trip_through_local_servers(exported, tmp_path):
    """The client's real HTTP and gRPC requests, answered by stand-in servers backed by the SavedModel
    (TF Serving itself cannot run here); both answer what the Keras model predicts."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    local = serving_requests.LocalModel(str(exported["version"]))

    class Rest(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            assert self.path == "/v1/models/wafers:predict", self.path
            answer = local.predict_rest(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(400 if "error" in answer else 200)
            self.end_headers()
            self.wfile.write(json.dumps(answer).encode())

        def log_message(self, *args):
            pass

    class Grpc(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            try:
                return local.predict_grpc(request)
            except serving_requests.ServingError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    rest_server = http.server.HTTPServer(("127.0.0.1", 0), Rest)  # port 0: a free one
    threading.Thread(target=rest_server.serve_forever, daemon=True).start()
    grpc_server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Grpc(), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        encoder, database = _keras(exported)
        images = exported["images"][:6]
        expected = [TRAINED[i] for i in database.predict(keras_embeddings(encoder, images))]
        rest_address = f"127.0.0.1:{rest_server.server_address[1]}"
        for send, server in ((serving_requests.send_rest, rest_address),
                             (serving_requests.send_grpc, f"127.0.0.1:{grpc_port}")):
            for signature, inputs in (("serving_default", images), ("classify_bytes", encode_png(images))):
                outputs = send(server, "wafers", signature, inputs)
                names = [n.decode() if isinstance(n, bytes) else n for n in outputs["class_name"]]
                assert names == expected, (send.__name__, signature)
                assert outputs["scores"].shape == (6, len(TRAINED))
            embedding = send(server, "wafers", "embed", images)["embedding"]
            np.testing.assert_allclose(embedding, keras_embeddings(encoder, images), atol=1e-5)
            with pytest.raises(serving_requests.ServingError, match="[Ii]mage"):
                send(server, "wafers", "classify_bytes", [b"not an image"])
        # the command line, against the REST server: one line per file, the class the Keras model predicts
        for k, png in enumerate(encode_png(images)):
            (tmp_path / f"q{k}.png").write_bytes(png)
        result = _cli("scl_amp_tf.serving_client", f"--server={rest_address}", "--model_name=wafers",
                      f"--images={tmp_path}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = [line.split("\t") for line in result.stdout.splitlines()]
        assert [os.path.basename(r[0]) for r in rows] == [f"q{k}.png" for k in range(6)]
        assert [r[1] for r in rows] == expected
        result = _cli("scl_amp_tf.serving_client", f"--server={rest_address}", f"--images={tmp_path}", cwd=tmp_path)
        assert result.returncode != 0 and "--model_name is needed" in result.stderr
    finally:
        rest_server.shutdown()
        grpc_server.stop(None)


def test_edge_runner_classifies_a_folder_without_tensorflow(exported, tmp_path):
    """The bundle's own copy of edge_classify.py, with TensorFlow made unimportable."""
    folder = tmp_path / "queries"
    folder.mkdir()
    images = exported["images"][:10]
    for k, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(folder / f"{k:02d}.png")
    script = exported["version"] / "assets.extra" / "edge_classify.py"
    runner = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.modules['scl_amp_tf'] = None; "
              f"sys.argv = [{str(script)!r}] + sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    for variant in ("fp32", "int8"):
        out = tmp_path / f"{variant}.csv"
        result = subprocess.run([sys.executable, "-c", runner, f"--images={folder}", f"--variant={variant}",
                                 f"--output={out}"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = out.read_text().splitlines()
        assert rows[0] == "file,class,score" and len(rows) == 11
        if variant == "fp32":
            encoder, database = _keras(exported)
            expected = [TRAINED[i] for i in database.predict(keras_embeddings(encoder, images))]
            assert [r.split(",")[1] for r in rows[1:]] == expected
    missing = subprocess.run([sys.executable, str(script), f"--images={tmp_path / 'nowhere'}"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr


def test_edge_runner_refuses_bad_flags_other_models_and_skips_bad_images(exported, tmp_path):
    import shutil

    script = exported["version"] / "assets.extra" / "edge_classify.py"
    folder = tmp_path / "queries"
    folder.mkdir()
    for k, image in enumerate(exported["images"][:3]):
        Image.fromarray(image[..., 0]).save(folder / f"{k:02d}.png")
    Image.new("L", (8000, 8000)).save(folder / "bomb.png")  # 64 megapixels in a small file
    (folder / "broken.png").write_bytes(b"not an image")

    def run(*args, bundle=None):
        extra = [f"--bundle={bundle}"] if bundle else []
        return subprocess.run([sys.executable, str(script), *extra, *args], capture_output=True, text=True,
                              timeout=300)

    result = run(f"--images={folder}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) == 4  # header + the 3 good images
    assert "bomb.png: 64,000,000 pixels, above the limit of 50,000,000" in result.stderr
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    assert edge_classify.MAX_IMAGE_PIXELS == data_lib.MAX_IMAGE_PIXELS
    bad = run(f"--images={folder}", "--batch_size=-1")
    assert bad.returncode == 2 and "--batch_size=-1 must be at least 1" in bad.stderr
    # another model's .tflite with the same input size, dropped into a copy of the bundle
    bundle = tmp_path / "bundle"
    shutil.copytree(exported["version"] / "assets.extra", bundle)
    shutil.copy(bundle / "model_int8.tflite", bundle / "model_fp32.tflite")
    swapped = run(f"--images={folder / '00.png'}", bundle=bundle)
    assert swapped.returncode == 2 and "is not the model that scl_amp_tf.json describes" in swapped.stderr


def test_enrolment_refuses_names_that_mean_something_else(exported, tmp_path):
    images = str(_new_class_folder(tmp_path / "imgs", count=2))
    for name, message in (("", "empty"), ("  ", "empty"), ("Unknown", "what a rejected image is called"),
                          ("x" * 101, "101 characters"), ("a\nb", "control characters")):
        with pytest.raises(exporting.ExportError, match=message):
            enrolment.enroll(str(exported["root"] / "exported"), name, images=images)


def test_enroll_add_replace_remove(exported, tmp_path):
    export_dir = exported["root"] / "exported"
    new_images = _new_class_folder(tmp_path / NEW)
    result = _cli("scl_amp_tf.enroll", f"--export_dir={export_dir}", f"--class_name={NEW}",
                  f"--images={new_images}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    v1, v2 = (str(export_dir / "wafers" / v) for v in ("1", "2"))
    old, new = (tf.saved_model.load(v).signatures["serving_default"] for v in (v1, v2))
    references = np.stack([data_lib.resize_images(np.asarray(Image.open(p))[None, ..., None], SIZE)[0]
                           for p in sorted(new_images.iterdir())])
    assert [n.decode() for n in new(images=tf.constant(references))["class_name"].numpy()] == [NEW] * 8
    # The old classes keep exactly their scores; the new column is the mean cosine similarity to the
    # new references (section IV.A), computed here from the old version's embeddings.
    images = exported["images"]
    before, after = old(images=tf.constant(images)), new(images=tf.constant(images))
    np.testing.assert_allclose(after["scores"].numpy()[:, :len(TRAINED)], before["scores"].numpy(), atol=1e-6)
    reference_embeddings = old(images=tf.constant(references))["embedding"].numpy()
    expected = np.mean(before["embedding"].numpy() @ reference_embeddings.T, axis=1)
    np.testing.assert_allclose(after["scores"].numpy()[:, -1], expected, atol=1e-5)
    metadata = json.loads((export_dir / "wafers" / "2" / "assets.extra" / "scl_amp_tf.json").read_text())
    assert metadata["class_names"] == [*TRAINED, NEW] and metadata["reference_counts"][-1] == 8
    lengths = np.linalg.norm(ReferenceDatabase.load(export_dir / "wafers" / "2" / "assets.extra" /
                                                    "reference_db.npz").prototypes, axis=1)
    assert metadata["enrolment"] == {"class_name": NEW, "images": 8, "predicted_as_it": 8, "closer_to": {},
                                     "prototype_length": round(float(lengths[-1]), 4),
                                     "longest_other_prototype": round(float(lengths[:-1].max()), 4)}
    assert metadata["prototypes"] == "mean"
    assert "warning" not in result.stdout
    # Eight near-copies make a prototype about as long as it gets: noted if longer than every trained one's.
    assert (f"note: the prototype of 'R' (from 8 images) has length {lengths[-1]:.2f}" in result.stdout) == \
        bool(lengths[-1] > lengths[:-1].max())
    assert "added class 'R'" in metadata["history"][-1]
    edge = edge_classify.EdgeClassifier(str(export_dir / "wafers" / "2" / "assets.extra"), "fp32")
    assert list(edge.classify(references)[1]) == [NEW] * 8  # the edge bundle follows

    again = _cli("scl_amp_tf.enroll", f"--export_dir={export_dir}", f"--class_name={NEW}",
                 f"--images={new_images}", cwd=tmp_path)
    assert again.returncode == 2 and "already enrolled" in again.stderr
    path = enrolment.enroll(str(export_dir), NEW, images=str(new_images), mode="replace")
    assert os.path.basename(path) == "3"
    path = enrolment.enroll(str(export_dir), "D", mode="remove")
    assert json.loads(open(os.path.join(path, "assets.extra", "scl_amp_tf.json")).read())["class_names"] == \
        ["C", "EL", "L", "NF", NEW]
    with pytest.raises(exporting.ExportError, match="not in"):
        enrolment.enroll(str(export_dir), "D", mode="remove")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(exporting.ExportError, match="a.png"):
        enrolment.enroll(str(export_dir), "Scratch", images=str(broken))
    assert sorted(os.listdir(export_dir / "wafers")) == ["1", "2", "3", "4"]


def test_enrolment_says_when_its_own_images_predict_as_another_class(tmp_path):
    """Images that the encoder puts next to another class (here 3 of 5 sit on class "a") are
    counted, and the version's description warns with the classes they are closer to."""
    eye = np.eye(4, dtype=np.float32)
    embeddings = np.stack([eye[0] + 0.05 * eye[3]] * 3 + [eye[2], eye[2] + 0.1 * eye[1]])
    prototype = l2_normalize(embeddings).mean(axis=0, keepdims=True)
    database = ReferenceDatabase(np.concatenate([eye[:2], prototype]), np.array([2, 2, 5]), ["a", "b", "new"])
    checked = enrolment.enrolment_check(database, "new", embeddings)
    # An independent NumPy count: nearest prototype by cosine similarity.
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    nearest = np.argmax(unit @ database.prototypes.T, axis=1)
    lengths = np.linalg.norm(database.prototypes, axis=1)
    assert checked == {"class_name": "new", "images": 5, "predicted_as_it": int(np.sum(nearest == 2)),
                       "closer_to": {"a": int(np.sum(nearest == 0))},
                       "prototype_length": round(float(lengths[2]), 4), "longest_other_prototype": 1.0}
    assert checked["predicted_as_it"] == 2
    version = tmp_path / "1"
    (version / export_versions.EXTRA).mkdir(parents=True)
    (version / export_versions.EXTRA / export_versions.METADATA_FILE).write_text(json.dumps(
        {"class_names": ["a", "b", "new"], "image_size": 8, "channels": 1, "parity": {}, "tflite": {},
         "enrolment": checked}))
    described = exporting.describe_version(str(version))
    assert "warning: 3 of the 5 images enrolled as 'new' predict as another class: a (3)." in described
    assert "note: the prototype" not in described  # 0.72 here, the others 1
    # A new prototype longer than every other is noted under the mean rule only.
    for rule, noted in (("mean", True), (None, True), ("normalised", False)):
        metadata = {"class_names": ["a", "b", "new"], "image_size": 8, "channels": 1, "parity": {}, "tflite": {},
                    "enrolment": {**checked, "prototype_length": 0.97, "longest_other_prototype": 0.55}}
        if rule:  # None: a version exported before the option, which scored by the mean
            metadata["prototypes"] = rule
        (version / export_versions.EXTRA / export_versions.METADATA_FILE).write_text(json.dumps(metadata))
        note = "note: the prototype of 'new' (from 5 images) has length 0.97, every other class's at most 0.55"
        assert (note in exporting.describe_version(str(version))) == noted


def test_reject_threshold_carries_over_to_every_artefact_and_enrolment(exported, tmp_path):
    """--reject_threshold (the evaluation's open-set rule) in the SavedModel, the edge runner and
    the versions that enrolment publishes."""
    encoder, database = _keras(exported)
    train = np.load(os.path.join(exported["model_dir"], "split.npz"))["train"]
    data = data_lib.load(f"folder:{exported['data_root']}", image_size=SIZE)
    # auto: the evaluation's calibration, on the validation images (held out from fitting), computed
    # here by brute force: each one's best mean cosine over the classes (its own class without it),
    # then the conformal quantile, the floor((n + 1) q)-th smallest.
    validation = np.load(os.path.join(exported["model_dir"], "split.npz"))["validation"]
    assert len(validation) == 15  # 3 of the 12 images of each of the 5 classes
    z = keras_embeddings(encoder, data.images[train])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    labels = data.labels[train]
    best_scores = []
    for i in np.flatnonzero(np.isin(train, validation)):
        best_scores.append(max(z[i] @ z[[j for j in range(len(train)) if labels[j] == c and j != i]].mean(axis=0)
                               for c in range(len(TRAINED))))
    expected_threshold = float(np.sort(best_scores)[int(16 * 0.2) - 1])  # 15 images, q = 0.2: the 3rd
    export_dir = tmp_path / "exported"
    with pytest.raises(ValueError, match="needs 19 calibration images at least"):
        exporting.export_model(exported["model_dir"], str(export_dir), model_name="open_set",
                               formats="saved_model", reject_threshold="auto")  # 15 cannot promise 95 %
    version = exporting.export_model(exported["model_dir"], str(export_dir), model_name="open_set",
                                     formats="saved_model,tflite_fp32", check_images=16,
                                     reject_threshold="auto", reject_quantile=0.2)
    metadata = json.loads(open(os.path.join(version, "assets.extra", "scl_amp_tf.json")).read())
    assert metadata["reject_threshold"] == pytest.approx(expected_threshold, abs=1e-6)
    # A threshold that rejects some of the held-out images: the median of their best scores.
    images = exported["images"]
    best = database.scores(keras_embeddings(encoder, images)).max(axis=1)
    threshold = float(np.median(best))
    version = exporting.export_model(exported["model_dir"], str(export_dir), model_name="open_set",
                                     formats="saved_model,tflite_fp32", check_images=16, reject_threshold=threshold)
    served = tf.saved_model.load(version).signatures["serving_default"](images=tf.constant(images))
    ids, names = served["class_id"].numpy(), [n.decode() for n in served["class_name"].numpy()]
    rejected = best < threshold
    assert 0 < rejected.sum() < len(images)
    keras_ids = np.argmax(database.scores(keras_embeddings(encoder, images)), axis=1)
    np.testing.assert_array_equal(ids, np.where(rejected, -1, keras_ids))
    assert names == [exporting.UNKNOWN_NAME if r else TRAINED[i] for r, i in zip(rejected, keras_ids)]
    assert f"reject threshold {threshold:.4f}" in exporting.describe_version(version)
    edge = edge_classify.EdgeClassifier(os.path.join(version, "assets.extra"), "fp32")
    edge_ids, edge_names, _ = edge.classify(images)
    np.testing.assert_array_equal(edge_ids, ids)
    assert list(edge_names) == names
    # Enrolment keeps the threshold: the new version rejects the same images of the old classes.
    enrolled = enrolment.enroll(str(export_dir), NEW, images=str(_new_class_folder(tmp_path / NEW)),
                                model_name="open_set")
    after = json.loads(open(os.path.join(enrolled, "assets.extra", "scl_amp_tf.json")).read())
    assert after["reject_threshold"] == threshold
    out = tf.saved_model.load(enrolled).signatures["serving_default"](images=tf.constant(images))
    new_best = out["scores"].numpy().max(axis=1)  # the new class's column can only lift the best score
    np.testing.assert_array_equal(out["class_id"].numpy() == -1, new_best < threshold)
    assert np.all(new_best[~rejected] >= threshold)
    with pytest.raises(exporting.ExportError, match="cosine similarity in"):
        exporting.export_model(exported["model_dir"], str(export_dir), model_name="open_set", reject_threshold=2.0)


def test_normalised_prototypes_from_export_to_enrolment(exported, tmp_path):
    """--prototypes=normalised: the database holds the run's prototypes at unit length, every
    artefact scores by them, --reject_threshold=auto is calibrated on the same rule (brute force
    here), and enrolment stores the new class's prototype at unit length too."""
    encoder, database = _keras(exported)
    unit_prototypes = database.prototypes / np.linalg.norm(database.prototypes, axis=1, keepdims=True)
    data = data_lib.load(f"folder:{exported['data_root']}", image_size=SIZE)
    split = np.load(os.path.join(exported["model_dir"], "split.npz"))
    train, validation = split["train"], split["validation"]
    z = l2_normalize(keras_embeddings(encoder, data.images[train]))
    labels = data.labels[train]
    best_scores = []
    for i in np.flatnonzero(np.isin(train, validation)):
        means = [z[[j for j in range(len(train)) if labels[j] == c and j != i]].mean(axis=0)
                 for c in range(len(TRAINED))]
        best_scores.append(max(z[i] @ (m / np.linalg.norm(m)) for m in means))
    expected_threshold = float(np.sort(best_scores)[int(16 * 0.2) - 1])  # 15 images, q = 0.2: the 3rd
    export_dir = tmp_path / "exported"
    result = _cli("scl_amp_tf.export", f"--model_dir={exported['model_dir']}", f"--export_dir={export_dir}",
                  "--model_name=unit", "--formats=saved_model,tflite_fp32", "--check_images=16",
                  "--prototypes=normalised", "--reject_threshold=auto", "--reject_quantile=0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored by the cosine to each class's mean direction" in result.stdout
    version = export_dir / "unit" / "1"
    metadata = json.loads((version / "assets.extra" / "scl_amp_tf.json").read_text())
    assert metadata["prototypes"] == "normalised"
    assert metadata["reject_threshold"] == pytest.approx(expected_threshold, abs=1e-6)
    stored = ReferenceDatabase.load(version / "assets.extra" / "reference_db.npz")
    np.testing.assert_allclose(stored.prototypes, unit_prototypes, atol=1e-6)
    images = exported["images"]
    queries = l2_normalize(keras_embeddings(encoder, images))
    served = tf.saved_model.load(str(version)).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["scores"].numpy(), queries @ unit_prototypes.T, atol=1e-5)
    _, _, edge_scores = edge_classify.EdgeClassifier(str(version / "assets.extra"), "fp32").classify(images)
    np.testing.assert_allclose(edge_scores, queries @ unit_prototypes.T, atol=1e-4)
    # evaluate --prototypes=normalised answers as this export does (threshold and rejections too).
    result, _, predictions, evaluated = evaluating.evaluate_run(
        exported["model_dir"], prototypes="normalised", reject_threshold="auto", reject_quantile=0.2)
    assert result["prototypes"] == "normalised" and "mean direction" in result["classifier"]
    assert result["reject_threshold"] == pytest.approx(metadata["reject_threshold"], abs=1e-6)
    np.testing.assert_allclose(evaluated["test_scores"], served["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(predictions, served["class_id"].numpy())
    assert 0 < np.sum(predictions == -1) < len(predictions)  # the threshold rejects some, not all
    # predict --model_dir --prototypes=normalised too, from image files.
    files = []
    for k, image in enumerate(images[:8]):
        files.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(image[..., 0]).save(files[-1])
    predictor = predicting.RunPredictor(exported["model_dir"], "auto", 0.2, prototypes="normalised")
    assert predictor.reject_threshold == pytest.approx(metadata["reject_threshold"], abs=1e-6)
    scores, names, _, _ = predictor.classify(files)
    np.testing.assert_allclose(scores, served["scores"].numpy()[:8], atol=1e-4)
    assert names == [n.decode() for n in served["class_name"].numpy()[:8]]

    new_images = _new_class_folder(tmp_path / NEW)
    enrolled = enrolment.enroll(str(export_dir), NEW, images=str(new_images), model_name="unit")
    references = np.stack([data_lib.resize_images(np.asarray(Image.open(p))[None, ..., None], SIZE)[0]
                           for p in sorted(new_images.iterdir())])
    mean = l2_normalize(keras_embeddings(encoder, references)).mean(axis=0)
    after = ReferenceDatabase.load(os.path.join(enrolled, "assets.extra", "reference_db.npz"))
    np.testing.assert_allclose(after.prototypes[-1], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(after.prototypes[:-1], unit_prototypes, atol=1e-6)
    assert "note: the prototype" not in exporting.describe_version(enrolled)  # every prototype has length 1
    with pytest.raises(exporting.ExportError, match="--prototypes='median' must be one of mean, normalised"):
        exporting.export_model(exported["model_dir"], str(export_dir), prototypes="median")


def test_export_refuses_what_it_cannot_serve_and_publishes_nothing_on_failure(exported, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a finished training run"):
        exporting.export_model(str(tmp_path / "nothing"), str(tmp_path / "out"))
    with pytest.raises(exporting.ExportError, match="must include saved_model"):
        exporting.parse_formats("tflite")
    assert exporting.parse_formats("saved_model,tflite") == ("fp32", "fp16", "int8")
    assert exporting.parse_formats("saved_model,tflite,tflite_int16x8") == ("fp32", "fp16", "int8", "int16x8")
    assert exporting.parse_formats("saved_model,tflite_int8") == ("int8",)
    with pytest.raises(exporting.ExportError, match="unknown tflite_int4"):
        exporting.parse_formats("saved_model,tflite_int4")
    with pytest.raises(exporting.ExportError, match="exists already"):
        exporting.export_model(exported["model_dir"], str(exported["root"] / "exported"), model_name="wafers",
                               version=1, formats="saved_model")

    def failing_check(*args, **kwargs):
        raise exporting.ExportError("simulated parity failure")

    monkeypatch.setattr(exporting, "check_version", failing_check)
    out = tmp_path / "out"
    with pytest.raises(exporting.ExportError, match="simulated"):
        exporting.export_model(exported["model_dir"], str(out), model_name="m", formats="saved_model")
    assert os.listdir(out / "m") == []


def test_the_ce_baseline_exports_its_backbone_features_only(tmp_path, tiny_runs):
    """A CE run classifies by its softmax, which an export cannot enrol into: refused on the
    embedding; on the backbone features its database is the one CE's training built (on them)."""
    config = tiny_runs["ce"][0]
    result = _cli("scl_amp_tf.export", f"--model_dir={config.model_dir}", f"--export_dir={tmp_path / 'out'}",
                  cwd=tmp_path)
    assert result.returncode == 2 and "'ce' model" in result.stderr and "--representation=backbone" in result.stderr
    assert not os.path.exists(tmp_path / "out" / "ce" / "1")
    result = _cli("scl_amp_tf.export", f"--model_dir={config.model_dir}", f"--export_dir={tmp_path / 'out'}",
                  "--representation=backbone", "--formats=saved_model,tflite_fp32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reference database on the backbone features" in result.stdout
    bundle = tmp_path / "out" / "ce" / "1" / "assets.extra"
    metadata = json.loads((bundle / "scl_amp_tf.json").read_text())
    assert (metadata["method"], metadata["representation"]) == ("ce", "backbone")
    exported_db = ReferenceDatabase.load(bundle / "reference_db.npz")
    trained_db = ReferenceDatabase.load(os.path.join(config.model_dir, "reference_db.npz"))
    np.testing.assert_allclose(exported_db.prototypes, trained_db.prototypes, atol=1e-6)
    assert exported_db.class_names == trained_db.class_names


def test_export_refuses_a_run_trained_without_labels(tmp_path, tiny_runs):
    import shutil

    run = tmp_path / "pretrained"
    shutil.copytree(tiny_runs["scl_amp"][0].model_dir, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "method": "contrastive"}))
    for representation in ("embedding", "backbone"):
        with pytest.raises(exporting.ExportError, match="learnt without labels"):
            exporting.export_model(str(run), str(tmp_path / "out"), formats="saved_model",
                                   representation=representation)
    assert not os.path.exists(tmp_path / "out")


def test_export_on_backbone_features_and_enrol_on_them(exported, tmp_path):
    """--representation=backbone: every artefact outputs the pooled backbone features, the database
    holds the per-class means of the training images' normalised features (checked here in NumPy
    from the run's split), and enrolment adds a class on the same features."""
    from scl_amp_tf import inference

    encoder, _ = _keras(exported)
    features = inference.features_of(encoder)
    path = exporting.export_model(exported["model_dir"], str(tmp_path / "exported"), model_name="wafers",
                                  formats="saved_model,tflite_fp32", check_images=16, representation="backbone")
    metadata = json.loads(open(os.path.join(path, "assets.extra", "scl_amp_tf.json")).read())
    assert (metadata["method"], metadata["representation"]) == ("scl_amp", "backbone")
    assert metadata["embedding_dim"] == features.output_shape[-1]
    data = data_lib.load(f"folder:{exported['data_root']}", image_size=SIZE)
    train = np.load(os.path.join(exported["model_dir"], "split.npz"))["train"]
    unit = l2_normalize(features.predict(data.images[train] / 255.0, verbose=0))
    expected = np.stack([unit[data.labels[train] == c].mean(axis=0) for c in range(len(TRAINED))])
    database = ReferenceDatabase.load(os.path.join(path, "assets.extra", "reference_db.npz"))
    np.testing.assert_allclose(database.prototypes, expected, atol=1e-5)
    images = exported["images"]
    queries = l2_normalize(features.predict(images / 255.0, verbose=0))
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["embedding"].numpy(), queries, atol=1e-5)
    np.testing.assert_allclose(served["scores"].numpy(), queries @ expected.T, atol=1e-5)
    edge = edge_classify.EdgeClassifier(os.path.join(path, "assets.extra"), "fp32").embed(images)
    np.testing.assert_allclose(l2_normalize(edge), queries, atol=1e-4)

    new_images = _new_class_folder(tmp_path / NEW)
    enrolled = enrolment.enroll(str(tmp_path / "exported"), NEW, images=str(new_images))
    references = np.stack([data_lib.resize_images(np.asarray(Image.open(p))[None, ..., None], SIZE)[0]
                           for p in sorted(new_images.iterdir())])
    prototype = l2_normalize(features.predict(references / 255.0, verbose=0)).mean(axis=0)
    np.testing.assert_allclose(ReferenceDatabase.load(os.path.join(enrolled, "assets.extra", "reference_db.npz"))
                               .prototypes[-1], prototype, atol=1e-5)
    assert json.loads(open(os.path.join(enrolled, "assets.extra", "scl_amp_tf.json")).read())["representation"] \
        == "backbone"


def test_preprocess_is_the_training_resize():
    rng = np.random.default_rng(3)
    for shape in ((2, 52, 52, 1), (2, 80, 64, 1), (1, 30, 41, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        got = serving_graph.preprocess(tf.constant(images), SIZE).numpy()
        np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), data_lib.resize_images(images, SIZE))


def test_an_export_clears_what_a_killed_export_left_behind(exported, tmp_path):
    root = tmp_path / "exported" / "wafers"
    host = socket.gethostname()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)  # a process id that no longer runs
    abandoned = root / f".tmp-1-{host}-{dead}-abc123"
    running = root / f".tmp-2-{host}-{os.getpid()}-def456"  # this very process: still writing
    elsewhere = root / f".tmp-3-other-host-{dead}-ghi789"  # another machine's (shared storage)
    for folder in (abandoned, running, elsewhere):
        (folder / "variables").mkdir(parents=True)
    exporting.export_model(exported["model_dir"], str(tmp_path / "exported"), model_name="wafers",
                           formats="saved_model", check_images=4)
    assert sorted(os.listdir(root)) == sorted(["1", running.name, elsewhere.name])


def test_predict_a_folder_with_the_run_and_with_the_export(exported, tmp_path):
    """python -m scl_amp_tf.predict: one CSV row per readable image, the same answers from the run
    folder and from the export, the Keras model's answers; a bad file is named, skipped, rc 1."""
    import csv

    folder = tmp_path / "incoming"
    folder.mkdir()
    names = []
    for name in ("C", "L"):
        for k, path in enumerate(sorted((exported["data_root"] / name).iterdir())[:3]):
            target = folder / name / f"{k}.png"
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(path.read_bytes())
            names.append(str(target))
    (folder / "broken.png").write_bytes(b"not an image")
    rows = {}
    for source in (f"--model_dir={exported['model_dir']}", f"--export_dir={exported['root'] / 'exported'}"):
        out = tmp_path / "predictions.csv"
        result = _cli("scl_amp_tf.predict", source, f"--images={folder}", f"--output={out}", cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-3000:]
        assert f"skipped {folder / 'broken.png'}: Cannot decode image" in result.stderr
        assert "6 of 7 images classified" in result.stderr
        with open(out) as f:
            rows[source.split("=")[0]] = list(csv.DictReader(f))
    by_run, by_export = rows["--model_dir"], rows["--export_dir"]
    assert [r["file"] for r in by_run] == [r["file"] for r in by_export] == sorted(names)
    assert [r["class"] for r in by_run] == [r["class"] for r in by_export]
    for a, b in zip(by_run, by_export):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-4)
        assert float(a["score"]) >= float(a["second_score"]) and a["class"] != a["second_class"]
    # the Keras model's own answers on the same files, read as training reads them
    encoder, database = _keras(exported)
    images = np.stack([data_lib.resize_images(data_lib.read_image(r["file"])[None], SIZE)[0] for r in by_run])
    expected = database.predict(encoder.predict(images / np.float32(255), verbose=0))
    assert [r["class"] for r in by_run] == [database.class_names[i] for i in expected]
    # a threshold above every score: everything is unknown; one file works too, to stdout
    result = _cli("scl_amp_tf.predict", f"--model_dir={exported['model_dir']}", f"--images={names[0]}",
                  "--output=-", "--reject_threshold=1.01", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "file,class,score,second_class,second_score" and lines[1].startswith(f"{names[0]},unknown,")
    bad = _cli("scl_amp_tf.predict", f"--model_dir={exported['model_dir']}", f"--export_dir={tmp_path}",
               f"--images={folder}", cwd=tmp_path)
    assert bad.returncode == 2 and "give one of --model_dir" in bad.stderr


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((300, 400), np.uint8), "L").save(path)
    with pytest.raises(data_lib.DataError, match=r"huge\.png has 120,000 pixels, above the limit of 100,000"):
        data_lib.read_image(str(path), max_pixels=100_000)
    assert data_lib.read_image(str(path), max_pixels=120_000).shape == (300, 400, 1)
    assert data_lib.image_pixels(str(path)) == 120_000


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """A server that trickles its answer one byte at a time, or answers JSON without outputs."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/v1/models/slow"):
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    threading.Event().wait(0.3)
            except OSError:
                pass
        else:
            body = b'{"predictions": [1]}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_rest_timeout_bounds_the_whole_request_and_bad_answers_are_one_line_errors():
    import time

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    png = [encode_png(np.zeros((1, 8, 8, 1), np.uint8))[0]]
    try:
        start = time.monotonic()
        with pytest.raises(serving_requests.ServingError, match=r"No complete answer .* within 1\.5 s"):
            serving_requests.send_rest(address, "slow", "classify_bytes", png, timeout=1.5)
        assert time.monotonic() - start < 4  # a byte every 0.3 s would have taken 300 s
        with pytest.raises(serving_requests.ServingError, match="neither outputs nor error"):
            serving_requests.send_rest(address, "odd", "classify_bytes", png)
        with pytest.raises(ValueError, match="http:// or https://"):
            serving_requests.send_rest("ftp://127.0.0.1:21", "odd", "classify_bytes", png)
        with pytest.raises((ValueError, serving_requests.ServingError), match="127.0.0.1:99999"):
            serving_requests.send_rest("127.0.0.1:99999", "odd", "classify_bytes", png)
    finally:
        server.shutdown()


def test_export_writes_a_serving_config_naming_every_exported_model(exported, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from scl_amp_tf import serving_config

    export_dir = exported["root"] / "exported"
    text = (export_dir / "models.config").read_text()  # written by the export command of the fixture
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path) for c in parsed.model_config_list.config] == [("wafers", "/models/wafers")]
    # a second model under the same root joins the config
    second = tmp_path / "root"
    for name in ("neu", "wafers"):
        (second / name / "1").mkdir(parents=True)
    (second / "empty").mkdir()  # no version: not served
    path = serving_config.write(str(second), "/srv/models")
    parsed = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in parsed.model_config_list.config] == [
        ("neu", "/srv/models/neu", "tensorflow"), ("wafers", "/srv/models/wafers", "tensorflow")]


def test_dihedral_tta_from_training_to_every_artefact(exported, tmp_path):
    """--tta=dihedral: the run's database is built from the mean unit embedding of each image's 8
    rotations and flips (checked with NumPy), evaluate, predict, the SavedModel and the LiteRT
    runner all embed that way, and their answers do not change when an image is turned."""
    config = TrainConfig(model_dir=str(tmp_path / "run"), dataset=f"folder:{exported['data_root']}", shots_per_class=12,
                         image_size=SIZE, backbone="resnet_tiny", epochs=2, tta="dihedral", verbose=0)
    metrics = train_and_evaluate(config)
    data = data_lib.load(f"folder:{exported['data_root']}", image_size=SIZE)
    split = np.load(os.path.join(config.model_dir, "split.npz"))
    train_images, train_labels = data.images[split["train"]], data.labels[split["train"]]
    test_images = data.images[split["test"]]
    encoder = keras.models.load_model(os.path.join(config.model_dir, "encoder.keras"))

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def tta_numpy(images):  # the 8 transforms written out here, not taken from the package
        views = [np.rot90(m, k, axes=(1, 2)) for m in (images, images[:, :, ::-1]) for k in range(4)]
        return unit(np.mean([unit(encoder.predict(np.ascontiguousarray(v) / np.float32(255), verbose=0))
                             for v in views], axis=0))

    references = tta_numpy(train_images)
    expected_db = np.stack([unit(references[train_labels == c]).mean(axis=0) for c in range(len(TRAINED))])
    database = ReferenceDatabase.load(os.path.join(config.model_dir, "reference_db.npz"))
    np.testing.assert_allclose(database.prototypes, expected_db, atol=2e-5)
    queries = tta_numpy(test_images)
    accuracy = np.mean(database.predict(queries) == data.labels[split["test"]])
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    result, _, _, _ = evaluating.evaluate_run(config.model_dir)
    assert result["tta"] == "dihedral" and result["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert evaluating.evaluate_run(config.model_dir, tta="none")[0]["tta"] == "none"

    export_dir = tmp_path / "exported"
    version = exporting.export_model(config.model_dir, str(export_dir), formats="saved_model,tflite_fp32",
                                     check_images=16, representative_images=16)
    bundle = os.path.join(version, export_versions.EXTRA)
    assert edge_classify.load_metadata(bundle)["tta"] == "dihedral"
    loaded = tf.saved_model.load(version)
    sample = test_images[:6]
    turned = np.ascontiguousarray(np.rot90(sample[:, :, ::-1], 1, axes=(1, 2)))
    for images in (sample, turned):
        served = loaded.signatures["serving_default"](images=tf.constant(images))
        np.testing.assert_allclose(served["embedding"].numpy(), queries[:6], atol=1e-4)
        edge = edge_classify.EdgeClassifier(bundle, "fp32").embed(images)
        np.testing.assert_allclose(edge, queries[:6], atol=1e-4)
    # predict from the run folder: the same scores as the database on the NumPy embeddings
    files = []
    for k, image in enumerate(sample):
        files.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(image[..., 0]).save(files[-1])
    scores, names, kept, failures = predicting.RunPredictor(config.model_dir).classify(files)
    assert kept == files and not failures
    np.testing.assert_allclose(scores, database.scores(queries[:6]), atol=1e-4)
    assert names == [TRAINED[i] for i in database.predict(queries[:6])]
