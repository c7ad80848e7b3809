"""Small fake data set trees in the real layouts and file names, for tests.

`write_tree(name, root, ...)` writes images and label PNGs exactly where the
real data sets keep them (ADE20K `images/training/ADE_train_00000001.jpg`,
Cityscapes `leftImg8bit/train/<city>/<city>_000000_000019_leftImg8bit.png`,
COCO-Stuff `train_img/000000000139.jpg`, folder `images/train/<name>.png`),
with label values drawn from each data set's raw value range, and returns
what it wrote. `write_lvis_tree(root)` writes LVIS annotation files and COCO
images.
"""

import dataclasses
import json
import os
from typing import Callable, Optional

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from configs import default

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


# LVIS v1's category counts by frequency: ids 1..405 are made 'f', the next
# 461 'c', the last 337 'r' in the fake annotation files.
LVIS_FREQUENCY_COUNTS = (('f', 405), ('c', 461), ('r', 337))


def lvis_frequency(category_id: int) -> str:
  """The frequency letter of a category id in `write_lvis_tree`'s files."""
  start = 1
  for letter, count in LVIS_FREQUENCY_COUNTS:
    if category_id < start + count:
      return letter
    start += count
  raise ValueError(f'category id {category_id} > 1203')


def _box(x0, y0, x1, y1):
  return [x0, y0, x1, y0, x1, y1, x0, y1]


def _lvis_images(split: str):
  """(image id, COCO folder, (h, w), annotations) of a fake split.

  Annotations are (category id, segmentation); they overlap, use ids past
  255, a two-polygon object, an uncompressed and a compressed RLE; one image
  per split has none; each split uses both COCO folders.
  """
  def rle(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m

  if split == 'train':
    return [
        (139, 'val2017', (40, 48), [
            (1203, [_box(2, 2, 40, 30)]),            # Large, rare.
            (3, [_box(10, 8, 20, 18)]),              # Small, on top.
            (700, [[30, 20, 46, 38, 14, 38]]),        # Triangle over both.
        ]),
        (285, 'train2017', (36, 44), [
            (3, [_box(12, 10, 18, 16)]),             # Small first...
            (405, [_box(4, 4, 36, 30), _box(38, 4, 43, 12)]),  # ...then big.
            (406, ('rle', (6, 20, 30, 34))),
        ]),
        (632, 'train2017', (32, 40), []),           # No annotations.
        (724, 'train2017', (44, 36), [
            (256, ('rle_str', (0, 0, 20, 44))),
            (1000, [_box(8, 6, 30, 40)]),
            (2, [_box(0, 30, 35, 43)]),
        ]),
    ], rle
  return [
      (776, 'val2017', (40, 40), [
          (867, [_box(5, 5, 35, 35)]),
          (1, [_box(15, 0, 25, 39)]),
      ]),
      (785, 'val2017', (38, 34), []),
      (802, 'train2017', (34, 42), [
          (1100, [[3, 3, 40, 5, 20, 30]]),
      ]),
  ], rle


def write_lvis_tree(root: str, seed: int = 0,
                    image_fn: Optional[Callable[[int, tuple[int, int]],
                                                np.ndarray]] = None,
                    ) -> dict[str, dict]:
  """Writes a fake LVIS v1 tree: annotation files and COCO JPEGs.

  `root/lvis_v1_{train,val}.json` in the real schema (all 1203 categories
  with their `frequency`, images with `coco_url`, annotations with polygons
  or RLE) and `root/{train,val}2017/<12 digits>.jpg`.

  Args:
    root: the data root to write under.
    seed: seed of the random image content.
    image_fn: optional (image id, (h, w)) -> uint8 [h, w, 3]; default noise.

  Returns:
    split -> the annotation file's JSON object.
  """
  rng = np.random.default_rng(seed)
  categories = [{'id': c, 'name': f'category_{c}', 'synset': f's{c}.n.01',
                 'synonyms': [f'category_{c}'], 'def': '',
                 'frequency': lvis_frequency(c), 'instance_count': 1,
                 'image_count': 1} for c in range(1, 1204)]
  written = {}
  for split in ('train', 'val'):
    entries, make_rle = _lvis_images(split)
    images, annotations = [], []
    for image_id, folder, (h, w), objects in entries:
      name = f'{image_id:012d}.jpg'
      os.makedirs(os.path.join(root, folder), exist_ok=True)
      pixels = (image_fn(image_id, (h, w)) if image_fn else
                rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
      Image.fromarray(pixels).save(os.path.join(root, folder, name),
                                   quality=100)
      images.append({
          'id': image_id, 'height': h, 'width': w, 'license': 1,
          'date_captured': '2013-11-14 16:28:13',
          'flickr_url': f'http://farm3.staticflickr.com/{name}',
          'coco_url': f'http://images.cocodataset.org/{folder}/{name}',
          'neg_category_ids': [], 'not_exhaustive_category_ids': []})
      for category_id, seg in objects:
        if isinstance(seg, tuple):
          kind, box = seg
          m = make_rle(h, w, *box)
          if kind == 'rle':  # Uncompressed: run lengths, column-major.
            flat = m.ravel(order='F')
            changes = np.flatnonzero(np.diff(flat)) + 1
            bounds = np.concatenate([[0], changes, [flat.size]])
            counts = np.diff(bounds).tolist()
            if flat[0]:
              counts = [0] + counts
            seg = {'size': [h, w], 'counts': counts}
          else:
            encoded = mask_utils.encode(np.asfortranarray(m))
            seg = {'size': [h, w],
                   'counts': encoded['counts'].decode('ascii')}
        annotations.append({
            'id': len(annotations) + 1 + (0 if split == 'train' else 1000),
            'image_id': image_id, 'category_id': category_id,
            'segmentation': seg, 'area': 1.0, 'bbox': [0, 0, 1, 1]})
    data = {'info': {'description': 'fake LVIS v1'}, 'licenses': [],
            'images': images, 'annotations': annotations,
            'categories': categories}
    with open(os.path.join(root, f'lvis_v1_{split}.json'), 'w') as f:
      json.dump(data, f)
    written[split] = data
  return written
