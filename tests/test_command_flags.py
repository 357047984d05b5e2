"""Every command line: the same name for the same thing, and --help lists the shared flags."""
import os
import subprocess
import sys

import pytest

from scl_amp_tf import command_flags, open_set

# command -> the shared flags it must offer (and show in --help)
SHARED = {
    "evaluate": ["--reject_threshold", "--reject_quantile", "--data_dir", "--manual_dir"],
    "export": ["--reject_threshold", "--reject_quantile", "--data_dir", "--manual_dir"],
    "predict": ["--images", "--reject_threshold", "--reject_quantile"],
    "gradcam": ["--images", "--data_dir", "--manual_dir"],
    "enroll": ["--images"],
    "serving_client": ["--images"],
}


@pytest.mark.parametrize("command", sorted(SHARED))
def test_help_lists_the_shared_flags(command):
    result = subprocess.run([sys.executable, "-m", f"scl_amp_tf.{command}", "--help"], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert "Try --helpfull" in result.stdout, result.stderr[-2000:]  # absl's --help (its exit code is 1)
    listed = {line.split(":")[0].strip() for line in result.stdout.splitlines() if line.strip().startswith("--")}
    missing = [f for f in SHARED[command] if f not in listed]
    assert not missing, (command, missing)
    if "--images" in SHARED[command]:
        assert "file or a folder" in result.stdout  # --images takes a file or a folder everywhere


def test_the_default_quantile_is_the_library_default():
    assert command_flags.DEFAULT_REJECT_QUANTILE is open_set.DEFAULT_REJECT_QUANTILE
