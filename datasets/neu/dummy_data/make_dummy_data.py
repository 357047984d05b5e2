"""Writes the NEU-CLS dummy data used by `neu_dataset_builder_test.py`.

Layout (b) of the builder: one folder per class, 2 tiny random images each
(12 files, a few KB), seeded so that re-running gives the same pixels. The
files mix the accepted formats on purpose: BMP (as the original), PNG (also an
upper-case `.PNG`), an RGB PNG (the builder must turn it gray), JPEG (`.jpg`
and `.jpeg`), and two image sizes.

Run from anywhere: `python datasets/neu/dummy_data/make_dummy_data.py`.
"""

import pathlib

import numpy as np
from PIL import Image

OUT = pathlib.Path(__file__).resolve().parent
SEED = 20240601

# (relative path, PIL mode, (height, width))
FILES = [
    ('RS/RS_1.png', 'L', (16, 16)),
    ('RS/RS_2.png', 'L', (16, 16)),
    ('Pa/Pa_1.png', 'L', (16, 16)),
    ('Pa/Pa_2.png', 'RGB', (16, 16)),
    ('Cr/Cr_1.bmp', 'L', (16, 16)),
    ('Cr/Cr_2.bmp', 'L', (12, 20)),
    ('PS/PS_1.png', 'L', (16, 16)),
    ('PS/PS_2.PNG', 'L', (16, 16)),
    ('In/In_1.png', 'L', (16, 16)),
    ('In/In_2.png', 'L', (16, 16)),
    ('Sc/Sc_1.jpg', 'L', (16, 16)),
    ('Sc/Sc_2.jpeg', 'L', (16, 16)),
]


def main():
  rng = np.random.default_rng(SEED)
  for rel, mode, (h, w) in FILES:
    path = OUT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == 'RGB' else 1
    pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    assert image.mode == mode, (rel, image.mode)
    fmt = {'.bmp': 'BMP', '.png': 'PNG', '.jpg': 'JPEG', '.jpeg': 'JPEG'}
    image.save(path, format=fmt[path.suffix.lower()])
    print(path.relative_to(OUT), path.stat().st_size, 'bytes')


if __name__ == '__main__':
  main()
