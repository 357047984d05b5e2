"""Command line: send images to an exported model behind TF Serving (REST or gRPC) and print its answers.

    python -m scl_amp_tf.serving_client --server=localhost:8501 --model_name=neu --images=DIR
    python -m scl_amp_tf.serving_client --protocol=grpc --server=localhost:8500 --model_name=neu --images=DIR
    python -m scl_amp_tf.serving_client --saved_model=exported/neu/1 --images=DIR   # no server

By default the image files are sent as they are (``classify_bytes``: any size and format);
``--signature=serving_default`` sends decoded uint8 pixels instead and ``embed`` asks for the
embeddings only. ``--saved_model=VERSION_DIR`` answers the very same request with the SavedModel
loaded in this process, the way TF Serving would (a dry run before deploying). One line per image:
``file<TAB>class<TAB>score`` (or the embedding). The work is in :mod:`scl_amp_tf.serving_requests`;
gRPC needs ``pip install -e ".[serving]"`` (tensorflow-serving-api).
"""
from __future__ import annotations

import sys

from absl import app, flags

from scl_amp_tf import command_flags, serving_requests

command_flags.define_images()
flags.DEFINE_string("server", "localhost:8501", "host:port of TF Serving (REST 8501, gRPC 8500), or an "
                    "http(s) URL for REST.")
flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "How to reach the server.")
flags.DEFINE_string("model_name", None, "TF Serving's model name (the folder under the export root).")
flags.DEFINE_integer("version", None, "A specific version (default: the newest).")
flags.DEFINE_enum("signature", "classify_bytes", sorted(serving_requests.SIGNATURE_INPUTS), "The signature asked.")
flags.DEFINE_float("timeout", 30.0, "Seconds the whole request may take (connection, sending, the full answer).")
flags.DEFINE_string("saved_model", None, "Answer with this SavedModel (a version folder) in-process instead of "
                    "a server.")
flags.mark_flag_as_required("images")

flags.adopt_module_key_flags(command_flags)  # --help lists the shared flags too
FLAGS = flags.FLAGS


def _outputs(paths):
    inputs = serving_requests.read_inputs(paths, FLAGS.signature)
    if FLAGS.saved_model:
        local = serving_requests.LocalModel(FLAGS.saved_model)
        if FLAGS.protocol == "rest":
            answer = local.predict_rest(serving_requests.rest_body(FLAGS.signature, inputs))
            return serving_requests.outputs_from_rest(answer, FLAGS.signature)
        request = serving_requests.grpc_request(FLAGS.model_name or "local", FLAGS.signature, inputs)
        return serving_requests.outputs_from_grpc(local.predict_grpc(request))
    send = serving_requests.send_rest if FLAGS.protocol == "rest" else serving_requests.send_grpc
    return send(FLAGS.server, FLAGS.model_name, FLAGS.signature, inputs, FLAGS.version, timeout=FLAGS.timeout)


def main(argv):
    command_flags.begin(argv, quiet_logging=False)
    if not FLAGS.saved_model and not FLAGS.model_name:
        raise app.UsageError("--model_name is needed to reach a server.")
    if FLAGS.timeout <= 0:
        raise app.UsageError(f"--timeout={FLAGS.timeout} must be positive.")
    from scl_amp_tf.edge.edge_classify import image_files  # the TensorFlow-free lister

    try:
        paths = image_files(FLAGS.images)
        outputs = _outputs(paths)
    except (OSError, ValueError, serving_requests.ServingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, path in enumerate(paths):
        if "class_name" in outputs:
            name = outputs["class_name"][i]
            name = name.decode() if isinstance(name, bytes) else name
            print(f"{path}\t{name}\t{float(outputs['scores'][i].max()):.4f}")
        else:
            print(f"{path}\t" + " ".join(f"{v:.4f}" for v in outputs["embedding"][i]))
    return 0


if __name__ == "__main__":
    app.run(main)
