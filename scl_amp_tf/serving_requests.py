"""REST and gRPC ``Predict`` requests to an exported model behind TF Serving, and a local stand-in.

The library behind ``python -m scl_amp_tf.serving_client`` (see there for the command lines).
By default the image files are sent as they are (``classify_bytes``: any size and format);
``serving_default`` sends decoded uint8 pixels instead and ``embed`` asks for the embeddings only.
:class:`LocalModel` answers the very same request with the SavedModel loaded in this process, the
way TF Serving would (a dry run before deploying).

REST bodies use TF Serving's columnar ``inputs`` format; binary strings travel as ``{"b64": ...}``.
gRPC needs ``pip install -e ".[serving]"`` (tensorflow-serving-api).
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import urllib.parse

import numpy as np

SIGNATURE_INPUTS = {"serving_default": "images", "embed": "images", "classify_bytes": "image_bytes"}
SIGNATURE_OUTPUTS = {"serving_default": ("class_id", "class_name", "scores", "embedding"),
                     "classify_bytes": ("class_id", "class_name", "scores", "embedding"),
                     "embed": ("embedding",)}


class ServingError(RuntimeError):
    """The server (or the in-process SavedModel) refused a request; the message is its answer."""


def _check(signature, inputs):
    if signature not in SIGNATURE_INPUTS:
        raise ValueError(f"Unknown signature {signature!r}; use one of {', '.join(SIGNATURE_INPUTS)}.")
    if len(inputs) == 0:
        raise ValueError("Empty request: give at least one image.")
    if signature == "classify_bytes":
        if not all(isinstance(x, bytes) for x in inputs):
            raise ValueError("classify_bytes takes encoded image files (bytes).")
        return list(inputs)
    images = np.asarray(inputs)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{signature} takes uint8 images [N, H, W, C]; got {images.dtype} {images.shape}.")
    return images


def rest_body(signature, inputs):
    """The JSON body of ``POST /v1/models/<name>[/versions/<v>]:predict``."""
    inputs = _check(signature, inputs)
    if signature == "classify_bytes":
        value = [{"b64": base64.b64encode(x).decode("ascii")} for x in inputs]
    else:
        value = inputs.tolist()
    return {"signature_name": signature, "inputs": {SIGNATURE_INPUTS[signature]: value}}


def rest_url(server, model_name, version=None):
    server = server if "://" in server else f"http://{server}"
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    return f"{server.rstrip('/')}{path}:predict"


def outputs_from_rest(answer, signature):
    """TF Serving's JSON answer -> ``{output name: numpy array}``; raises ServingError on an error answer.

    In the columnar format TF Serving names the outputs, except for a signature with a single
    output (``embed``), whose answer is the value itself.
    """
    if "error" in answer:
        raise ServingError(answer["error"])
    outputs = answer["outputs"]
    if not isinstance(outputs, dict):
        outputs = {SIGNATURE_OUTPUTS[signature][0]: outputs}
    return {name: np.asarray(value) for name, value in outputs.items()}


def _post(url, body, timeout):
    """``(status, body bytes)`` of a JSON POST that must finish within ``timeout`` seconds in all.

    urllib's timeout bounds each socket operation, so a server that trickles a byte every few
    seconds could hold a request for hours; here the whole exchange runs in a helper thread and
    its socket is shut down at the deadline."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--server={url}: give host:port or an http:// or https:// URL.")
    try:
        connection = (http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection)(
            parts.hostname, parts.port, timeout=timeout)
    except (ValueError, http.client.InvalidURL) as e:  # e.g. a port out of range
        raise ValueError(f"--server={url}: {e}") from None
    result = {}

    def exchange():
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            result["answer"] = (response.status, response.read())
        except Exception as e:  # noqa: BLE001 (handed to the caller's thread)
            result["error"] = e

    worker = threading.Thread(target=exchange, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        if connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        connection.close()
        raise ServingError(f"No complete answer from {url} within {timeout:g} s (--timeout).")
    connection.close()
    if "error" in result:
        e = result["error"]
        if isinstance(e, (OSError, http.client.HTTPException, OverflowError)):
            raise ServingError(f"Cannot reach {url}: {e}") from None
        raise e
    return result["answer"]


def send_rest(server, model_name, signature, inputs, version=None, timeout=30.0):
    """Outputs of a REST ``Predict`` that finishes within ``timeout`` seconds in all."""
    url = rest_url(server, model_name, version)
    status, body = _post(url, json.dumps(rest_body(signature, inputs)).encode(), timeout)
    try:
        answer = json.loads(body)
    except ValueError:
        raise ServingError(f"HTTP {status}: the answer is not JSON: {body[:200]!r}") from None
    if not isinstance(answer, dict) or ("outputs" not in answer and "error" not in answer):
        raise ServingError(f"HTTP {status}: the answer has neither outputs nor error: {str(answer)[:200]}")
    return outputs_from_rest(answer, signature)


def grpc_request(model_name, signature, inputs, version=None):
    """A ``tensorflow.serving.PredictRequest`` for the signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    inputs = _check(signature, inputs)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    tensor = tf.make_tensor_proto(inputs, dtype=tf.string if signature == "classify_bytes" else tf.uint8)
    request.inputs[SIGNATURE_INPUTS[signature]].CopyFrom(tensor)
    return request


def outputs_from_grpc(response):
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def send_grpc(server, model_name, signature, inputs, version=None, timeout=30.0):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_request(model_name, signature, inputs, version)
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return outputs_from_grpc(stub.Predict(request, timeout=timeout))
        except grpc.RpcError as e:
            raise ServingError(f"{e.code().name}: {e.details()}") from None


class LocalModel:
    """Answers REST bodies and gRPC requests with a SavedModel loaded in this process, as TF Serving
    would: the request's inputs become the signature's tensors and any TensorFlow error becomes
    the error answer (REST ``{"error": ...}``, gRPC :class:`ServingError`)."""

    def __init__(self, saved_model_dir):
        import tensorflow as tf

        self._tf = tf
        self.saved_model_dir = saved_model_dir
        self._loaded = tf.saved_model.load(saved_model_dir)

    def _run(self, signature, name, value, json_numbers=False):
        tf = self._tf
        if signature not in self._loaded.signatures:
            raise ServingError(f"Serving signature name: \"{signature}\" not found in signature def")
        function = self._loaded.signatures[signature]
        spec = function.structured_input_signature[1]
        if set(spec) != {name}:
            raise ServingError(f"Signature {signature} takes input(s) {', '.join(spec)}, not {name}.")
        try:
            tensor = tf.convert_to_tensor(value)
            if tensor.dtype != spec[name].dtype:
                # JSON numbers carry no dtype: TF Serving casts them (range checked by the caller);
                # a gRPC tensor must come with the signature's dtype.
                if not (json_numbers and tensor.dtype.is_integer and spec[name].dtype.is_integer):
                    raise ServingError(f"Expects arg {name} to be {spec[name].dtype.name} but "
                                       f"{tensor.dtype.name} is provided")
                tensor = tf.cast(tensor, spec[name].dtype)
            if not spec[name].shape.is_compatible_with(tensor.shape):
                raise ServingError(f"Input {name} must have shape {spec[name].shape}, got {tensor.shape}.")
            return {k: v.numpy() for k, v in function(**{name: tensor}).items()}
        except (tf.errors.OpError, ValueError, TypeError) as e:
            raise ServingError(getattr(e, "message", str(e)).strip()) from None

    def predict_rest(self, body):
        """A JSON body (columnar ``inputs``) -> TF Serving's JSON answer (``outputs`` or ``error``)."""
        try:
            signature = body.get("signature_name", "serving_default")
            (name, value), = body["inputs"].items()
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = [base64.b64decode(v["b64"]) for v in value]
            elif signature == "classify_bytes" or value == []:
                value = np.asarray(value, dtype=object if signature == "classify_bytes" else np.uint8)
            else:
                value = np.asarray(value)
                if value.dtype.kind == "i" and value.size and (value.min() < 0 or value.max() > 255):
                    raise ServingError(f"Input {name}: values outside 0..255 for a uint8 tensor.")
            outputs = self._run(signature, name, value, json_numbers=True)
        except ServingError as e:
            return {"error": str(e)}
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            return {"error": f"Malformed request body: {e}"}
        answer = {k: [x.decode() if isinstance(x, bytes) else x for x in v.tolist()] for k, v in outputs.items()}
        return {"outputs": answer if len(answer) > 1 else next(iter(answer.values()))}

    def predict_grpc(self, request):
        """A ``PredictRequest`` -> a ``PredictResponse``; raises ServingError like the server's error status."""
        from tensorflow_serving.apis import predict_pb2

        tf = self._tf
        signature = request.model_spec.signature_name or "serving_default"
        if len(request.inputs) != 1:
            raise ServingError(f"Expected one input, got {len(request.inputs)}.")
        (name, proto), = request.inputs.items()
        outputs = self._run(signature, name, tf.make_ndarray(proto))
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


def read_inputs(paths, signature):
    """Image files -> bytes (classify_bytes) or one uint8 batch (serving_default, embed)."""
    import tensorflow as tf

    encoded = []
    for path in paths:
        with open(path, "rb") as f:
            encoded.append(f.read())
    if signature == "classify_bytes":
        return encoded
    images = []
    for path, data in zip(paths, encoded):
        try:
            images.append(tf.io.decode_image(data, expand_animations=False).numpy())
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise ValueError(f"Cannot decode image {path}: {e.message.strip()}") from None
    if len({im.shape for im in images}) > 1:
        raise ValueError(f"{signature} sends one uint8 batch, so the images must share one size and channel "
                         "count; these differ. Use --signature=classify_bytes (the default) for mixed files.")
    return np.stack(images)
