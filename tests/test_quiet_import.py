"""Importing the package loads TensorFlow without its C++ INFO lines on stderr (TensorFlow 2.21
prints them before TF_CPP_MIN_LOG_LEVEL is read), unless the user asks for them."""
import os
import subprocess
import sys

CODE = "import scl_amp_tf, tensorflow as tf, sys; print(int(tf.constant(41) + 1)); sys.stderr.write('kept\\n')"


def _run(level):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)


def test_no_info_lines_by_default_and_all_of_them_on_request():
    quiet = _run(None)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "42", quiet.stderr[-2000:]
    assert "I0000" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr, quiet.stderr[-2000:]
    assert quiet.stderr.endswith("kept\n")  # stderr itself works after the import
    loud = _run("0")  # the user's own level: TensorFlow's INFO lines are theirs to see
    assert loud.returncode == 0 and "I0000" in loud.stderr, loud.stderr[-2000:]
