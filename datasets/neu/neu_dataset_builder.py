"""NEU-CLS (NEU surface defect database) dataset: hot-rolled steel strip defects.

1,800 grayscale images of 200x200 pixels, 300 for each of 6 surface defect
classes, from K. Song and Y. Yan (Northeastern University, 2013). The data
cannot be downloaded automatically: put it in the manual directory (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`).

Labels are `CLASS_NAMES` in the order of the SCL-AMP paper:
RS (rolled-in scale), Pa (patches), Cr (crazing), PS (pitted surface),
In (inclusion), Sc (scratches).

Every image is stored single-channel (an RGB or palette file is converted to
8-bit gray with PIL's `convert('L')`) and PNG-encoded (lossless). There is one
split, `train`, with every image: NEU-CLS has no official split. Note that
`Pa_101` and `Pa_105` have identical pixels (the original set has this
duplicate); split with care.

This module imports only tensorflow_datasets, numpy and the standard library,
so that `tfds build datasets/neu --manual_dir=...` can import it on its own.
"""

from __future__ import annotations

import io
import logging
import pathlib
import sys
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

# Class codes in the order used by the paper (ClassLabel ids 0..5).
CLASS_NAMES = ('RS', 'Pa', 'Cr', 'PS', 'In', 'Sc')
CLASS_DESCRIPTIONS = {
    'RS': 'rolled-in scale',
    'Pa': 'patches',
    'Cr': 'crazing',
    'PS': 'pitted surface',
    'In': 'inclusion',
    'Sc': 'scratches',
}
IMAGE_EXTENSIONS = ('.bmp', '.png', '.jpg', '.jpeg')
HOMEPAGE = 'http://faculty.neu.edu.cn/songkechen/zh_CN/zdylm/263270/list/'

_CLASS_BY_LOWER = {name.lower(): name for name in CLASS_NAMES}
# How many nested "single sub-folder" levels are searched (e.g. NEU-CLS/).
_MAX_WRAPPER_DEPTH = 2
# PIL modes that hold 8-bit data and can be converted to 'L' without loss of range.
_EIGHT_BIT_MODES = ('1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr')

_LOG = logging.getLogger(__name__)

_LAYOUTS = """\
  (a) flat, as in the original NEU-CLS archive:
        {root}/Cr_1.bmp, {root}/Cr_2.bmp, ..., {root}/Sc_300.bmp
      (class = file-name prefix before the last "_")
  (b) one sub-folder per class:
        {root}/Cr/Cr_1.png, ..., {root}/Sc/Sc_300.png
      (class = folder name)
  Either layout may also sit inside one single sub-folder, e.g.
        {root}/NEU-CLS/Cr_1.bmp
  Class codes: RS (rolled-in scale), Pa (patches), Cr (crazing), PS (pitted
  surface), In (inclusion), Sc (scratches). Extensions: .bmp .png .jpg .jpeg
  (any case)."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
NEU-CLS cannot be downloaded automatically. Get the 1,800 images (6 classes x
300, 200x200 gray, BMP in the original release) from:
  * the authors, K. Song and Y. Yan, Northeastern University:
    {HOMEPAGE}
  * or a mirror of the "NEU surface defect database" on Kaggle. Check that the
    copy is NEU-CLS (files named Cr_1.bmp ... Sc_300.bmp). NEU-DET, the
    detection release (JPEG files named crazing_1.jpg with box annotations), is
    not accepted as is.
Put the files in the manual directory (`tfds build --manual_dir=DIR`, or
`tfds.download.DownloadConfig(manual_dir=DIR)`; the TFDS default is
<data_dir>/downloads/manual/) in one of these layouts:
{_LAYOUTS.format(root='DIR')}
"""


class NeuFile(NamedTuple):
  """One image file found in the manual directory."""

  key: str  # path relative to the manual dir, '/'-separated (example key)
  path: tfds.core.Path
  label: str  # one of CLASS_NAMES


def class_from_name(name: str) -> str | None:
  """Returns the class code for a file or folder name, or None.

  For a file name the class is the prefix before the last underscore
  (`PS_17.bmp` -> `PS`); for a folder name it is the whole name (`PS`). The
  match ignores case (`ps_17.BMP` -> `PS`).
  """
  stem = name
  for ext in IMAGE_EXTENSIONS:
    if name.lower().endswith(ext):
      stem = name[: -len(ext)]
      if '_' not in stem:
        return None
      stem = stem.rsplit('_', 1)[0]
      break
  return _CLASS_BY_LOWER.get(stem.lower())


def _is_image(path: tfds.core.Path) -> bool:
  return (
      not path.name.startswith('.')
      and path.suffix.lower() in IMAGE_EXTENSIONS
      and path.is_file()
  )


def _visible_dirs(root: tfds.core.Path) -> list[tfds.core.Path]:
  return sorted(
      (p for p in root.iterdir() if not p.name.startswith('.') and p.is_dir()),
      key=lambda p: p.name,
  )


def _images_in(folder: tfds.core.Path) -> list[tfds.core.Path]:
  return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)


def _no_images_error(manual_dir: tfds.core.Path) -> FileNotFoundError:
  return FileNotFoundError(
      f'No NEU-CLS images found in the manual directory {manual_dir}\n'
      'Download NEU-CLS and put the images there in one of these layouts:\n'
      + _LAYOUTS.format(root=manual_dir)
      + f'\nWhere to get the data:\n{MANUAL_DOWNLOAD_INSTRUCTIONS}'
  )


def find_images(manual_dir) -> list[NeuFile]:
  """Lists the NEU-CLS images under `manual_dir`, sorted by key.

  Args:
    manual_dir: the manual directory (str or path).

  Returns:
    One `NeuFile` per image.

  Raises:
    FileNotFoundError: `manual_dir` does not exist or holds no image in an
      accepted layout; the message names the layouts and the directory.
    ValueError: a file's class cannot be told from its name, the same image
      appears twice (e.g. `Cr_1.bmp` and `Cr_1.png`), or the layout is
      ambiguous; the message names the file or folder.
  """
  manual_dir = tfds.core.Path(manual_dir)
  if not manual_dir.is_dir():
    raise _no_images_error(manual_dir)
  root = manual_dir
  for _ in range(_MAX_WRAPPER_DEPTH + 1):
    files = _find_in_root(root, manual_dir)
    if files:
      return files
    subdirs = _visible_dirs(root)
    if len(subdirs) != 1 or _images_in(root):
      break
    root = subdirs[0]  # e.g. <manual_dir>/NEU-CLS/
  raise _no_images_error(manual_dir)


def _find_in_root(
    root: tfds.core.Path, manual_dir: tfds.core.Path
) -> list[NeuFile]:
  """Files of layout (a) or (b) directly in `root`; [] if neither is there."""
  prefix = '' if root == manual_dir else _relative(root, manual_dir) + '/'
  flat_images = _images_in(root)
  class_dirs = [(d, class_from_name(d.name)) for d in _visible_dirs(root)]
  class_dirs = [(d, c) for d, c in class_dirs if c is not None]

  files: list[NeuFile] = []
  if flat_images:  # layout (a)
    for d, _ in class_dirs:
      if _images_in(d):
        raise ValueError(
            f'Ambiguous NEU-CLS layout in {root}: it holds both images (e.g.'
            f' {flat_images[0].name}) and a class folder with images ({d}).'
            ' Keep one layout: either all files flat, or one folder per class.'
        )
    for path in flat_images:
      label = class_from_name(path.name)
      if label is None:
        raise ValueError(
            f'Cannot tell the NEU-CLS class of the file {path}: its name must'
            ' start with one of the class codes'
            f' {", ".join(CLASS_NAMES)} followed by "_" (e.g. Cr_1.bmp).'
        )
      files.append(NeuFile(prefix + path.name, path, label))
  else:  # layout (b)
    for folder, label in class_dirs:
      for path in _images_in(folder):
        named = class_from_name(path.name)
        if named is not None and named != label:
          raise ValueError(
              f'The file {path} is named as class {named} but lies in the'
              f' folder of class {label}.'
          )
        files.append(NeuFile(f'{prefix}{folder.name}/{path.name}', path, label))
    if files:
      known = {d.name for d, _ in class_dirs}
      for d in _visible_dirs(root):
        if d.name not in known and _images_in(d):
          raise ValueError(
              f'The folder {d} holds images but its name is not a NEU-CLS'
              f' class code ({", ".join(CLASS_NAMES)}).'
          )

  seen: dict[tuple[str, str], tfds.core.Path] = {}
  for f in files:
    stem = f.path.name.rsplit('.', 1)[0].lower()
    other = seen.setdefault((f.label, stem), f.path)
    if other != f.path:
      raise ValueError(
          f'The image {f.path} appears twice in the manual directory (also as'
          f' {other}); keep one file per image.'
      )
  return sorted(files, key=lambda f: f.key)


def _relative(path: tfds.core.Path, root: tfds.core.Path) -> str:
  return '/'.join(path.relative_to(root).parts)


def load_gray_image(path) -> np.ndarray:
  """Reads an image file as a (height, width, 1) uint8 array.

  RGB, palette and 1-bit images are converted to 8-bit gray (PIL
  `convert('L')`, ITU-R 601-2 luma).

  Raises:
    ValueError: the file cannot be decoded, or is not 8-bit; names the file.
  """
  path = tfds.core.Path(path)
  pil_image = tfds.core.lazy_imports.PIL_Image
  try:
    data = path.read_bytes()
    with pil_image.open(io.BytesIO(data)) as img:
      img.load()
      if img.mode not in _EIGHT_BIT_MODES:
        raise ValueError(f'unsupported image mode {img.mode!r} (need 8-bit)')
      gray = np.asarray(img.convert('L'), dtype=np.uint8)
  except Exception as e:  # PIL raises many types (OSError, SyntaxError, ...)
    raise ValueError(f'Cannot decode the NEU-CLS image file {path}: {e}') from e
  if gray.ndim != 2 or gray.size == 0:
    raise ValueError(
        f'Cannot decode the NEU-CLS image file {path}: got shape {gray.shape}'
    )
  return gray[:, :, None]


def _registered_from_this_file(name: str) -> bool:
  """Whether `name` is already registered by this same file.

  Happens when this file is imported under two module names in one process
  (e.g. `datasets.neu.neu_dataset_builder` by pytest and
  `scl_amp_tf.tfds_datasets.neu.neu_dataset_builder` by the package); a plain
  second registration would fail with "Dataset with name neu already
  registered". A *different* builder with the same name still fails.
  """
  registry = getattr(tfds.core.registered, '_DATASET_REGISTRY', {})
  other = registry.get(name)
  if other is None:
    return False
  other_file = getattr(sys.modules.get(other.__module__), '__file__', None)
  return other_file is not None and (
      pathlib.Path(other_file).resolve() == pathlib.Path(__file__).resolve()
  )


class Builder(
    tfds.core.GeneratorBasedBuilder,
    skip_registration=_registered_from_this_file('neu'),
):
  """DatasetBuilder for NEU-CLS (manual download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': (
          'Initial release: all 1,800 NEU-CLS images in one `train` split,'
          ' stored as 1-channel PNG, labels in the paper order'
          ' RS, Pa, Cr, PS, In, Sc.'
      ),
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  # TFDS reads README.md, CITATIONS.bib and TAGS.txt from a folder it derives
  # from the top-level package (<scl_amp_tf>/tfds_datasets/<name>/), which does
  # not exist in an editable install, where setup.cfg maps the folder datasets/
  # to scl_amp_tf.tfds_datasets. Use this file's own folder instead.
  pkg_dir_path = tfds.core.Path(__file__).parent

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata (description from README.md)."""
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(None, None, 1),
                encoding_format='png',
                doc='8-bit gray steel surface, 200x200 in NEU-CLS.',
            ),
            'label': tfds.features.ClassLabel(
                names=list(CLASS_NAMES),
                doc='RS, Pa, Cr, PS, In, Sc (paper order).',
            ),
            'filename': tfds.features.Text(
                doc='Source file name, e.g. Cr_1.bmp.'
            ),
        }),
        supervised_keys=('image', 'label'),
        homepage=HOMEPAGE,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Returns the single `train` split (every image)."""
    # `dl_manager.manual_dir` itself raises when the folder is missing/empty,
    # with a message naming it and MANUAL_DOWNLOAD_INSTRUCTIONS.
    files = find_images(dl_manager.manual_dir)
    counts = {c: 0 for c in CLASS_NAMES}
    for f in files:
      counts[f.label] += 1
    _LOG.info('NEU-CLS images per class in %s: %s', dl_manager.manual_dir, counts)
    missing = [c for c, n in counts.items() if n == 0]
    if missing:
      _LOG.warning('NEU-CLS: no image for class(es) %s.', ', '.join(missing))
    return {'train': self._generate_examples(files)}

  def _generate_examples(self, files: list[NeuFile]) -> Iterator[tuple[str, dict]]:
    """Yields (relative path, example)."""
    for f in files:
      yield f.key, {
          'image': load_gray_image(f.path),
          'label': f.label,
          'filename': f.path.name,
      }
