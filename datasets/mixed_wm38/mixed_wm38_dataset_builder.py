"""MixedWM38 dataset: mixed-type wafer defect maps (52x52, 38 classes).

Wang et al., "Deformable Convolutional Networks for Efficient Mixed-type Wafer
Defect Pattern Recognition", IEEE Trans. Semiconductor Manufacturing, 2020.
38,015 wafer maps of 52x52 dies, each labelled with an 8-dim multi-hot vector
over the basic patterns `COMPONENTS` = C (Center), D (Donut), EL (Edge_Loc),
ER (Edge_Ring), L (Loc), NF (Near_Full), S (Scratch), R (Random). The 38
classes (`CLASS_NAMES`, C1..C38 of the paper) are the 38 combinations that
occur: Normal, the 8 single patterns and 29 mixtures.

The data must be put in the manual directory (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`). Accepted files:

* `Wafer_Map_Datasets.npz`, the original release: `arr_0` (N, 52, 52) maps,
  `arr_1` (N, 8) multi-hot labels in the order of `COMPONENTS`;
* `mixedwm38_recovered.npz`, a partial copy (33,815 of 38,015 maps, 89 %):
  `maps`, `labels_multihot`, `class_id`, `class_names`, `orig_index`.

If both are there the original is used. The class of every map is derived
from its multi-hot label (a combination outside the 38 is an error); for the
recovered copy its `class_id`/`class_names` must agree with that.

Pixel values: 0 = no die (outside the wafer), 1 = pass, 2 = fail. The original
data has a few stray pixels of value 3 (noise); they are mapped to 2 (fail),
as other users of the data do. Any other value is an error. The `image`
feature holds these raw values 0/1/2, NOT scaled to 0..255: scale them
yourself (e.g. `image * 127`) to view them.

This module imports only tensorflow_datasets, numpy and the standard library,
so that `tfds build datasets/mixed_wm38 --manual_dir=...` can import it on its
own.
"""

from __future__ import annotations

import logging
import pathlib
import sys
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

# Column order of the multi-hot label (arr_1 of the original file).
COMPONENTS = ('C', 'D', 'EL', 'ER', 'L', 'NF', 'S', 'R')
COMPONENT_NAMES = (
    'Center', 'Donut', 'Edge_Loc', 'Edge_Ring', 'Loc', 'Near_Full', 'Scratch',
    'Random',
)
# ClassLabel names, C1..C38 of the dataset paper, in that order. The 4-pattern
# names keep the paper's spelling (e.g. 'C+L+EL+S'), which is not in
# COMPONENTS order: always match classes by their set of components.
CLASS_NAMES = (
    'Normal', 'C', 'D', 'EL', 'ER', 'L', 'NF', 'S', 'R',
    'C+EL', 'C+ER', 'C+L', 'C+S', 'D+EL', 'D+ER', 'D+L', 'D+S', 'EL+L', 'EL+S',
    'ER+L', 'ER+S', 'L+S',
    'C+EL+L', 'C+EL+S', 'C+ER+L', 'C+ER+S', 'C+L+S', 'D+EL+L', 'D+EL+S',
    'D+ER+L', 'D+ER+S', 'D+L+S', 'EL+L+S', 'ER+L+S',
    'C+L+EL+S', 'C+L+ER+S', 'D+L+EL+S', 'D+L+ER+S',
)
MAP_SIZE = 52
NUM_ORIGINAL_MAPS = 38015
ORIGINAL_FILENAME = 'Wafer_Map_Datasets.npz'
RECOVERED_FILENAME = 'mixedwm38_recovered.npz'
HOMEPAGE = 'https://github.com/Junliangwangdhu/WaferMap'

_NOISE_VALUE = 3  # stray value in the original maps, mapped to FAIL
_FAIL_VALUE = 2
_CHUNK = 4096  # maps validated at a time (bounds temporary memory)

_LOG = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MixedWM38 cannot be downloaded automatically. Get `{ORIGINAL_FILENAME}`
(about 412 MB; arrays `arr_0` = maps (N, 52, 52), `arr_1` = multi-hot labels
(N, 8) in the order C, D, EL, ER, L, NF, S, R) from one of the sources listed
at {HOMEPAGE}, e.g. Kaggle:
https://www.kaggle.com/co1d7era/mixedtype-wafer-defect-datasets
and put it directly in the manual directory (`tfds build --manual_dir=DIR`, or
`tfds.download.DownloadConfig(manual_dir=DIR)`; the TFDS default is
<data_dir>/downloads/manual/):
  DIR/{ORIGINAL_FILENAME}
The partial copy `{RECOVERED_FILENAME}` (89 % of the maps; arrays `maps`,
`labels_multihot`, `class_id`, `class_names`, `orig_index`) is accepted in its
place:
  DIR/{RECOVERED_FILENAME}
If both files are there, the original is used.
"""


def _components_of(class_name: str) -> frozenset[str]:
  if class_name == 'Normal':
    return frozenset()
  parts = class_name.split('+')
  unknown = [p for p in parts if p not in COMPONENTS]
  if unknown or len(set(parts)) != len(parts):
    raise ValueError(f'Not a MixedWM38 class name: {class_name!r}')
  return frozenset(parts)


def _code(components) -> int:
  return sum(1 << COMPONENTS.index(c) for c in components)


def _build_code_table() -> np.ndarray:
  table = np.full(1 << len(COMPONENTS), -1, dtype=np.int64)
  for class_id, name in enumerate(CLASS_NAMES):
    code = _code(_components_of(name))
    if table[code] != -1:
      raise AssertionError(f'Duplicate class {name} in CLASS_NAMES')
    table[code] = class_id
  return table


# multi-hot bit code (bit i = COMPONENTS[i]) -> class id, -1 if not a class.
_CODE_TO_CLASS = _build_code_table()
_BIT_WEIGHTS = (1 << np.arange(len(COMPONENTS))).astype(np.int64)


def class_id_from_name(class_name: str) -> int:
  """Index in CLASS_NAMES of a class name with its parts in any order.

  `'C+EL+L+S'` and `'C+L+EL+S'` both give 34.

  Raises:
    ValueError: not one of the 38 classes.
  """
  class_id = int(_CODE_TO_CLASS[_code(_components_of(str(class_name)))])
  if class_id < 0:
    raise ValueError(f'Not one of the 38 MixedWM38 classes: {class_name!r}')
  return class_id


def multi_hot_to_class_id(multi_hot: np.ndarray) -> np.ndarray:
  """Maps (N, 8) multi-hot labels (COMPONENTS order) to CLASS_NAMES ids.

  Vectorised: one table look-up for all rows.

  Raises:
    ValueError: wrong shape, a value other than 0/1, or a combination that is
      not one of the 38 classes; the message names the first bad row.
  """
  multi_hot = np.asarray(multi_hot)
  if multi_hot.ndim != 2 or multi_hot.shape[1] != len(COMPONENTS):
    raise ValueError(
        f'MixedWM38 labels must have shape (N, {len(COMPONENTS)}), got'
        f' {multi_hot.shape}'
    )
  not_binary = np.flatnonzero(~np.isin(multi_hot, (0, 1)).all(axis=1))
  if not_binary.size:
    row = int(not_binary[0])
    raise ValueError(
        f'MixedWM38 label row {row} is not multi-hot (0/1):'
        f' {multi_hot[row].tolist()} ({not_binary.size} such rows)'
    )
  codes = multi_hot.astype(np.int64) @ _BIT_WEIGHTS
  class_ids = _CODE_TO_CLASS[codes]
  bad = np.flatnonzero(class_ids < 0)
  if bad.size:
    row = int(bad[0])
    combo = '+'.join(c for c, b in zip(COMPONENTS, multi_hot[row]) if b)
    raise ValueError(
        f'MixedWM38 label row {row}: multi-hot {multi_hot[row].tolist()}'
        f' ({combo}) is not one of the 38 classes ({bad.size} such rows)'
    )
  return class_ids


def clean_maps(maps: np.ndarray, first_row: int = 0) -> np.ndarray:
  """Returns wafer maps as uint8 0/1/2, with the noise value 3 mapped to 2.

  Args:
    maps: (N, 52, 52) integer (or integral float) maps.
    first_row: row number of `maps[0]` in the source file (for messages).

  Raises:
    ValueError: wrong shape, non-integral values, or a value outside 0..3;
      the message names the row.
  """
  maps = np.asarray(maps)
  if maps.ndim != 3 or maps.shape[1:] != (MAP_SIZE, MAP_SIZE):
    raise ValueError(
        f'MixedWM38 maps must have shape (N, {MAP_SIZE}, {MAP_SIZE}), got'
        f' {maps.shape}'
    )
  if maps.dtype.kind == 'f':
    bad = np.flatnonzero((maps != np.round(maps)).any(axis=(1, 2)))
    if bad.size:
      raise ValueError(
          f'MixedWM38 map row {first_row + int(bad[0])} has non-integer values'
      )
  elif maps.dtype.kind not in 'iub':
    raise ValueError(f'MixedWM38 maps have dtype {maps.dtype}, need integers')
  bad = np.flatnonzero(((maps < 0) | (maps > _NOISE_VALUE)).any(axis=(1, 2)))
  if bad.size:
    row = int(bad[0])
    values = sorted(set(np.unique(maps[row]).tolist()) - {0, 1, 2, 3})
    raise ValueError(
        f'MixedWM38 map row {first_row + row} has pixel values {values}'
        ' outside 0 (no die), 1 (pass), 2 (fail), 3 (noise, read as fail)'
    )
  out = maps.astype(np.uint8)
  out[out == _NOISE_VALUE] = _FAIL_VALUE
  return out


def find_source(manual_dir) -> tuple[tfds.core.Path, str]:
  """Returns (path, 'original' | 'recovered') of the file to build from.

  Raises:
    FileNotFoundError: neither file is in `manual_dir`; names the paths.
  """
  manual_dir = tfds.core.Path(manual_dir)
  for name, kind in ((ORIGINAL_FILENAME, 'original'),
                     (RECOVERED_FILENAME, 'recovered')):
    path = manual_dir / name
    if path.is_file():
      return path, kind
  raise FileNotFoundError(
      f'No MixedWM38 file found in the manual directory {manual_dir}\n'
      f'Put one of these there:\n  {manual_dir / ORIGINAL_FILENAME}\n'
      f'  {manual_dir / RECOVERED_FILENAME}\n'
      f'Where to get the data:\n{MANUAL_DOWNLOAD_INSTRUCTIONS}'
  )


def load_source(path, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads (maps as stored, multi-hot uint8, class ids) from an npz file.

  Maps are returned as stored (not yet cleaned, see `clean_maps`); labels are
  validated and mapped to classes.

  Raises:
    ValueError: missing arrays, row counts that differ, an invalid label, or
      (recovered copy) a `class_id` that disagrees with the multi-hot label.
  """
  path = tfds.core.Path(path)
  if kind == 'original':
    keys = {'maps': 'arr_0', 'multi_hot': 'arr_1'}
  elif kind == 'recovered':
    keys = {'maps': 'maps', 'multi_hot': 'labels_multihot',
            'class_id': 'class_id', 'class_names': 'class_names'}
  else:
    raise ValueError(f'Unknown MixedWM38 source kind {kind!r}')
  with path.open('rb') as f, np.load(f, allow_pickle=False) as npz:
    missing = [k for k in keys.values() if k not in npz.files]
    if missing:
      raise ValueError(
          f'{path} lacks the array(s) {missing} (has {npz.files}); expected a'
          f' MixedWM38 {kind} file'
      )
    arrays = {name: npz[key] for name, key in keys.items()}
  maps, multi_hot = arrays['maps'], arrays['multi_hot']
  if len(maps) != len(multi_hot):
    raise ValueError(
        f'{path}: {len(maps)} maps but {len(multi_hot)} labels'
    )
  try:
    class_ids = multi_hot_to_class_id(multi_hot)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e
  if kind == 'recovered':
    stored = np.asarray(arrays['class_id']).astype(np.int64)
    names = arrays['class_names']
    if stored.shape != class_ids.shape or stored.min(initial=0) < 0 or (
        stored.max(initial=0) >= len(names)):
      raise ValueError(f'{path}: class_id does not index class_names')
    name_to_ours = np.array([class_id_from_name(n) for n in names], np.int64)
    disagree = np.flatnonzero(name_to_ours[stored] != class_ids)
    if disagree.size:
      row = int(disagree[0])
      raise ValueError(
          f'{path}: row {row} has class_id {stored[row]}'
          f' ({names[stored[row]]}) but its multi-hot label'
          f' {multi_hot[row].tolist()} means {CLASS_NAMES[class_ids[row]]}'
          f' ({disagree.size} such rows)'
      )
  return maps, multi_hot.astype(np.uint8), class_ids


def _registered_from_this_file(name: str) -> bool:
  """Whether `name` is already registered by this same file.

  Happens when this file is imported under two module names in one process
  (e.g. `datasets.mixed_wm38...` by pytest and
  `scl_amp_tf.tfds_datasets.mixed_wm38...` by the package); a plain second
  registration would fail with "Dataset with name ... already registered".
  A *different* builder with the same name still fails.
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
    skip_registration=_registered_from_this_file('mixed_wm38'),
):
  """DatasetBuilder for MixedWM38 (manual download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': (
          'Initial release: every map of the manual file in one `train`'
          ' split; raw values 0/1/2 (noise 3 -> 2); class derived from the'
          ' multi-hot label.'
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
                shape=(MAP_SIZE, MAP_SIZE, 1),
                dtype=np.uint8,
                encoding_format='png',
                doc=(
                    'Wafer map, raw values 0 = no die, 1 = pass, 2 = fail'
                    ' (not scaled to 0..255).'
                ),
            ),
            'label': tfds.features.ClassLabel(
                names=list(CLASS_NAMES),
                doc='C1..C38 of the dataset paper, from the multi-hot label.',
            ),
            'multi_hot': tfds.features.Tensor(
                shape=(len(COMPONENTS),),
                dtype=np.uint8,
                doc='Basic patterns present, order C, D, EL, ER, L, NF, S, R.',
            ),
            'index': tfds.features.Scalar(
                dtype=np.int64,
                doc='Row of the map in the source .npz file.',
            ),
        }),
        supervised_keys=('image', 'label'),
        homepage=HOMEPAGE,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Returns the single `train` split (every map of the source file)."""
    # `dl_manager.manual_dir` itself raises when the folder is missing/empty,
    # with a message naming it and MANUAL_DOWNLOAD_INSTRUCTIONS.
    path, kind = find_source(dl_manager.manual_dir)
    return {'train': self._generate_examples(path, kind)}

  def _generate_examples(self, path, kind: str) -> Iterator[tuple[int, dict]]:
    """Yields (row index, example)."""
    maps, multi_hot, class_ids = load_source(path, kind)
    _LOG.info(
        'MixedWM38: building from the %s file %s (%d maps).',
        kind, path, len(maps),
    )
    # Validate and clean every map before the first example is written.
    cleaned = np.empty(maps.shape, np.uint8)
    noise = 0
    for start in range(0, len(maps), _CHUNK):
      chunk = maps[start:start + _CHUNK]
      noise += int(np.count_nonzero(chunk == _NOISE_VALUE))
      cleaned[start:start + _CHUNK] = clean_maps(chunk, first_row=start)
    del maps
    if noise:
      _LOG.info('MixedWM38: %d pixels of value 3 mapped to 2 (fail).', noise)
    for i in range(len(cleaned)):
      yield i, {
          'image': cleaned[i, :, :, None],
          'label': int(class_ids[i]),
          'multi_hot': multi_hot[i],
          'index': i,
      }
