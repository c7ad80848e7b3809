"""mIoU of generated images: the paper's segmenters', an ONNX one's, D's own.

Each compares a segmentation of the generated images with the label maps
they were generated from: the paper's segmenters in Flax
(`config.eval.segmenter`, evaluation/segmenters/, on the devices, under the
data set's protocol in segmenters/protocol.py), an ONNX segmenter
(`segmentation.OnnxSegmenter`) under `segmentation.PROTOCOLS` (or the
identity on the classes), and the OASIS discriminator's own segmentation
(argmax over its N real-class logits), a proxy that needs no external
network.
`config.data.dontcare_id` is ignored by all.
"""

import dataclasses
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
from oasis_jax.evaluation.segmenters import networks as segmenter_networks
from oasis_jax.evaluation.segmenters import protocol as segmenter_protocol

SEGMENTER_WEIGHTS_KEY = 'config.eval.segmenter_weights'

# The protocol whose input normalisation a segmenter keeps on a data set
# without one of its own (the label map is then the identity).
_HOME_PROTOCOL = {'drn_d_105': ('cityscapes', ''),
                  'upernet101': ('ade20k', 'single_scale'),
                  'deeplabv2_msc': ('coco_stuff', '')}


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
    self._flax = (SegmenterMiou(config, mesh)
                  if config.eval.segmenter else None)

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
    if self._flax is not None:
      self._flax.add(batch, images)

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
      # With a Flax segmenter too, the ONNX one's keys get an '_onnx' suffix.
      suffix = '_onnx' if self._flax is not None else ''
      out['miou' + suffix] = segmentation.mean_iou(self._conf_seg)
      out['miou_segmenter' + suffix] = os.path.abspath(self._segmenter_path)
      out['miou_protocol' + suffix] = self._protocol.name
    if self._flax is not None:
      out.update(self._flax.results())
    out.update(group_mious(
        self._config, self._protocol,
        self._conf_seg if self._onnx is not None else None,
        self._conf_d if self._discriminator is not None else None,
        self._dontcare))
    return out


def flax_segmenter_protocol(config, num_classes: int
                            ) -> segmenter_protocol.Protocol:
  """The protocol of config.eval.segmenter on the configured data set.

  A data set of the table gets its protocol (variant
  config.eval.segmenter_protocol, '' its default); any other keeps the
  segmenter's own input normalisation with the identity on its classes
  (config.data.dontcare_id ignored), at the generated size.
  """
  name, variant = config.eval.segmenter, config.eval.segmenter_protocol
  if config.data.name in segmenter_protocol.PROTOCOLS:
    protocol = segmenter_protocol.get(config.data.name, variant)
    if protocol.network != name:
      raise ValueError(
          f'config.eval.segmenter={name!r} does not fit the protocol '
          f'{protocol.name} (segmenter {protocol.network}).')
    return protocol
  home = segmenter_protocol.get(*_HOME_PROTOCOL[name])
  table = list(range(int(config.data.num_classes)))
  dontcare = dontcare_id(config)
  if dontcare is not None:
    table[dontcare] = segmenter_protocol.IGNORE_ID
  return dataclasses.replace(
      home, name=f'{config.data.name}/identity', num_classes=num_classes,
      label_map=tuple(table), short_sides=(), long_side=0)


def check_segmenter_weights(config,
                            setting: str = SEGMENTER_WEIGHTS_KEY) -> None:
  """Fails (one line naming the file and `setting`, the config key or flag
  that sets it) when config.eval.segmenter is set and its weight file is
  missing."""
  name = config.eval.segmenter
  if not name:
    return
  segmenter_networks.get(name)
  paths = config.eval.segmenter_weights.split(',')
  for path in paths:
    if not path or not os.path.isfile(path):
      raise segmenter_networks.MissingSegmenterWeightsError(
          f'{path or "(no path)"}: no such file; set {setting} '
          f'to the {name} weights ({segmenter_networks.get(name).published}, '
          'or its .npz; docs/evaluation.md).')


def _batch_confusion(variables, images, labels, valid, *, protocol, dtype):
  """One global batch's confusion matrix; padding examples not counted."""
  if images.dtype == jnp.uint8:  # Real images.
    images = images.astype(jnp.float32) / 127.5 - 1
  labels = jnp.where(valid[:, None, None], labels, -1)  # -1: ignored.
  return segmenter_protocol.segment(protocol, variables, images, labels,
                                    dtype=dtype)


class SegmenterMiou:
  """mIoU of config.eval.segmenter on generated (and real) images.

  The segmenter runs on the devices, the batch split over 'data' like the
  FID's Inception; `add` per global batch, `results` at the end.
  """

  def __init__(self, config, mesh: jax.sharding.Mesh):
    check_segmenter_weights(config)
    self.name = config.eval.segmenter
    dtype = jnp.dtype(config.eval.segmenter_dtype)
    model, variables = segmenter_networks.load(
        self.name, config.eval.segmenter_weights, dtype=dtype,
        setting=SEGMENTER_WEIGHTS_KEY)
    self.protocol = flax_segmenter_protocol(config, model.num_classes)
    self._real = bool(config.eval.segmenter_real_images)
    batch = sharding.batch_sharding(mesh)
    self._segment = jax.jit(
        functools.partial(_batch_confusion, protocol=self.protocol,
                          dtype=dtype),
        in_shardings=(sharding.replicated(mesh), batch, batch, batch),
        out_shardings=sharding.replicated(mesh))
    self._batch_sharding = batch
    self._variables = jax.device_put(variables, sharding.replicated(mesh))
    self.reset()

  def reset(self) -> None:
    n = self.protocol.num_classes
    self.confusion = np.zeros((n, n), np.int64)
    self.confusion_real = np.zeros((n, n), np.int64)

  def add(self, batch: dict[str, Any], images: jax.Array) -> None:
    """One global batch ('label', 'valid', 'image') and its generated images."""
    valid = jax.device_put(np.asarray(batch['valid'], bool),
                           self._batch_sharding)
    self.confusion += batching.to_host(self._segment(
        self._variables, images, batch['label'], valid))
    if self._real:
      self.confusion_real += batching.to_host(self._segment(
          self._variables, batch['image'], batch['label'], valid))

  def results(self) -> dict[str, Any]:
    """'miou' (and 'miou_real'), the segmenter and protocol names."""
    out = {'miou': segmentation.mean_iou(self.confusion),
           'miou_segmenter': self.name,
           'miou_protocol': self.protocol.name}
    if self._real:
      out['miou_real'] = segmentation.mean_iou(self.confusion_real)
    return out


class FidAndMiou:
  """Training's evaluate_fn: FID and the segmenter's mIoU on the same images."""

  def __init__(self, fid_evaluator, segmenter_miou: SegmenterMiou):
    self.fid_evaluator = fid_evaluator
    self.segmenter_miou = segmenter_miou

  def __call__(self, state, step: int) -> dict[str, float]:
    del step
    self.segmenter_miou.reset()
    fid = self.fid_evaluator.fid_of(common.generator_variables(state),
                                    on_batch=self.segmenter_miou.add)
    out = {'fid': fid, **self.segmenter_miou.results()}
    return {k: v for k, v in out.items() if not isinstance(v, str)}
