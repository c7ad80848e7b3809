"""Segmentation scores (mIoU) of generated images: segmenters, confusion.

A pretrained segmenter (an ONNX file run with onnxruntime, or any Python
callable) labels the generated images; its predictions are compared with the
input label maps, mapped to the segmenter's classes by a per-data-set
`SegmentationProtocol`, through a confusion matrix.

Layouts: images [B, H, W, 3] float in [-1, 1] (NHWC); label maps [B, H, W]
integer ids.
"""

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation import inception

# ----------------------------------------------------------------------------
# Confusion matrix and mIoU.
# ----------------------------------------------------------------------------


def confusion_matrix(labels, preds, num_classes: int,
                     ignore_index: Optional[int] = None) -> np.ndarray:
  """Counts pixels per (true class, predicted class).

  Args:
    labels: integer class ids, any shape.
    preds: integer class ids, same shape as labels.
    num_classes: C; ids must lie in [0, C).
    ignore_index: pixels whose label is this id are not counted (the
      don't-care class).

  Returns:
    [C, C] int64, rows true classes, columns predictions.

  Raises:
    ValueError: shapes differ, or a counted label or a prediction lies
      outside [0, C).
  """
  labels, preds = np.asarray(labels), np.asarray(preds)
  if labels.shape != preds.shape:
    raise ValueError(f'labels {labels.shape} and preds {preds.shape} differ.')
  labels, preds = labels.reshape(-1).astype(np.int64), preds.reshape(
      -1).astype(np.int64)
  if ignore_index is not None:
    keep = labels != ignore_index
    labels, preds = labels[keep], preds[keep]
  for name, ids in (('label', labels), ('prediction', preds)):
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
      raise ValueError(f'A {name} id lies outside [0, {num_classes}): '
                       f'[{ids.min()}, {ids.max()}].')
  counts = np.bincount(labels * num_classes + preds,
                       minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def per_class_iou(conf) -> np.ndarray:
  """IoU per class, TP / (TP + FP + FN); NaN where the union is empty.

  Args:
    conf: [C, C] confusion matrix (rows true, columns predicted).

  Returns:
    [C] float64.
  """
  conf = np.asarray(conf, np.float64)
  tp = np.diag(conf)
  union = conf.sum(axis=0) + conf.sum(axis=1) - tp
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf, ignore_index: Optional[int] = None) -> float:
  """Mean IoU over the classes that occur (in labels or predictions).

  Args:
    conf: [C, C] confusion matrix (rows true, columns predicted), e.g. the
      sum of `confusion_matrix` over all batches.
    ignore_index: a class id in [0, C) left out of the mean (the don't-care
      class, when it is one of the C); ids outside [0, C) change nothing.

  Returns:
    The mIoU in [0, 1]; NaN when no class occurs.
  """
  iou = per_class_iou(conf)
  if ignore_index is not None and 0 <= ignore_index < iou.shape[0]:
    iou = np.delete(iou, ignore_index)
  iou = iou[~np.isnan(iou)]
  return float(iou.mean()) if iou.size else float('nan')


def group_mean_iou(conf, groups) -> dict[str, float]:
  """Mean IoU of each named group of classes (e.g. LVIS rare/common/frequent).

  Within a group, the mean is over its classes that occur (in labels or
  predictions), as in `mean_iou`; ids outside [0, C) are left out.

  Args:
    conf: [C, C] confusion matrix (rows true, columns predicted).
    groups: group name -> class ids (of the confusion matrix).

  Returns:
    group name -> mIoU in [0, 1], NaN for a group none of whose classes
    occurs.
  """
  iou = per_class_iou(conf)
  out = {}
  for name, ids in groups.items():
    ids = np.asarray(list(ids), np.int64)
    ids = ids[(ids >= 0) & (ids < iou.shape[0])]
    values = iou[ids]
    values = values[~np.isnan(values)]
    out[name] = float(values.mean()) if values.size else float('nan')
  return out


# ----------------------------------------------------------------------------
# Per-data-set protocols.
# ----------------------------------------------------------------------------

IGNORE_ID = 255

# Cityscapes labelIds -> trainIds (the 19 evaluated classes); every other id
# of the 35 (0..33, and 34 for -1 "license plate") is ignored.
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def _table(num_ids: int, pairs) -> np.ndarray:
  table = np.full((num_ids,), IGNORE_ID, np.int64)
  for src, dst in pairs:
    table[src] = dst
  return table


@dataclasses.dataclass(frozen=True)
class SegmentationProtocol:
  """How generated images of one data set are segmented and scored.

  Attributes:
    name: data set name.
    num_classes: the segmenter's class count (the confusion matrix size).
    input_size: (height, width) the images are resized to (bilinear) before
      the segmenter sees them.
    label_map: [num dataset ids] int64, dataset class id -> segmenter class
      id, or `ignore_index` for ids not evaluated (don't care).
    ignore_index: the id of pixels that are not counted.
  """
  name: str
  num_classes: int
  input_size: Tuple[int, int]
  label_map: np.ndarray = dataclasses.field(repr=False)
  ignore_index: int = IGNORE_ID

  def map_labels(self, labels) -> np.ndarray:
    """Dataset ids -> segmenter ids; ids outside the table are ignored."""
    labels = np.asarray(labels).astype(np.int64)
    inside = (labels >= 0) & (labels < self.label_map.shape[0])
    return np.where(inside,
                    self.label_map[np.clip(labels, 0,
                                           self.label_map.shape[0] - 1)],
                    self.ignore_index)


# input_size is the generated size (export the paper's segmenters at it with
# segmenters/onnx_export.py). Use dataclasses.replace to adapt.
PROTOCOLS = {
    # labelIds 0..33 (35 OASIS ids) -> 19 trainIds.
    'cityscapes': SegmentationProtocol(
        'cityscapes', 19, (256, 512),
        _table(35, _CITYSCAPES_TRAIN_IDS.items())),
    # OASIS ids 1..150 -> 0..149; 0 (unlabeled) ignored.
    'ade20k': SegmentationProtocol(
        'ade20k', 150, (256, 256),
        _table(151, ((i, i - 1) for i in range(1, 151)))),
    # OASIS ids 1..182 (PNG value + 1) -> 0..181; 0 (unlabeled) ignored.
    'coco_stuff': SegmentationProtocol(
        'coco_stuff', 182, (256, 256),
        _table(183, ((i, i - 1) for i in range(1, 183)))),
}


def get_protocol(name: str) -> SegmentationProtocol:
  if name not in PROTOCOLS:
    raise ValueError(f'No mIoU protocol for {name!r}; known: '
                     f'{", ".join(sorted(PROTOCOLS))}.')
  return PROTOCOLS[name]


# ----------------------------------------------------------------------------
# Segmenters.
# ----------------------------------------------------------------------------

# Segmenter: images [B, H, W, 3] float32 in [-1, 1] -> [B, h, w] integer ids,
# or [B, h, w, C] scores (argmax over the last axis).
Segmenter = Callable[[np.ndarray], np.ndarray]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxSegmenter:
  """A segmenter in an ONNX file, run with onnxruntime on the host.

  The model gets float32 images normalised as (x01 - mean) / std, where x01
  is the image in [0, 1], in NCHW (or NHWC) layout, and returns either class
  scores [B, C, h, w] (NCHW; [B, h, w, C] if channels_first is False) or
  integer ids [B, h, w]; the first output is used.
  """

  def __init__(self, path: str, *, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD,
               channels_first: bool = True,
               providers: Optional[Sequence[str]] = None):
    """Opens the model.

    Args:
      path: the .onnx file.
      mean: per-channel mean subtracted from the [0, 1] image.
      std: per-channel divisor, after the mean.
      channels_first: the model's input (and score output) is NCHW.
      providers: onnxruntime execution providers (default: CPU).
    """
    import onnxruntime  # pylint: disable=g-import-not-at-top
    self.session = onnxruntime.InferenceSession(
        path, providers=list(providers or ['CPUExecutionProvider']))
    self.input_name = self.session.get_inputs()[0].name
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.channels_first = channels_first

  def __call__(self, images) -> np.ndarray:
    """[B, H, W, 3] float in [-1, 1] -> [B, h, w] int64 class ids."""
    x = (np.asarray(images, np.float32) + 1.0) / 2.0
    x = (x - self.mean) / self.std
    if self.channels_first:
      x = x.transpose(0, 3, 1, 2)
    out = np.asarray(self.session.run(None, {self.input_name:
                                             np.ascontiguousarray(x)})[0])
    if out.ndim == 4:
      out = out.argmax(axis=1 if self.channels_first else -1)
    return out.astype(np.int64)


def _resize_nearest(ids: np.ndarray, height: int, width: int) -> np.ndarray:
  """PyTorch 'nearest' resize of [B, h, w] ids: source = floor(dst * in/out)."""
  rows = (np.arange(height) * ids.shape[1]) // height
  cols = (np.arange(width) * ids.shape[2]) // width
  return ids[:, rows][:, :, cols]


def segment(segmenter: Segmenter, images, protocol: SegmentationProtocol
            ) -> np.ndarray:
  """Runs the segmenter at the protocol's input size.

  Args:
    segmenter: a `Segmenter` (e.g. `OnnxSegmenter`).
    images: [B, H, W, 3] float in [-1, 1].
    protocol: gives the input size.

  Returns:
    [B, h, w] int64 predicted segmenter class ids.
  """
  height, width = protocol.input_size
  images = jnp.asarray(images, jnp.float32)
  if images.shape[1:3] != (height, width):
    images = inception.resize_bilinear(images, height, width)
  out = np.asarray(segmenter(np.asarray(images)))
  if out.ndim == 4:
    out = out.argmax(axis=-1)
  return out.astype(np.int64)


def segmentation_confusion(segmenter: Segmenter, images, labels,
                           protocol: SegmentationProtocol) -> np.ndarray:
  """Confusion matrix of the segmenter's predictions on generated images.

  Predictions are resized (nearest) to the label maps' size; labels are
  mapped by `protocol.label_map` and its ignored ids are not counted. Sum the
  matrices over batches and pass the sum to `mean_iou`.

  Args:
    segmenter: a `Segmenter`.
    images: [B, H, W, 3] generated images, float in [-1, 1].
    labels: [B, H', W'] the dataset label ids they were generated from.
    protocol: the data set's `SegmentationProtocol`.

  Returns:
    [num_classes, num_classes] int64.
  """
  labels = protocol.map_labels(labels)
  preds = segment(segmenter, images, protocol)
  if preds.shape[1:] != labels.shape[1:]:
    preds = _resize_nearest(preds, *labels.shape[1:])
  return confusion_matrix(labels, preds, protocol.num_classes,
                          ignore_index=protocol.ignore_index)
