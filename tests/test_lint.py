"""The code passes the linter configured in pyproject.toml (ruff: pyflakes, pycodestyle, bug
patterns, one line length of 120), so that CI keeps it so; and the package keeps its shape
(issue #17): modules of one idea, the trainer imported only where training starts."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


MAX_LINES = 350  # a module longer than this says at its top why it is one file


def test_long_modules_say_why_they_are_one_file():
    import ast
    import glob

    too_long = []
    for path in sorted(glob.glob(os.path.join(ROOT, "scl_amp_tf", "*.py")) + glob.glob(
            os.path.join(ROOT, "export", "*", "*.py"))):
        with open(path) as f:
            source = f.read()
        if source.count("\n") > MAX_LINES and "Why one file" not in (ast.get_docstring(ast.parse(source)) or ""):
            too_long.append(os.path.relpath(path, ROOT))
    assert not too_long, f"over {MAX_LINES} lines without a 'Why one file' in the docstring: {too_long}"


def test_only_the_training_command_and_reproduce_import_the_trainer():
    import glob
    import re

    importers = []
    for path in sorted(glob.glob(os.path.join(ROOT, "scl_amp_tf", "*.py"))):
        with open(path) as f:
            if re.search(r"^\s*(from scl_amp_tf import .*\btraining\b|from scl_amp_tf\.training import|import "
                         r"scl_amp_tf\.training)", f.read(), re.M):
                importers.append(os.path.basename(path))
    assert sorted(importers) == ["reproducing.py", "train.py"], importers
