"""Preprocessing of the official recipe: resizes, random crop and flip.

Images are resized bicubic and labels nearest, both with Pillow as the
official PyTorch loaders do (torchvision's resize of PIL images). Training:
resize to the load size, random crop to the image size, horizontal flip with
probability 1/2, image and label together. Evaluation: resize to the image
size. The random draws of the example at stream position p come from
(seed, p), so they do not depend on worker or process counts.
"""

from typing import Optional

import numpy as np
from PIL import Image


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Bicubic resize of uint8 [h, w, 3] to (H, W); unchanged if same size."""
  if image.shape[:2] == tuple(hw):
    return image
  resized = Image.fromarray(image).resize((hw[1], hw[0]), Image.BICUBIC)
  return np.asarray(resized, dtype=np.uint8)


def resize_label(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Nearest resize of int [h, w] class ids to int32 (H, W) (Pillow's rule)."""
  if label.shape == tuple(hw):
    return label.astype(np.int32, copy=False)
  if label.size and 0 <= label.min() and label.max() < 256:
    img = Image.fromarray(label.astype(np.uint8))
  else:
    img = Image.fromarray(label.astype(np.int32))
  resized = img.resize((hw[1], hw[0]), Image.NEAREST)
  return np.asarray(resized).astype(np.int32)


class ResizeToImageSize:
  """Evaluation preprocessing: resize image and label to (H, W)."""

  def __init__(self, hw: tuple[int, int]):
    self.hw = tuple(hw)

  def __call__(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(example)
    out['image'] = resize_image(example['image'], self.hw)
    out['label'] = resize_label(example['label'], self.hw)
    return out


class RandomCropAndFlip:
  """Training preprocessing of the example at one stream position.

  Resizes to `load_hw` (or straight to `hw` when it is None), takes a random
  `hw` crop and flips horizontally with probability 1/2 (when `flip`), the
  image and the label alike. Call as `fn(position, example)` (Grain's
  `map_with_index`); the draws come from `(seed, position)`.
  """

  def __init__(self, hw: tuple[int, int],
               load_hw: Optional[tuple[int, int]] = None, flip: bool = True,
               seed: int = 0):
    self.hw = tuple(hw)
    self.load_hw = tuple(load_hw) if load_hw else None
    if self.load_hw and (self.load_hw[0] < self.hw[0] or
                         self.load_hw[1] < self.hw[1]):
      raise ValueError(f'load size {self.load_hw} is smaller than the crop '
                       f'{self.hw}.')
    self.flip = flip
    self.seed = int(seed)

  def draw(self, position: int) -> tuple[int, int, bool]:
    """(top, left, flipped) of the example at `position`."""
    rng = np.random.default_rng([self.seed, int(position)])
    h, w = self.hw
    lh, lw = self.load_hw or self.hw
    top = int(rng.integers(0, lh - h + 1))
    left = int(rng.integers(0, lw - w + 1))
    flipped = bool(self.flip and rng.random() < 0.5)
    return top, left, flipped

  def __call__(self, position: int,
               example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    load_hw = self.load_hw or self.hw
    image = resize_image(example['image'], load_hw)
    label = resize_label(example['label'], load_hw)
    top, left, flipped = self.draw(position)
    h, w = self.hw
    image = image[top:top + h, left:left + w]
    label = label[top:top + h, left:left + w]
    if flipped:
      image, label = image[:, ::-1], label[:, ::-1]
    return {'image': np.ascontiguousarray(image),
            'label': np.ascontiguousarray(label)}


class PaddedShardExample:
  """Evaluation example k of one process's strided shard, padded past the end.

  Example k of process i of n is example i + k * n of the source, resized to
  `hw`, with 'valid' True and its 'index'; past `count` it is zeros with
  'valid' False and 'index' -1.
  """

  def __init__(self, source, hw, process_index, process_count, count):
    self.source = source
    self.resize = ResizeToImageSize(hw)
    self.hw = tuple(hw)
    self.process_index = process_index
    self.process_count = process_count
    self.count = count

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    position = self.process_index + int(k) * self.process_count
    if position < self.count:
      example = self.resize(self.source[position])
      return {'image': example['image'], 'label': example['label'],
              'valid': np.bool_(True), 'index': np.int32(position)}
    h, w = self.hw
    return {'image': np.zeros((h, w, 3), np.uint8),
            'label': np.zeros((h, w), np.int32),
            'valid': np.bool_(False), 'index': np.int32(-1)}
