"""Writes the MixedWM38 dummy data used by `mixed_wm38_dataset_builder_test.py`.

* `Wafer_Map_Datasets.npz`: the original format (`arr_0` int32 maps (N, 52,
  52), `arr_1` int32 multi-hot (N, 8) in the order C, D, EL, ER, L, NF, S, R),
  2 maps for each of 6 classes (12 maps). Map 0 has one pixel of value 3 (the
  noise value of the original data, which the builder maps to 2).
* `recovered/mixedwm38_recovered.npz`: the same 12 maps in the format of the
  partial copy (`maps`, `labels_multihot`, `class_id`, `class_names`,
  `orig_index`), values already 0/1/2.

Seeded, compressed (a few KB). Run: `python datasets/mixed_wm38/dummy_data/make_dummy_data.py`.
"""

import pathlib
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(OUT.parent))
# The builder's own names: the order of `class_names` in the recovered copy (= C1..C38 of the paper).
from mixed_wm38_dataset_builder import CLASS_NAMES, COMPONENTS  # noqa: E402

SEED = 38
SIZE = 52
CLASSES = ['Normal', 'C', 'NF', 'C+EL', 'D+EL+S', 'D+L+ER+S']
MAPS_PER_CLASS = 2


def wafer(rng):
  """A disk of dies (1 = pass) with some random fails (2); 0 outside."""
  yy, xx = np.mgrid[:SIZE, :SIZE]
  inside = (yy - 25.5) ** 2 + (xx - 25.5) ** 2 <= 25 ** 2
  m = inside.astype(np.int32)
  m[inside & (rng.random((SIZE, SIZE)) < 0.1)] = 2
  return m


def main():
  rng = np.random.default_rng(SEED)
  maps, multi_hot, class_id = [], [], []
  for name in CLASSES:
    parts = set() if name == 'Normal' else set(name.split('+'))
    for _ in range(MAPS_PER_CLASS):
      maps.append(wafer(rng))
      multi_hot.append([int(c in parts) for c in COMPONENTS])
      class_id.append(CLASS_NAMES.index(name))
  maps = np.stack(maps).astype(np.int32)
  maps[0, 26, 26] = 3  # noise pixel, must come out as 2
  multi_hot = np.asarray(multi_hot, np.int32)

  np.savez_compressed(OUT / 'Wafer_Map_Datasets.npz', arr_0=maps, arr_1=multi_hot)

  (OUT / 'recovered').mkdir(exist_ok=True)
  clean = np.where(maps == 3, 2, maps).astype(np.uint8)
  np.savez_compressed(
      OUT / 'recovered' / 'mixedwm38_recovered.npz',
      maps=clean,
      labels_multihot=multi_hot.astype(np.uint8),
      multihot_names=np.array(['Center', 'Donut', 'Edge_Loc', 'Edge_Ring',
                               'Loc', 'Near_Full', 'Scratch', 'Random']),
      class_id=np.asarray(class_id, np.uint8),
      class_names=np.array(CLASS_NAMES),
      orig_index=np.arange(len(maps), dtype=np.int32) * 3 - 1,
  )
  for p in sorted(OUT.rglob('*.npz')):
    print(p.relative_to(OUT), p.stat().st_size, 'bytes')


if __name__ == '__main__':
  main()
