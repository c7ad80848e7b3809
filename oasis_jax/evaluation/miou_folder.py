"""mIoU of a folder of generated images with their label maps.

The `miou` mode of `python -m oasis_jax.evaluate`: each image of `images_dir`
is paired by file stem with a label map of `labels_dir`; the label maps are
decoded by the configured data set's own decoder (as in training: e.g.
COCO-Stuff's v -> v + 1, Cityscapes' labelIds), and the images segmented by
`miou.SegmenterMiou` (config.eval.segmenter, its protocol, on the devices),
the same path as the checkpoint mode's mIoU.
"""

import os
from typing import Any, Iterator, Sequence

import jax
import numpy as np

import data_pipelines
from data_pipelines import core
from oasis_jax.evaluation import frechet
from oasis_jax.evaluation import miou
from oasis_jax.evaluation import segmentation
from oasis_jax.runtime import batching
from oasis_jax.runtime import sharding

Pair = tuple[str, str]  # (image path, label path).


def _by_stem(folder: str) -> dict[str, str]:
  """stem -> file of the images in `folder`; a stem used twice fails."""
  out = {}
  for path in frechet.list_images(folder):
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in out:
      raise data_pipelines.DataError(
          f'{path}: another file of {folder} has the stem {stem!r} '
          f'({out[stem]}); pairs are matched by stem.', file=path)
    out[stem] = path
  return out


def pair_files(images_dir: str, labels_dir: str) -> list[Pair]:
  """(image, label map) pairs matched by file stem, sorted by stem.

  Raises:
    DataError: naming the first file without a partner (or a folder
      without images).
  """
  images, labels = _by_stem(images_dir), _by_stem(labels_dir)
  for stem, path in sorted(images.items()):
    if stem not in labels:
      raise data_pipelines.DataError(
          f'{path}: unpaired image, no label map {stem}.* in {labels_dir}.',
          file=path)
  for stem, path in sorted(labels.items()):
    if stem not in images:
      raise data_pipelines.DataError(
          f'{path}: unpaired label map, no image {stem}.* in {images_dir}.',
          file=path)
  return [(images[s], labels[s]) for s in sorted(images)]


def label_decoder(config) -> core.ExampleDecoder:
  """The configured data set's decoder (ids as they are for 'synthetic')."""
  if config.data.name in data_pipelines.FOLDER_DATASETS:
    return data_pipelines.get_dataset(config.data).decoder
  return core.ExampleDecoder(int(config.data.num_classes))


def read_pair(decoder: core.ExampleDecoder, pair: Pair
              ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [H, W, 3] image, int32 [h, w] class ids); the label map may
  have another size (the protocol scores at the label map's size).

  Raises:
    DataError: naming an unreadable file or class ids out of range.
  """
  image_path, label_path = pair
  image = decoder.decode_image(core.read_bytes(image_path), image_path)
  label = decoder.decode_label(core.read_bytes(label_path), label_path)
  decoder.check_ids(label, label_path)
  return image, label


def padded_batches(decoder: core.ExampleDecoder, pairs: Sequence[Pair],
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Batches {'image', 'label', 'valid'} of `batch_size` (padding: valid
  False); pairs of other sizes go into other batches."""
  for start in range(0, len(pairs), batch_size):
    groups = {}
    for pair in pairs[start:start + batch_size]:
      image, label = read_pair(decoder, pair)
      groups.setdefault((image.shape, label.shape), []).append((image, label))
    for items in groups.values():
      pad = batch_size - len(items)
      images = np.stack([i for i, _ in items] + [items[0][0] * 0] * pad)
      labels = np.stack([l for _, l in items] + [items[0][1] * 0] * pad)
      yield {'image': images, 'label': labels,
             'valid': np.arange(batch_size) < len(items)}


def per_class_iou(conf: np.ndarray) -> list[Any]:
  """IoU of each segmenter class; None where the class never occurs."""
  return [None if np.isnan(v) else float(v)
          for v in segmentation.per_class_iou(conf)]


def evaluate(config, images_dir: str, labels_dir: str, batch_size: int,
             mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """mIoU of config.eval.segmenter on the folder's images.

  Returns:
    {'miou', 'miou_segmenter', 'miou_protocol', 'per_class_iou' (a list
    over the segmenter's classes), 'num_pixels' (the label pixels counted),
    'num_images', 'images', 'labels'}.

  Raises:
    DataError: naming an unpaired or unreadable file.
    MissingSegmenterWeightsError: naming the file and the config key.
  """
  pairs = pair_files(images_dir, labels_dir)
  decoder = label_decoder(config)
  segmenter = miou.SegmenterMiou(config, mesh)
  batch = batching.rounded_batch_size(batch_size, mesh.devices.size)
  for item in padded_batches(decoder, pairs, batch):
    images = jax.device_put(item['image'], sharding.batch_sharding(mesh))
    segmenter.add(item, images)
  return {**segmenter.results(),
          'per_class_iou': per_class_iou(segmenter.confusion),
          'num_pixels': int(segmenter.confusion.sum()),
          'num_images': len(pairs), 'images': os.path.abspath(images_dir),
          'labels': os.path.abspath(labels_dir)}
