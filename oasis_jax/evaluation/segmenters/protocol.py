"""The mIoU protocol of each data set, as one table, and `segment`.

A `Protocol` says how generated images (NHWC, float in [-1, 1]) become the
segmenter's input (pixel range, channel order, normalisation, the sizes it
sees), how its scores return to a label grid, and how the data set's label
ids map to the segmenter's classes. Defaults reproduce the reference
repositories' evaluation paths (docs/evaluation.md); COCO-Stuff also has
imaginaire's. `segment` returns a batch's confusion matrix and runs under
`jax.jit`.
"""

import dataclasses
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import deeplab
from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import layers
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import upernet

IGNORE_ID = 255
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# fyu/drn datasets/cityscapes/info.json (R, G, B), on pixels / 255.
CITYSCAPES_MEAN = (0.290101, 0.328081, 0.286964)
CITYSCAPES_STD = (0.182954, 0.186566, 0.184475)
CAFFE_BGR_MEAN = (104.008, 116.669, 122.675)  # On 0..255 pixels, B, G, R.
# Cityscapes labelIds -> trainIds (19 classes); all other ids are ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _table(num_ids: int, pairs) -> tuple[int, ...]:
  table = [IGNORE_ID] * num_ids
  for src, dst in pairs:
    table[src] = dst
  return tuple(table)


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How one data set's images are segmented and scored (hashable, so
  it can be a static argument of `jax.jit`).

  Attributes:
    name: '<data set>/<variant>'.
    network: the segmenter (`networks.NETWORKS`).
    num_classes: its classes (the confusion matrix's size).
    label_map: data set label id -> segmenter class, IGNORE_ID: not counted.
    bgr: feed B, G, R (else R, G, B).
    pixel_scale: pixels 0..255 are multiplied by it before (x - mean) / std.
    mean, std: per channel, in the fed channel order.
    short_sides: multi-scale: each scale resizes the short side to s, the
      long side at most `max_side`, both rounded up to `size_multiple`
      (PIL-like antialiased bilinear, rounded to 8 bits); the probabilities
      are averaged. Empty: the image as generated.
    max_side, size_multiple: see `short_sides`.
    long_side: resize the longer side to it with `align_corners=True` (and
      score on that grid, the labels resized nearest); 0: no.
    quantize: round the generated image to 8 bits first, as saving it to a
      PNG does.
  """
  name: str
  network: str
  num_classes: int
  label_map: tuple[int, ...] = dataclasses.field(repr=False)
  bgr: bool = False
  pixel_scale: float = 1 / 255
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  short_sides: Sequence[int] = ()
  max_side: int = 0
  size_multiple: int = 1
  long_side: int = 0
  quantize: bool = True


_CITYSCAPES = _table(35, CITYSCAPES_TRAIN_IDS.items())  # labelIds 0..34.
_ADE20K = _table(151, ((i, i - 1) for i in range(1, 151)))  # 0: other.
_COCO = _table(183, ((i, i - 1) for i in range(1, 183)))  # 0: unlabeled.

# data set -> variant -> Protocol; the first variant is the default.
PROTOCOLS = {
    'cityscapes': {
        # fyu/drn segment.py test: single scale, the full image.
        'drn': Protocol('cityscapes/drn', drn.NAME, 19, _CITYSCAPES,
                        mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD),
    },
    'ade20k': {
        # CSAIL eval.py: 5 short sides, sides rounded up to 32, mean probs.
        'csail_multiscale': Protocol(
            'ade20k/csail_multiscale', upernet.NAME, 150, _ADE20K,
            short_sides=(300, 375, 450, 525, 600), max_side=1000,
            size_multiple=32),
        'single_scale': Protocol('ade20k/single_scale', upernet.NAME, 150,
                                 _ADE20K),
    },
    'coco_stuff': {
        # kazuto1011/deeplab-pytorch main.py test: full image, MSC inside.
        'deeplab_msc': Protocol(
            'coco_stuff/deeplab_msc', deeplab.NAME, 182, _COCO, bgr=True,
            pixel_scale=1.0, mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0)),
        # NVlabs/imaginaire: longer side to 512, align_corners=True.
        'imaginaire': Protocol(
            'coco_stuff/imaginaire', deeplab.NAME, 182, _COCO, bgr=True,
            pixel_scale=1.0, mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0),
            long_side=512, quantize=False),
    },
}


def get(data_set: str, variant: str = '') -> Protocol:
  """The protocol of a data set (default variant unless one is named)."""
  if data_set not in PROTOCOLS:
    raise ValueError(f'No segmenter protocol for {data_set!r}; known: '
                     f'{", ".join(sorted(PROTOCOLS))}.')
  variants = PROTOCOLS[data_set]
  if variant and variant not in variants:
    raise ValueError(f'{data_set} has no protocol {variant!r}; known: '
                     f'{", ".join(variants)}.')
  return variants[variant or next(iter(variants))]


def input_sizes(protocol: Protocol, hw: Sequence[int]) -> list[tuple]:
  """The (height, width) of each scale the segmenter sees."""
  h, w = hw
  if protocol.long_side:
    scale = protocol.long_side / max(h, w)
    return [(math.floor(h * scale), math.floor(w * scale))]
  if not protocol.short_sides:
    return [(h, w)]
  m, sizes = protocol.size_multiple, []
  for s in protocol.short_sides:
    scale = min(s / min(h, w), protocol.max_side / max(h, w))
    sizes.append(tuple(-(-int(n * scale) // m) * m for n in (h, w)))
  return sizes


def _pixels(protocol: Protocol, images):
  """[-1, 1] images -> 0..255 float32 (rounded when `quantize`)."""
  x = (images.astype(jnp.float32) + 1) * 127.5
  return jnp.clip(jnp.round(x), 0, 255) if protocol.quantize else x


def _resized(protocol: Protocol, pixels, size):
  """The image at `size`, resized the protocol's way."""
  if tuple(size) == pixels.shape[1:3]:
    return pixels
  if protocol.long_side:
    return layers.resize_bilinear_aligned(pixels, *size)
  shape = (pixels.shape[0], *size, 3)
  out = jax.image.resize(pixels, shape, 'linear', antialias=True)
  return jnp.clip(jnp.round(out), 0, 255)


def normalized(protocol: Protocol, pixels, dtype):
  """0..255 pixels [B, H, W, 3] (R, G, B) -> the segmenter's input."""
  x = pixels[..., ::-1] if protocol.bgr else pixels
  mean = jnp.asarray(protocol.mean, jnp.float32)
  std = jnp.asarray(protocol.std, jnp.float32)
  return ((x * protocol.pixel_scale - mean) / std).astype(dtype)


def predict(protocol: Protocol, variables, images,
            size: Optional[Sequence[int]] = None, *, dtype: Any = jnp.float32):
  """Segmenter class ids [B, h, w] int32 of [-1, 1] images [B, H, W, 3].

  `size`: the grid the scores return to (default: the images'); with
  `long_side`, the resized input's grid instead.
  """
  model = networks.get(protocol.network).make(protocol.num_classes, dtype)
  pixels = _pixels(protocol, images)
  sizes = input_sizes(protocol, images.shape[1:3])
  out_size = sizes[0] if protocol.long_side else (
      size if size is not None else images.shape[1:3])
  total = 0
  for s in sizes:
    x = normalized(protocol, _resized(protocol, pixels, s), dtype)
    total = total + networks.scores(model, variables, x, out_size,
                                    align_corners=bool(protocol.long_side))
  return jnp.argmax(total, -1).astype(jnp.int32)


def map_labels(protocol: Protocol, labels):
  """Data set ids -> segmenter classes (IGNORE_ID outside the table)."""
  labels = jnp.asarray(labels).astype(jnp.int32)
  table = jnp.asarray(protocol.label_map, jnp.int32)
  inside = (labels >= 0) & (labels < table.shape[0])
  return jnp.where(inside, table[jnp.clip(labels, 0, table.shape[0] - 1)],
                   IGNORE_ID)


def resize_nearest(ids, height: int, width: int):
  """PyTorch 'nearest' on [B, h, w]: source floor(dst * in / out)."""
  rows = (np.arange(height) * ids.shape[1]) // height
  cols = (np.arange(width) * ids.shape[2]) // width
  return ids[:, rows][:, :, cols]


def confusion(labels, preds, num_classes: int):
  """[C, C] int32 counts (rows labels, columns predictions); labels
  IGNORE_ID (or outside [0, C)) are not counted."""
  valid = (labels >= 0) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + preds, 0).reshape(-1)
  counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[index].add(
      valid.reshape(-1).astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def segment(protocol: Protocol, variables, images, labels, *,
            dtype: Any = jnp.float32):
  """The confusion matrix [C, C] int32 of one batch (jit-able).

  Args:
    protocol: the data set's `Protocol`.
    variables: the segmenter's Flax variables (`networks.load`).
    images: [B, H, W, 3] float in [-1, 1] (generated or real).
    labels: [B, H', W'] the data set's label ids.
    dtype: the segmenter's compute dtype (jnp.bfloat16 for speed).
  """
  ids = map_labels(protocol, labels)
  preds = predict(protocol, variables, images, ids.shape[1:3], dtype=dtype)
  if preds.shape[1:3] != ids.shape[1:3]:
    ids = resize_nearest(ids, *preds.shape[1:3])
  return confusion(ids, preds, protocol.num_classes)
