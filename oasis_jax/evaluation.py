"""Evaluation of OASIS generators: FID during training, metrics of checkpoints.

`make_fid_evaluator(config, mesh, workdir)` returns the `evaluate_fn` that
`train.train_and_evaluate` calls every `config.eval.fid_every_steps`: the FID
of the EMA generator (eval mode, BN statistics refreshed by the loop) on the
validation label maps against the real validation images. Generated image i
gets the noise of (config.seed, example index i) whatever the batch size or
device count, so the FID of a checkpoint is reproducible. The real images'
statistics are computed once and cached in `workdir/fid_stats/`, under a key
of the data set, split, size, number of images and the weights file.

`evaluate_checkpoint(workdir, checkpoint)` (the `checkpoint` mode of
`python -m oasis_jax.evaluate`) scores a saved generator: FID, mIoU of an
ONNX segmenter, the proxy mIoU of the OASIS discriminator's own segmentation
and diversity (mean pairwise MS-SSIM, and LPIPS if configured); it writes
`workdir/metrics_<checkpoint>.json`.
"""

import functools
import json
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple, Union

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

import data_pipelines
from oasis_jax import fid
from oasis_jax import inception
from oasis_jax import input_pipeline
from oasis_jax import lpips
from oasis_jax import metrics
from oasis_jax import models
from oasis_jax import sharding
from oasis_jax import steps

FID_STATS_DIR = 'fid_stats'  # Under the workdir: cached real statistics.
_FID_NOISE_STREAM = 0xF1D  # Folded into config.seed: the FID noise.
_DIVERSITY_STREAM = 0xD17E  # Folded into config.seed: the diversity noise.
# MS-SSIM's 5 scales with an 11-pixel window need 161 pixels per side;
# smaller images are enlarged (nearest neighbour) to this many.
MS_SSIM_MIN_SIDE = 161
MS_SSIM_RESIZE_SIDE = 176

Variables = Mapping[str, Any]  # {'params', 'batch_stats'} of a network.


def _to_host(x: jax.Array) -> np.ndarray:
  """A global array as numpy on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def _close(data_iter) -> None:
  close = getattr(data_iter, 'close', None)
  if close is not None:
    close()


def eval_batch_size(config, mesh: jax.sharding.Mesh) -> int:
  """config.eval.batch_size rounded up to a multiple of the devices."""
  n = mesh.devices.size
  return max(n, -(-int(config.eval.batch_size) // n) * n)


def num_fid_images(config) -> int:
  """Validation examples the FID uses (config.eval.num_fid_images, -1: all)."""
  total = input_pipeline.num_examples(config, 'val')
  n = int(config.eval.num_fid_images)
  return total if n < 0 else min(n, total)


def generator_variables(state) -> Variables:
  """The generator a train state is evaluated with: EMA, else G itself."""
  if state.ema is not None:
    return state.ema
  return {'params': state.generator.params,
          'batch_stats': state.generator.batch_stats}


def _generate_with_ids(variables, label, noise_ids, *, config, stream: int):
  """Eval-mode images; image b gets the noise (seed, stream, noise_ids[b])."""
  label = label.astype(jnp.int32)
  z = None
  if config.generator.use_3d_noise:
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), stream)
    ids = jnp.maximum(noise_ids, 0).astype(jnp.uint32)  # Padding: -1.
    z = jax.vmap(lambda i: jax.random.normal(
        jax.random.fold_in(key, i), (config.generator.z_dim,)))(ids)
  return steps.generate(variables, label, z, config=config)


def make_generate_fn(config, mesh: jax.sharding.Mesh, stream: int =
                     _FID_NOISE_STREAM):
  """jit(variables, label, noise_ids) -> images, the batch split on 'data'.

  Args:
    config: the run configuration.
    mesh: the device mesh (axis 'data').
    stream: the noise stream (FID and diversity use different ones).

  Returns:
    fn(variables (replicated), label [B, H, W] int, noise_ids [B] int32)
    -> [B, H, W, 3] float32 in [-1, 1], sharded over 'data'.
  """
  batch = sharding.batch_sharding(mesh)
  return jax.jit(
      functools.partial(_generate_with_ids, config=config, stream=stream),
      in_shardings=(sharding.replicated(mesh), batch, batch),
      out_shardings=batch)


def _discriminator_segmentation(variables, image, *, config):
  """Argmax over D's N real-class logits (channels 1..N): [B, H, W] int32."""
  logits = models.make_discriminator(config).apply(
      variables, image, train=False)
  return jnp.argmax(logits[..., 1:], axis=-1).astype(jnp.int32)


def fid_cache_key(config) -> str:
  """What the real validation statistics depend on (fid.make_cache_key)."""
  data = config.data
  parts = dict(
      kind='dataset', name=data.name, source=data.get('source', ''),
      root=os.path.abspath(data.root) if data.root else '',
      tfds_data_dir=data.get('tfds_data_dir', ''), split='val',
      image_hw=list(input_pipeline.image_hw(config)),
      num_images=num_fid_images(config),
      weights=fid.fingerprint_files([config.eval.inception_weights]))
  if data.name == 'synthetic':
    parts.update(num_classes=int(data.num_classes),
                 synthetic_num_examples=int(data.synthetic_num_examples),
                 synthetic_seed=int(data.synthetic_seed))
  return fid.make_cache_key(**parts)


def eval_batches(config, mesh: jax.sharding.Mesh, batch_size: int,
                 num_examples: int) -> Iterator[dict[str, Any]]:
  """One pass over the first `num_examples` validation examples.

  Yields:
    Global batches of `batch_size`: 'image' uint8 [B, H, W, 3], 'label'
    int32 [B, H, W], 'index' int32 [B] (-1: padding), split over 'data';
    'valid' bool [B] numpy (False for padding).
  """
  data_iter = input_pipeline.create_eval_iterator(
      config, split='val', batch_size=batch_size, num_examples=num_examples,
      process_index=jax.process_index(), process_count=jax.process_count())
  try:
    for local in data_iter:
      batch = sharding.global_batch(
          {k: local[k] for k in ('image', 'label', 'index', 'valid')}, mesh)
      batch['valid'] = _to_host(batch['valid']).astype(bool)
      yield batch
  finally:
    _close(data_iter)


def _compute_real_statistics(evaluator: 'FidEvaluator'
                             ) -> Tuple[np.ndarray, np.ndarray]:
  """Inception statistics of the real validation images (one pass)."""
  features = []
  for batch in evaluator.batches():
    feats = evaluator.device_features(batch['image'])
    features.append((feats, batch['valid']))
  return fid.compute_statistics(evaluator.gather_features(features))


class FidEvaluator:
  """FID of generators on the validation split; callable as `evaluate_fn`.

  Attributes:
    config: the run configuration.
    mesh: the device mesh; batches are split over its 'data' axis.
    batch_size: the global eval batch (config.eval.batch_size rounded up to
      a multiple of the devices).
    num_images: validation images used (config.eval.num_fid_images).
    cache_dir: where the real statistics are cached (workdir/fid_stats).
  """

  def __init__(self, config, mesh: jax.sharding.Mesh, workdir,
               *, inception_variables: Optional[Any] = None):
    self.config = config
    self.mesh = mesh
    self.batch_size = eval_batch_size(config, mesh)
    self.num_images = num_fid_images(config)
    if self.num_images < 2:
      raise ValueError(
          'FID needs at least 2 validation images; config.eval.'
          f'num_fid_images={config.eval.num_fid_images} gives '
          f'{self.num_images}.')
    self.cache_dir = os.path.join(os.fspath(workdir), FID_STATS_DIR)
    if inception_variables is None:
      inception_variables = inception.load_inception_params(
          config.eval.inception_weights,
          verify_sha256=config.eval.get('verify_inception_weights', True))
    self._features = inception.make_feature_fn(
        inception_variables, mesh=mesh, batch_size=self.batch_size)
    self._generate = make_generate_fn(config, mesh)
    self._replicated = sharding.replicated(mesh)
    self._real_stats = None

  def batches(self) -> Iterator[dict[str, Any]]:
    """Global eval batches of the FID images (see `eval_batches`)."""
    return eval_batches(self.config, self.mesh, self.batch_size,
                        self.num_images)

  def device_features(self, images: jax.Array) -> jax.Array:
    """Pool3 features of one global batch, left on the devices."""
    return self._features.device_features(images)

  @staticmethod
  def gather_features(pending) -> np.ndarray:
    """[(device features, valid)] -> [N, 2048] float64 of the valid rows."""
    return np.concatenate([_to_host(f)[v] for f, v in pending]).astype(
        np.float64)

  def real_statistics(self) -> Tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the real images: memory, else workdir cache, else run."""
    if self._real_stats is None:
      self._real_stats = fid.load_or_compute_real_statistics(
          self.cache_dir, fid_cache_key(self.config),
          lambda: _compute_real_statistics(self))
    return self._real_stats

  def generate(self, variables: Variables, batch) -> jax.Array:
    """Images of the batch's label maps, noise by example index."""
    return self._generate(variables, batch['label'], batch['index'])

  def place_variables(self, variables: Variables) -> Variables:
    """Generator (or D) variables replicated over this evaluator's mesh."""
    return jax.device_put(variables, self._replicated)

  def fid_of(self, variables: Variables,
             on_batch: Optional[Callable[[dict[str, Any], jax.Array],
                                         None]] = None) -> float:
    """FID of a generator ({'params', 'batch_stats'}) in eval mode.

    Args:
      variables: the generator's variables.
      on_batch: optional callback(batch, generated images) per batch (the
        checkpoint mode computes its other metrics on the same images).

    Returns:
      The FID (float64 Fréchet distance).
    """
    mu_real, sigma_real = self.real_statistics()
    variables = self.place_variables(variables)
    pending = []
    for batch in self.batches():
      images = self.generate(variables, batch)
      pending.append((self.device_features(images), batch['valid']))
      if on_batch is not None:
        on_batch(batch, images)
    mu, sigma = fid.compute_statistics(self.gather_features(pending))
    return fid.frechet_distance(mu_real, sigma_real, mu, sigma)

  def __call__(self, state, step: int) -> dict[str, float]:
    """evaluate_fn of train.train_and_evaluate: {'fid': FID of the EMA G}."""
    value = self.fid_of(generator_variables(state))
    logging.info('Step %d: FID %.4f over %d validation images.', step, value,
                 self.num_images)
    return {'fid': value}


def make_fid_evaluator(config, mesh: jax.sharding.Mesh, workdir,
                       **kwargs) -> FidEvaluator:
  """The FID evaluate_fn(state, step) -> {'fid': float} of a training run.

  Loads the Inception weights of config.eval.inception_weights (checked with
  config.eval.verify_inception_weights); real statistics are computed at the
  first call (or read from workdir/fid_stats/).

  Args:
    config: the run configuration.
    mesh: the training mesh (axis 'data').
    workdir: the run's folder.
    **kwargs: passed to `FidEvaluator` (inception_variables).

  Returns:
    A `FidEvaluator`.
  """
  return FidEvaluator(config, mesh, workdir, **kwargs)


# ----------------------------------------------------------------------------
# Checkpoint mode.
# ----------------------------------------------------------------------------


def segmentation_protocol(config) -> metrics.SegmentationProtocol:
  """The data set's mIoU protocol; identity on its classes if it has none.

  The identity protocol (e.g. 'synthetic', 'folder'): segmenter class c is
  data set class c, config.data.dontcare_id ignored, at the generated size.
  """
  if config.data.name in metrics.PROTOCOLS:
    return metrics.get_protocol(config.data.name)
  n = int(config.data.num_classes)
  dontcare = int(config.data.get('dontcare_id', -1))
  table = np.arange(n, dtype=np.int64)
  if 0 <= dontcare < n:
    table[dontcare] = metrics.IGNORE_ID
  return metrics.SegmentationProtocol(
      config.data.name, n, tuple(input_pipeline.image_hw(config)), table)


def group_mious(config, protocol: metrics.SegmentationProtocol,
                seg_conf: Optional[np.ndarray], d_conf: np.ndarray,
                dontcare: Optional[int]) -> dict[str, float]:
  """mIoU per group of classes of the data set (LVIS: by frequency).

  Returns {'miou_<group>': segmenter mIoU (when seg_conf is given),
  'miou_discriminator_<group>': the discriminator's}, empty for data sets
  without groups. Data set ids map to segmenter ids through the protocol.
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
    for name, value in metrics.group_mean_iou(seg_conf, seg_groups).items():
      out[f'miou_{name}'] = value
  d_groups = {name: [i for i in ids if i != dontcare]
              for name, ids in groups.items()}
  for name, value in metrics.group_mean_iou(d_conf, d_groups).items():
    out[f'miou_discriminator_{name}'] = value
  return out


def _resize_nearest_images(images: np.ndarray, height: int,
                           width: int) -> np.ndarray:
  rows = (np.arange(height) * images.shape[1]) // height
  cols = (np.arange(width) * images.shape[2]) // width
  return images[:, rows][:, :, cols]


def ms_ssim_size(hw: Tuple[int, int]) -> Tuple[int, int]:
  """The size MS-SSIM sees: hw, or enlarged so the short side is 176."""
  h, w = hw
  if min(h, w) >= MS_SSIM_MIN_SIDE:
    return h, w
  scale = MS_SSIM_RESIZE_SIDE / min(h, w)
  return int(round(h * scale)), int(round(w * scale))


def diversity(config, mesh: jax.sharding.Mesh, variables: Variables,
              num_maps: int, num_samples: int) -> dict[str, Any]:
  """Mean pairwise MS-SSIM of `num_samples` images per label map.

  The first `num_maps` validation label maps; sample s of map i gets the
  noise of (config.seed, diversity stream, i * num_samples + s). Images with
  a side under 161 pixels are enlarged (nearest) to a short side of 176.

  Returns:
    {'diversity_ms_ssim': mean over maps (lower: more diverse), and how it
    was computed; with config.eval.lpips_weights set, 'diversity_lpips':
    mean over maps of the mean pairwise LPIPS (higher: more diverse)}.
  """
  if num_samples < 2:
    raise ValueError(f'Diversity needs >= 2 samples per map, got '
                     f'{num_samples}.')
  total = input_pipeline.num_examples(config, 'val')
  num_maps = min(int(num_maps), total)
  bs = eval_batch_size(config, mesh)
  labels = [_to_host(b['label'])[b['valid']]
            for b in eval_batches(config, mesh, bs, num_maps)]
  labels = np.concatenate(labels)[:num_maps]
  generate = make_generate_fn(config, mesh, stream=_DIVERSITY_STREAM)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  all_labels = np.repeat(labels, num_samples, axis=0).astype(np.int32)
  ids = np.arange(all_labels.shape[0], dtype=np.int32)
  outs = []
  batch_sharding = sharding.batch_sharding(mesh)
  for start in range(0, all_labels.shape[0], bs):
    lab, idx = all_labels[start:start + bs], ids[start:start + bs]
    count = lab.shape[0]
    if count < bs:
      lab = np.concatenate([lab, np.zeros((bs - count,) + lab.shape[1:],
                                          lab.dtype)])
      idx = np.concatenate([idx, np.full((bs - count,), -1, np.int32)])
    put = lambda x: jax.make_array_from_callback(
        x.shape, batch_sharding, lambda i, x=x: x[i])
    outs.append(_to_host(generate(variables, put(lab), put(idx)))[:count])
  images = np.concatenate(outs).reshape(
      (num_maps, num_samples) + all_labels.shape[1:] + (3,))
  hw = images.shape[2:4]
  size = ms_ssim_size(hw)
  values = []
  for per_map in images:
    if size != hw:
      per_map = _resize_nearest_images(per_map, *size)
    values.append(metrics.mean_pairwise_ms_ssim(per_map))
  result = {}
  lpips_weights = config.eval.get('lpips_weights', '')
  if lpips_weights:  # At the generated size; higher: more diverse.
    metric = lpips.load_lpips(lpips_weights)
    result['diversity_lpips'] = float(np.mean(
        [metric.mean_pairwise_lpips(per_map) for per_map in images]))
  return {
      **result,
      'diversity_ms_ssim': float(np.mean(values)),
      'diversity_num_maps': int(num_maps),
      'diversity_num_samples': int(num_samples),
      'diversity_ms_ssim_input': (
          f'nearest-neighbour upsampling {hw[0]}x{hw[1]} -> '
          f'{size[0]}x{size[1]} (MS-SSIM needs >= {MS_SSIM_MIN_SIDE} px)'
          if size != hw else f'{hw[0]}x{hw[1]} (generated size)'),
  }


def _checkpoint_name(checkpoint: Union[str, int]) -> str:
  if isinstance(checkpoint, str) and checkpoint in ('best', 'latest'):
    return checkpoint
  return str(int(checkpoint))


def evaluate_checkpoint(workdir: str, checkpoint: Union[str, int] = 'best', *,
                        config: Optional[ml_collections.ConfigDict] = None,
                        segmenter: str = '', num_diversity_maps: int = 0,
                        num_diversity_samples: int = 8,
                        mesh: Optional[jax.sharding.Mesh] = None,
                        write: bool = True) -> dict[str, Any]:
  """Metrics of a saved generator; writes workdir/metrics_<checkpoint>.json.

  The EMA generator (BN statistics refreshed for its step, as in training)
  generates the validation split's first config.eval.num_fid_images images
  with the FID noise; on them are computed FID (when
  config.eval.inception_weights is set), mIoU of the ONNX `segmenter` (when
  given) and the proxy mIoU of the checkpoint's discriminator
  ('miou_discriminator': argmax over its N real-class logits vs the input
  label, don't care ignored). Diversity: `diversity`.

  Args:
    workdir: the training run's folder.
    checkpoint: 'best', 'latest' or a step.
    config: the run's config (default: workdir/config.json).
    segmenter: an .onnx segmenter (metrics.OnnxSegmenter), '' for none.
    num_diversity_maps: label maps of the diversity metric (0: none).
    num_diversity_samples: images per label map for diversity.
    mesh: the device mesh (default: all devices).
    write: write the JSON file (process 0).

  Returns:
    The metrics dict (as written).
  """
  from oasis_jax import inference  # pylint: disable=g-import-not-at-top
  workdir = os.fspath(workdir)
  name = _checkpoint_name(checkpoint)
  if config is None:
    config = inference.read_workdir_config(workdir)
  mesh = sharding.make_mesh() if mesh is None else mesh
  weights = config.eval.inception_weights
  if weights:  # Fail before restoring anything.
    inception.check_inception_weights(
        weights, verify_sha256=config.eval.get('verify_inception_weights',
                                               True))
  spec = name if name in ('best', 'latest') else int(name)
  directory, step = inference.find_checkpoint(workdir, spec)
  _, gen_vars, info = inference.load_workdir_generator(workdir, spec,
                                                       config=config)
  disc_vars = inference.restore_discriminator(directory, step, config)
  results: dict[str, Any] = {
      'checkpoint': name, 'step': int(info['step']), 'generator':
      info['kind'], 'bn_refresh_batches': int(info['refresh_batches']),
      'num_images': num_fid_images(config)}

  protocol = segmentation_protocol(config)
  onnx = metrics.OnnxSegmenter(segmenter) if segmenter else None
  n = int(config.data.num_classes)
  dontcare = int(config.data.get('dontcare_id', -1))
  dontcare = dontcare if 0 <= dontcare < n else None
  seg_fn = jax.jit(functools.partial(_discriminator_segmentation,
                                     config=config),
                   in_shardings=(sharding.replicated(mesh),
                                 sharding.batch_sharding(mesh)),
                   out_shardings=sharding.batch_sharding(mesh))
  disc_vars = jax.device_put(disc_vars, sharding.replicated(mesh))
  conf = {'d': np.zeros((n, n), np.int64),
          'seg': np.zeros((protocol.num_classes,) * 2, np.int64)}

  def on_batch(batch, images):
    valid = batch['valid']
    labels = _to_host(batch['label'])[valid]
    preds = _to_host(seg_fn(disc_vars, images))[valid]
    conf['d'] += metrics.confusion_matrix(labels, preds, n,
                                          ignore_index=dontcare)
    if onnx is not None:
      conf['seg'] += metrics.segmentation_confusion(
          onnx, _to_host(images)[valid], labels, protocol)

  if weights:
    evaluator = FidEvaluator(config, mesh, workdir)
    results['fid'] = evaluator.fid_of(gen_vars, on_batch=on_batch)
  else:
    logging.warning('config.eval.inception_weights is empty: no FID.')
    results['fid'] = None
    results['fid_note'] = 'config.eval.inception_weights not set'
    generate = make_generate_fn(config, mesh)
    placed = jax.device_put(gen_vars, sharding.replicated(mesh))
    for batch in eval_batches(config, mesh, eval_batch_size(config, mesh),
                              num_fid_images(config)):
      on_batch(batch, generate(placed, batch['label'], batch['index']))
  results['miou_discriminator'] = metrics.mean_iou(conf['d'],
                                                   ignore_index=dontcare)
  if onnx is not None:
    results['miou'] = metrics.mean_iou(conf['seg'])
    results['miou_segmenter'] = os.path.abspath(segmenter)
    results['miou_protocol'] = protocol.name
  results.update(group_mious(config, protocol,
                             conf['seg'] if onnx is not None else None,
                             conf['d'], dontcare))
  if num_diversity_maps > 0:
    results.update(diversity(config, mesh, gen_vars, num_diversity_maps,
                             num_diversity_samples))
  if write and jax.process_index() == 0:
    path = os.path.join(workdir, f'metrics_{name}.json')
    with open(path, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
    logging.info('Wrote %s', path)
  return results
