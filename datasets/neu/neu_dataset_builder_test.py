"""Tests for the NEU-CLS (`neu`) dataset builder. Dummy data only."""

import pathlib
import tempfile

import numpy as np
import tensorflow_datasets as tfds

try:
  from . import neu_dataset_builder
except ImportError:  # run as a script: python neu_dataset_builder_test.py
  import neu_dataset_builder  # pytype: disable=import-error


class NeuTest(tfds.testing.DatasetBuilderTestCase):
  """Builds `neu` from dummy_data/ (layout (b), 2 images per class)."""

  DATASET_CLASS = neu_dataset_builder.Builder
  SPLITS = {'train': 12}
  # The manual dir is dummy_data/ itself (the test case passes it as
  # `dl_manager.manual_dir` because MANUAL_DOWNLOAD_INSTRUCTIONS is set).
  EXAMPLE_DIR = pathlib.Path(__file__).parent / 'dummy_data'

  def test_examples(self):
    self.builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=self.EXAMPLE_DIR)
    )
    examples = list(tfds.as_numpy(self.builder.as_dataset(split='train')))
    names = self.builder.info.features['label'].names
    self.assertEqual(names, ['RS', 'Pa', 'Cr', 'PS', 'In', 'Sc'])
    by_file = {ex['filename'].decode(): ex for ex in examples}
    self.assertLen(by_file, 12)
    for filename, ex in by_file.items():
      self.assertEqual(names[ex['label']], filename.split('_')[0])
      self.assertEqual(ex['image'].ndim, 3)
      self.assertEqual(ex['image'].shape[-1], 1)
      self.assertEqual(ex['image'].dtype, np.uint8)
    self.assertEqual(by_file['Cr_2.bmp']['image'].shape, (12, 20, 1))
    # The RGB file became gray, the BMP is read exactly.
    pil = tfds.core.lazy_imports.PIL_Image
    with pil.open(self.EXAMPLE_DIR / 'Pa' / 'Pa_2.png') as img:
      expected = np.asarray(img.convert('L'))
    np.testing.assert_array_equal(by_file['Pa_2.png']['image'][..., 0], expected)
    with pil.open(self.EXAMPLE_DIR / 'Cr' / 'Cr_1.bmp') as img:
      expected = np.asarray(img)
    np.testing.assert_array_equal(by_file['Cr_1.bmp']['image'][..., 0], expected)


def _write(path: pathlib.Path, data: bytes = b'') -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if data:
    path.write_bytes(data)
  else:  # a tiny valid gray PNG
    pil = tfds.core.lazy_imports.PIL_Image
    pil.fromarray(np.full((4, 5), 7, np.uint8)).save(path)
  return path


class NeuLayoutTest(tfds.testing.TestCase):
  """Layout detection and error messages (no TFDS build except one)."""

  def setUp(self):
    super().setUp()
    self.root = pathlib.Path(tempfile.mkdtemp(dir=self.get_temp_dir()))

  def test_class_from_name(self):
    f = neu_dataset_builder.class_from_name
    self.assertEqual(f('Cr_1.bmp'), 'Cr')
    self.assertEqual(f('PS_300.BMP'), 'PS')
    self.assertEqual(f('rs_12.png'), 'RS')
    self.assertEqual(f('Sc'), 'Sc')  # folder name
    self.assertIsNone(f('Xx_1.bmp'))
    self.assertIsNone(f('Cr.bmp'))  # no "_" before the number

  def test_flat_layout_class_from_prefix(self):
    for name in ['Cr_1.bmp', 'Cr_2.bmp', 'PS_10.png', 'Sc_3.JPG', 'RS_1.jpeg']:
      _write(self.root / name)
    _write(self.root / 'readme.txt', b'not an image')
    files = neu_dataset_builder.find_images(self.root)
    self.assertEqual(
        [(f.key, f.label) for f in files],
        [('Cr_1.bmp', 'Cr'), ('Cr_2.bmp', 'Cr'), ('PS_10.png', 'PS'),
         ('RS_1.jpeg', 'RS'), ('Sc_3.JPG', 'Sc')],
    )

  def test_class_folders_inside_single_subfolder(self):
    _write(self.root / 'NEU-CLS' / 'In' / 'In_1.png')
    _write(self.root / 'NEU-CLS' / 'Pa' / 'Pa_7.bmp')
    files = neu_dataset_builder.find_images(self.root)
    self.assertEqual(
        [(f.key, f.label) for f in files],
        [('NEU-CLS/In/In_1.png', 'In'), ('NEU-CLS/Pa/Pa_7.bmp', 'Pa')],
    )

  def test_unknown_prefix_names_file(self):
    _write(self.root / 'Cr_1.bmp')
    bad = _write(self.root / 'Zz_1.bmp')
    with self.assertRaisesRegex(ValueError, str(bad)):
      neu_dataset_builder.find_images(self.root)

  def test_same_image_twice(self):
    _write(self.root / 'Cr_1.bmp')
    _write(self.root / 'Cr_1.png')
    with self.assertRaisesRegex(ValueError, 'appears twice'):
      neu_dataset_builder.find_images(self.root)

  def test_no_images_names_manual_dir(self):
    _write(self.root / 'notes.txt', b'hello')
    with self.assertRaises(FileNotFoundError) as cm:
      neu_dataset_builder.find_images(self.root)
    self.assertIn(f'{self.root}/Cr/Cr_1.png', str(cm.exception))
    self.assertIn(f'{self.root}/Cr_1.bmp', str(cm.exception))

  def test_empty_manual_dir_error_names_path(self):
    builder = neu_dataset_builder.Builder(data_dir=self.get_temp_dir())
    for manual_dir in [self.root, self.root / 'missing']:
      with self.assertRaises(AssertionError) as cm:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
      self.assertIn(str(manual_dir), str(cm.exception))
      self.assertIn('Cr_1.bmp', str(cm.exception))  # the layouts are listed

  def test_undecodable_image_names_file(self):
    bad = _write(self.root / 'Cr_1.bmp', b'BM this is not a bitmap')
    with self.assertRaisesRegex(ValueError, f'Cannot decode.*{bad}'):
      neu_dataset_builder.load_gray_image(bad)


if __name__ == '__main__':
  tfds.testing.test_main()
