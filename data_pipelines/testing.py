"""Small fake data set trees in the real layouts and file names, for tests.

`write_tree(name, root, ...)` writes images and label PNGs exactly where the
real data sets keep them (ADE20K `images/training/ADE_train_00000001.jpg`,
Cityscapes `leftImg8bit/train/<city>/<city>_000000_000019_leftImg8bit.png`,
COCO-Stuff `train_img/000000000139.jpg`, folder `images/train/<name>.png`),
with label values drawn from each data set's raw value range, and returns
what it wrote.
"""

import dataclasses
import os
from typing import Callable, Optional

import numpy as np
from PIL import Image

_CITIES = ('aachen', 'bochum', 'zurich')


@dataclasses.dataclass
class Written:
  """One pair written to disk: paths, raw label values and image pixels."""
  image_path: str
  label_path: str
  image: np.ndarray  # uint8 [h, w, 3] as encoded (before any JPEG loss).
  raw_label: np.ndarray  # uint8 [h, w] PNG values.


def raw_label_values(name: str, num_classes: int = 0) -> np.ndarray:
  """PNG values a data set's labels may hold."""
  if name == 'ade20k':
    return np.arange(151)
  if name == 'coco_stuff':
    return np.concatenate([np.arange(182), [255]])
  if name == 'cityscapes':
    return np.arange(34)
  return np.arange(num_classes)


def _paths(name: str, root: str, split: str, i: int,
           image_ext: str) -> tuple[str, str]:
  """(image path, label path) of pair i of a split in the real layout."""
  if name == 'ade20k':
    d = {'train': 'training', 'val': 'validation'}[split]
    stem = f'ADE_{split}_{i + 1:08d}'
    return (os.path.join(root, 'images', d, stem + '.jpg'),
            os.path.join(root, 'annotations', d, stem + '.png'))
  if name == 'coco_stuff':
    stem = f'{139 + 146 * i:012d}'
    return (os.path.join(root, f'{split}_img', stem + '.jpg'),
            os.path.join(root, f'{split}_label', stem + '.png'))
  if name == 'cityscapes':
    city = _CITIES[i % len(_CITIES)]
    stem = f'{city}_{i // len(_CITIES):06d}_{19 + i:06d}'
    return (os.path.join(root, 'leftImg8bit', split, city,
                         stem + '_leftImg8bit.png'),
            os.path.join(root, 'gtFine', split, city,
                         stem + '_gtFine_labelIds.png'))
  if name == 'folder':
    stem = f'photo_{i:04d}'
    return (os.path.join(root, 'images', split, stem + image_ext),
            os.path.join(root, 'labels', split, stem + '.png'))
  raise ValueError(f'unknown data set {name!r}')


def blocky_label(rng: np.random.Generator, hw: tuple[int, int],
                 values: np.ndarray, block: int = 8) -> np.ndarray:
  """uint8 label of `block`-pixel squares drawn from `values`."""
  h, w = hw
  gh, gw = -(-h // block), -(-w // block)
  grid = rng.choice(values, (gh, gw)).astype(np.uint8)
  return np.kron(grid, np.ones((block, block), np.uint8))[:h, :w]


def write_tree(name: str, root: str, counts: Optional[dict[str, int]] = None,
               hw: tuple[int, int] = (24, 32), seed: int = 0,
               num_classes: int = 8, image_ext: str = '.png',
               label_fn: Optional[Callable[[int, str], np.ndarray]] = None,
               image_fn: Optional[Callable[[int, str, np.ndarray],
                                           np.ndarray]] = None,
               cityscapes_extras: bool = True,
               ) -> dict[str, list[Written]]:
  """Writes a fake data set tree.

  Args:
    name: 'ade20k', 'coco_stuff', 'cityscapes' or 'folder'.
    root: the data root to write under.
    counts: split -> number of pairs (default train 6, val 3).
    hw: (h, w) of every pair (label_fn may draw other sizes).
    seed: seed of the random content.
    num_classes: 'folder' only: label values are in [0, num_classes).
    image_ext: 'folder' only: '.png' or '.jpg'.
    label_fn: optional (i, split) -> uint8 raw label; default random blocks.
    image_fn: optional (i, split, raw_label) -> uint8 [h, w, 3] image;
      default random noise.
    cityscapes_extras: also write the other gtFine files (color,
      instanceIds, polygons) that the data set must ignore.

  Returns:
    split -> the written pairs in sorted file order.
  """
  counts = {'train': 6, 'val': 3} if counts is None else counts
  rng = np.random.default_rng(seed)
  values = raw_label_values(name, num_classes)
  written = {}
  for split, count in counts.items():
    pairs = []
    for i in range(count):
      image_path, label_path = _paths(name, root, split, i, image_ext)
      for path in (image_path, label_path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
      raw = (label_fn(i, split) if label_fn else
             blocky_label(rng, hw, values))
      image = (image_fn(i, split, raw) if image_fn else
               rng.integers(0, 256, raw.shape + (3,), dtype=np.uint8))
      Image.fromarray(image).save(image_path, quality=95)
      Image.fromarray(raw.astype(np.uint8)).save(label_path)
      if name == 'cityscapes' and cityscapes_extras:
        base = label_path[:-len('_labelIds.png')]
        Image.fromarray(image).save(base + '_color.png')
        Image.fromarray(raw.astype(np.uint8)).save(base + '_instanceIds.png')
        with open(base + '_polygons.json', 'w') as f:
          f.write('{}')
      pairs.append(Written(image_path, label_path, image, raw))
    written[split] = sorted(pairs, key=lambda p: p.image_path)
  return written


def make_config(name: str, root: str, **overrides):
  """The default config with `config.data` set for a data set at `root`."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  classes = {'ade20k': 151, 'coco_stuff': 183, 'cityscapes': 35}
  data = config.data
  data.name = name
  data.root = root
  if name in classes:
    data.num_classes = classes[name]
  for key, value in overrides.items():
    setattr(data, key, value)
  return config
