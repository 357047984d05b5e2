"""Runs `tfds build` without the rest of the `tfds` command line.

The `tfds` CLI of tensorflow-datasets 4.9.10 imports, at start-up, modules for
all its commands, and two of them need packages that tensorflow-datasets does
not install: `tfds convert_format` needs apache-beam and `tfds
build_croissant` needs mlcroissant. Without them every command, `tfds build`
included, fails with `ModuleNotFoundError: No module named 'apache_beam'`
(then `'mlcroissant'`); see tensorflow/datasets issue #5463. The builders here
need neither. This script runs the same `build` command (same flags, same
code: `tensorflow_datasets.scripts.cli.build`) without importing the others:

    python datasets/tfds_build.py datasets/neu --manual_dir=/path/to/NEU-CLS
    python datasets/tfds_build.py datasets/mixed_wm38 --manual_dir=/path/to/dir

(A leading `build` is accepted too, so `tfds` can be replaced word for word.)
With apache-beam and mlcroissant installed, plain `tfds build ...` works.
"""

import sys


def main() -> None:
  # pylint: disable=g-import-not-at-top
  from absl import app
  import tensorflow_datasets as tfds
  from tensorflow_datasets.scripts.cli import build
  from tensorflow_datasets.scripts.cli import cli_utils

  if len(sys.argv) > 1 and sys.argv[1] == 'build':
    del sys.argv[1]
  sys.argv[0] = 'tfds build'
  parse = cli_utils.make_flags_parser(
      build.Args, description='tfds build (without the other tfds commands)'
  )

  def run(args: build.Args) -> None:
    # As `tfds` (scripts/cli/main.py): every dataset is visible.
    tfds.core.visibility.set_availables([
        tfds.core.visibility.DatasetType.TFDS_PUBLIC,
        tfds.core.visibility.DatasetType.COMMUNITY_PUBLIC,
    ])
    args.execute()

  app.run(run, flags_parser=parse)


if __name__ == '__main__':
  main()
