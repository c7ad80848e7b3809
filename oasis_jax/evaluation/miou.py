"""mIoU of generated images: an ONNX segmenter's and the discriminator's own.

Both compare a segmentation of the generated images with the label maps they
were generated from: the ONNX segmenter (`segmentation.OnnxSegmenter`) under
the data set's protocol (`segmentation.PROTOCOLS`, or the identity on its
classes), and the OASIS discriminator's own segmentation (argmax over its N
real-class logits), a proxy that needs no external network.
`config.data.dontcare_id` is ignored by both.
"""

import functools
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

import data_pipelines
from data_pipelines import geometry
from oasis_jax.kernels import select
from oasis_jax.runtime import batching
from oasis_jax.evaluation import segmentation
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import common


def dontcare_id(config) -> Optional[int]:
  """config.data.dontcare_id, or None when it is not a class (-1: none)."""
  d = int(config.data.dontcare_id)
  return d if 0 <= d < int(config.data.num_classes) else None


def segmentation_protocol(config) -> segmentation.SegmentationProtocol:
  """The data set's mIoU protocol; identity on its classes if it has none.

  The identity protocol (e.g. 'synthetic', 'folder'): segmenter class c is
  data set class c, config.data.dontcare_id ignored, at the generated size.
  """
  if config.data.name in segmentation.PROTOCOLS:
    return segmentation.get_protocol(config.data.name)
  n = int(config.data.num_classes)
  table = np.arange(n, dtype=np.int64)
  dontcare = dontcare_id(config)
  if dontcare is not None:
    table[dontcare] = segmentation.IGNORE_ID
  return segmentation.SegmentationProtocol(
      config.data.name, n, tuple(geometry.image_hw(config.data)), table)


def discriminator_segmentation(variables, image, *, config):
  """Argmax over D's N real-class logits (channels 1..N): [B, H, W] int32."""
  logits = select.make_discriminator(config).apply(
      variables, image, train=False)
  return jnp.argmax(logits[..., 1:], axis=-1).astype(jnp.int32)


def group_mious(config, protocol: segmentation.SegmentationProtocol,
                seg_conf: Optional[np.ndarray], d_conf: Optional[np.ndarray],
                dontcare: Optional[int]) -> dict[str, float]:
  """mIoU per group of classes of the data set (LVIS: by frequency).

  Returns {'miou_<group>': the segmenter's mIoU (when seg_conf is given),
  'miou_discriminator_<group>': the discriminator's (when d_conf is given)},
  empty for data sets without groups. Data set ids map to segmenter ids
  through the protocol.
  """
  groups = data_pipelines.class_groups(config.data)
  if not groups:
    return {}
  out = {}
  if seg_conf is not None:
    table = protocol.label_map
    seg_groups = {name: [int(table[i]) for i in ids if 0 <= i < len(table)
                         and table[i] != protocol.ignore_index]
                  for name, ids in groups.items()}
    seg_mious = segmentation.group_mean_iou(seg_conf, seg_groups)
    for name, value in seg_mious.items():
      out[f'miou_{name}'] = value
  if d_conf is not None:
    d_groups = {name: [i for i in ids if i != dontcare]
                for name, ids in groups.items()}
    for name, value in segmentation.group_mean_iou(d_conf, d_groups).items():
      out[f'miou_discriminator_{name}'] = value
  return out


class MiouEvaluator:
  """Accumulates the confusion matrices of batches of generated images.

  Call `add(batch, images)` for every evaluation batch (e.g. as the
  `on_batch` of `FidEvaluator.fid_of`), then `results()`.
  """

  def __init__(self, config, mesh: jax.sharding.Mesh,
               discriminator: common.Variables, segmenter: str = ''):
    """`discriminator`: D's variables, or None for a discriminator that
    does not segment (SPADE's PatchGAN); `segmenter`: an .onnx file or ''."""
    self._config = config
    self._num_classes = int(config.data.num_classes)
    self._dontcare = dontcare_id(config)
    self._protocol = segmentation_protocol(config)
    self._segmenter_path = segmenter
    self._onnx = segmentation.OnnxSegmenter(segmenter) if segmenter else None
    self._segment = jax.jit(
        functools.partial(discriminator_segmentation, config=config),
        in_shardings=(sharding.replicated(mesh),
                      sharding.batch_sharding(mesh)),
        out_shardings=sharding.batch_sharding(mesh))
    self._discriminator = (
        None if discriminator is None else
        jax.device_put(discriminator, sharding.replicated(mesh)))
    n = self._num_classes
    self._conf_d = np.zeros((n, n), np.int64)
    self._conf_seg = np.zeros((self._protocol.num_classes,) * 2, np.int64)

  def add(self, batch: dict[str, Any], images: jax.Array) -> None:
    """One global batch ('label', 'valid') and its generated images."""
    valid = batch['valid']
    labels = batching.to_host(batch['label'])[valid]
    if self._discriminator is not None:
      preds = batching.to_host(self._segment(self._discriminator,
                                             images))[valid]
      self._conf_d += segmentation.confusion_matrix(
          labels, preds, self._num_classes, ignore_index=self._dontcare)
    if self._onnx is not None:
      self._conf_seg += segmentation.segmentation_confusion(
          self._onnx, batching.to_host(images)[valid], labels,
          self._protocol)

  def results(self) -> dict[str, Any]:
    """'miou_discriminator', and with a segmenter 'miou' and its protocol."""
    if self._discriminator is not None:
      out = {'miou_discriminator': segmentation.mean_iou(
          self._conf_d, ignore_index=self._dontcare)}
    else:
      out = {'miou_discriminator': None, 'miou_discriminator_note': (
          "not available: config.discriminator.kind='spade' (SPADE's "
          'PatchGAN does not segment); use an ONNX segmenter for mIoU')}
    if self._onnx is not None:
      out['miou'] = segmentation.mean_iou(self._conf_seg)
      out['miou_segmenter'] = os.path.abspath(self._segmenter_path)
      out['miou_protocol'] = self._protocol.name
    out.update(group_mious(
        self._config, self._protocol,
        self._conf_seg if self._onnx is not None else None,
        self._conf_d if self._discriminator is not None else None,
        self._dontcare))
    return out
