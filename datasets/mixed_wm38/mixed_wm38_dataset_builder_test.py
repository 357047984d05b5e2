"""Tests for the MixedWM38 (`mixed_wm38`) dataset builder. Dummy data only."""

import pathlib
import tempfile

import numpy as np
import tensorflow_datasets as tfds

try:
  from . import mixed_wm38_dataset_builder as mwm
except ImportError:  # run as a script: python mixed_wm38_dataset_builder_test.py
  import mixed_wm38_dataset_builder as mwm  # pytype: disable=import-error

_DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
# dummy_data/make_dummy_data.py: 2 maps each of these classes, in this order.
_DUMMY_CLASSES = ['Normal', 'C', 'NF', 'C+EL', 'D+EL+S', 'D+L+ER+S']


class MixedWm38Test(tfds.testing.DatasetBuilderTestCase):
  """Builds `mixed_wm38` from dummy_data/Wafer_Map_Datasets.npz (original format)."""

  DATASET_CLASS = mwm.Builder
  SPLITS = {'train': 12}
  EXAMPLE_DIR = _DUMMY  # used as the manual dir

  def test_examples(self):
    self.builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=self.EXAMPLE_DIR)
    )
    examples = sorted(
        tfds.as_numpy(self.builder.as_dataset(split='train')),
        key=lambda ex: ex['index'],
    )
    self.assertEqual([ex['index'] for ex in examples], list(range(12)))
    names = self.builder.info.features['label'].names
    self.assertEqual(names, list(mwm.CLASS_NAMES))
    self.assertEqual(
        [names[ex['label']] for ex in examples],
        [c for c in _DUMMY_CLASSES for _ in range(2)],
    )
    with (self.EXAMPLE_DIR / 'Wafer_Map_Datasets.npz').open('rb') as f:
      with np.load(f) as npz:
        raw, multi_hot = npz['arr_0'], npz['arr_1']
    self.assertEqual(raw[0, 26, 26], 3)
    for ex in examples:
      i = ex['index']
      self.assertEqual(ex['image'].shape, (52, 52, 1))
      self.assertEqual(ex['image'].dtype, np.uint8)
      np.testing.assert_array_equal(
          ex['image'][..., 0], np.where(raw[i] == 3, 2, raw[i])
      )
      np.testing.assert_array_equal(ex['multi_hot'], multi_hot[i])
    self.assertEqual(examples[0]['image'][26, 26, 0], 2)  # noise 3 -> fail 2
    self.assertLessEqual(max(ex['image'].max() for ex in examples), 2)


class MixedWm38RecoveredTest(tfds.testing.DatasetBuilderTestCase):
  """Builds from dummy_data/recovered/mixedwm38_recovered.npz (partial-copy format)."""

  DATASET_CLASS = mwm.Builder
  SPLITS = {'train': 12}
  EXAMPLE_DIR = _DUMMY / 'recovered'


class MixedWm38LabelTest(tfds.testing.TestCase):
  """Label mapping, map cleaning and error messages."""

  def test_constants(self):
    self.assertLen(mwm.CLASS_NAMES, 38)
    self.assertLen(set(mwm.CLASS_NAMES), 38)
    self.assertEqual(mwm.COMPONENTS, ('C', 'D', 'EL', 'ER', 'L', 'NF', 'S', 'R'))
    self.assertEqual(mwm.CLASS_NAMES[34], 'C+L+EL+S')

  def test_value_3_becomes_2(self):
    maps = np.ones((2, 52, 52), np.int32)
    maps[1, 0, 0] = 3
    maps[1, 5, 5] = 0
    maps[0, 9, 9] = 2
    out = mwm.clean_maps(maps)
    self.assertEqual(out.dtype, np.uint8)
    self.assertEqual(out[1, 0, 0], 2)
    self.assertEqual(out[1, 5, 5], 0)
    self.assertEqual(out[0, 9, 9], 2)
    self.assertEqual(int(out.sum()), 2 * 52 * 52 - 1 + 1 + 1)

  def test_value_outside_0_to_3_names_row(self):
    maps = np.ones((3, 52, 52), np.int64)
    maps[2, 1, 1] = 4
    with self.assertRaisesRegex(ValueError, r'row 12 .*\[4\]'):
      mwm.clean_maps(maps, first_row=10)
    maps[2, 1, 1] = -1
    with self.assertRaisesRegex(ValueError, r'row 2 '):
      mwm.clean_maps(maps)

  def test_multi_hot_matches_recovered_class_id(self):
    # Hand-made rows as in mixedwm38_recovered.npz: multi-hot + class_id into
    # class_names. The names are given shuffled and with the components in
    # another order, to check that matching goes by the set of components.
    rows = {
        'Normal': [0, 0, 0, 0, 0, 0, 0, 0],
        'C': [1, 0, 0, 0, 0, 0, 0, 0],
        'NF': [0, 0, 0, 0, 0, 1, 0, 0],
        'R': [0, 0, 0, 0, 0, 0, 0, 1],
        'ER+L': [0, 0, 0, 1, 1, 0, 0, 0],
        'C+EL+S': [1, 0, 1, 0, 0, 0, 1, 0],
        'D+ER+L': [0, 1, 0, 1, 1, 0, 0, 0],
        'C+L+EL+S': [1, 0, 1, 0, 1, 0, 1, 0],
        'D+L+ER+S': [0, 1, 0, 1, 1, 0, 1, 0],
    }
    rng = np.random.default_rng(0)
    class_names = np.array(
        ['S+L+EL+C' if n == 'C+L+EL+S' else n for n in mwm.CLASS_NAMES]
    )[rng.permutation(38)]
    class_id = np.array(
        [list(class_names).index('S+L+EL+C' if n == 'C+L+EL+S' else n)
         for n in rows]
    )
    multi_hot = np.array(list(rows.values()), np.uint8)

    derived = mwm.multi_hot_to_class_id(multi_hot)
    from_names = np.array([mwm.class_id_from_name(n) for n in class_names])
    np.testing.assert_array_equal(derived, from_names[class_id])
    self.assertEqual([mwm.CLASS_NAMES[i] for i in derived], list(rows))

    # The same rows through load_source() in the recovered file format.
    path = pathlib.Path(tempfile.mkdtemp(dir=self.get_temp_dir()))
    path = path / mwm.RECOVERED_FILENAME
    np.savez(
        path,
        maps=np.ones((len(rows), 52, 52), np.uint8),
        labels_multihot=multi_hot,
        class_id=class_id.astype(np.uint8),
        class_names=class_names,
        orig_index=np.arange(len(rows), dtype=np.int32),
    )
    _, _, ids = mwm.load_source(path, 'recovered')
    np.testing.assert_array_equal(ids, derived)

    # A class_id that disagrees with the multi-hot label is an error.
    bad_id = class_id.copy()
    bad_id[3] = class_id[2]
    np.savez(path, maps=np.ones((len(rows), 52, 52), np.uint8),
             labels_multihot=multi_hot, class_id=bad_id.astype(np.uint8),
             class_names=class_names)
    with self.assertRaisesRegex(ValueError, 'row 3 has class_id'):
      mwm.load_source(path, 'recovered')

  def test_unknown_combination_names_row(self):
    multi_hot = np.zeros((4, 8), np.uint8)
    multi_hot[2, [0, 1]] = 1  # C+D is not one of the 38 classes
    with self.assertRaisesRegex(ValueError, r'row 2: .*\(C\+D\) is not one'):
      mwm.multi_hot_to_class_id(multi_hot)
    multi_hot[2] = 0
    multi_hot[1, 5] = 2
    with self.assertRaisesRegex(ValueError, 'row 1 is not multi-hot'):
      mwm.multi_hot_to_class_id(multi_hot)
    with self.assertRaisesRegex(ValueError, 'Not one of the 38'):
      mwm.class_id_from_name('C+D')

  def test_find_source_prefers_original(self):
    root = pathlib.Path(tempfile.mkdtemp(dir=self.get_temp_dir()))
    with self.assertRaisesRegex(FileNotFoundError, str(root)):
      mwm.find_source(root)
    (root / mwm.RECOVERED_FILENAME).write_bytes(b'x')
    self.assertEqual(mwm.find_source(root)[1], 'recovered')
    (root / mwm.ORIGINAL_FILENAME).write_bytes(b'x')
    path, kind = mwm.find_source(root)
    self.assertEqual((path.name, kind), (mwm.ORIGINAL_FILENAME, 'original'))

  def test_empty_manual_dir_error_names_path(self):
    root = pathlib.Path(tempfile.mkdtemp(dir=self.get_temp_dir()))
    builder = mwm.Builder(data_dir=self.get_temp_dir())
    with self.assertRaises(AssertionError) as cm:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=root)
      )
    self.assertIn(str(root), str(cm.exception))
    (root / 'other.txt').write_text('not the data')
    with self.assertRaises(FileNotFoundError) as cm:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=root)
      )
    self.assertIn(str(root / mwm.ORIGINAL_FILENAME), str(cm.exception))


if __name__ == '__main__':
  tfds.testing.test_main()
