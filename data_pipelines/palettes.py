"""Colours of class ids, to draw label maps next to generated images.

`generic_palette(n)` gives any number of classes distinct, deterministic
colours (the bit-interleaving colour map of PASCAL VOC, which SPADE and OASIS
use for ADE20K and COCO-Stuff; class 0 is black). Data sets with official
colours register them in `PALETTES`: Cityscapes (the 35 labelIds of
cityscapesScripts), ADE20K (its standard 150-class palette after the
unlabeled class 0) and COCO-Stuff (mmsegmentation's palette placed at
the OASIS ids); the tables are in palette_data.py. `for_config(config)`
picks the palette of a run.
"""

from typing import Callable

import numpy as np

from data_pipelines import label_maps
from data_pipelines import palette_data

# The data sets' colour tables live in palette_data.py.
_CITYSCAPES = palette_data.CITYSCAPES
_ADE20K = palette_data.ADE20K


def generic_palette(num_classes: int) -> np.ndarray:
  """Distinct colours for ids 0..num_classes-1, id 0 black.

  The PASCAL VOC colour map: the bits of the id are spread over the high
  bits of R, G and B, so neighbouring ids differ strongly.

  Returns:
    [num_classes, 3] uint8.
  """
  ids = np.arange(num_classes)
  rgb = np.zeros((num_classes, 3), np.int64)
  for shift in range(8):  # Enough bits for 2**24 classes.
    for channel in range(3):
      bit = (ids >> (3 * shift + channel)) & 1
      rgb[:, channel] |= bit << (7 - shift)
  return rgb.astype(np.uint8)


def cityscapes_palette(num_classes: int = 35) -> np.ndarray:
  """The official colours of the Cityscapes labelIds."""
  return _fit(np.asarray(_CITYSCAPES, np.uint8), num_classes)


def ade20k_palette(num_classes: int = 151) -> np.ndarray:
  """Black for the unlabeled id 0, then the standard ADE20K colours."""
  return _fit(np.asarray(((0, 0, 0),) + _ADE20K, np.uint8), num_classes)


def coco_stuff_palette(num_classes: int = 183) -> np.ndarray:
  """Black for unlabeled 0 (and unused ids), then COCO-Stuff's colours."""
  return _fit(palette_data.coco_stuff_colours(), num_classes)


def lvis_palette(num_classes: int = 1204) -> np.ndarray:
  """Black for unlabeled 0, generic colours for the 1203 LVIS categories
  (LVIS has no official colours)."""
  return generic_palette(num_classes)


def _fit(palette: np.ndarray, num_classes: int) -> np.ndarray:
  """The first num_classes colours; generic ones past the official list."""
  if num_classes <= len(palette):
    return palette[:num_classes]
  return np.concatenate([palette, generic_palette(num_classes)[len(palette):]])


# data.name -> palette of a class count; other names get generic_palette.
PALETTES: dict[str, Callable[[int], np.ndarray]] = {
    'cityscapes': cityscapes_palette,
    'ade20k': ade20k_palette,
    'coco_stuff': coco_stuff_palette,
    'lvis': lvis_palette,
}


def load_palette(path, num_classes: int) -> np.ndarray:
  """A palette file (label_maps.load_palette); generic colours past its end."""
  return _fit(label_maps.load_palette(path, num_classes), num_classes)


def for_config(config) -> np.ndarray:
  """The palette of config.data: a JSON file, the data set's, or generic.

  Returns:
    [config.data.num_classes, 3] uint8.
  """
  data = config.data
  if data.palette:
    return load_palette(data.palette, data.num_classes)
  make = PALETTES.get(data.name, generic_palette)
  return make(data.num_classes)


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Class ids [..., H, W] -> colours [..., H, W, 3] uint8.

  Ids outside the palette (e.g. 255 "ignore") are drawn white.
  """
  label = np.asarray(label)
  table = np.concatenate([palette, np.full((1, 3), 255, np.uint8)])
  ids = np.where((label >= 0) & (label < len(palette)), label, len(palette))
  return table[ids]
