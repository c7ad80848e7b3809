"""FID of a generator on the validation split, during training and after.

`make_fid_evaluator(config, mesh, workdir)` returns the `evaluate_fn` that
`train.train_and_evaluate` calls every `config.eval.fid_every_steps`: the FID
of the EMA generator (eval mode, BN statistics refreshed by the loop) on the
validation label maps against the real validation images. Generated image i
gets the noise of (config.seed, example index i) (evaluation.common). The
real images' statistics are computed once and cached in
`workdir/fid_stats/`, under a key of the data set, split, size, number of
images and the weights file.
"""

import os
from typing import Any, Callable, Iterator, Optional, Tuple

from absl import logging
import jax
import numpy as np

from data_pipelines import geometry
from oasis_jax.runtime import batching
from oasis_jax.evaluation import frechet as fid_lib
from oasis_jax.evaluation import inception
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import common

FID_STATS_DIR = 'fid_stats'  # Under the workdir: cached real statistics.


def fid_cache_key(config) -> str:
  """What the real validation statistics depend on (fid.make_cache_key)."""
  data = config.data
  parts = dict(
      kind='dataset', name=data.name, source=data.source,
      root=os.path.abspath(data.root) if data.root else '',
      tfds_data_dir=data.tfds_data_dir, split='val',
      image_hw=list(geometry.image_hw(config.data)),
      num_images=common.num_fid_images(config),
      weights=fid_lib.fingerprint_files([config.eval.inception_weights]))
  if data.name == 'synthetic':
    parts.update(num_classes=int(data.num_classes),
                 synthetic_num_examples=int(data.synthetic_num_examples),
                 synthetic_seed=int(data.synthetic_seed))
  return fid_lib.make_cache_key(**parts)


def compute_real_statistics(evaluator: 'FidEvaluator'
                            ) -> Tuple[np.ndarray, np.ndarray]:
  """Inception statistics of the real validation images (one pass)."""
  features = []
  for batch in evaluator.batches():
    feats = evaluator.device_features(batch['image'])
    features.append((feats, batch['valid']))
  return fid_lib.compute_statistics(evaluator.gather_features(features))


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
    self.batch_size = common.eval_batch_size(config, mesh)
    self.num_images = common.num_fid_images(config)
    if self.num_images < 2:
      raise ValueError(
          'FID needs at least 2 validation images; config.eval.'
          f'num_fid_images={config.eval.num_fid_images} gives '
          f'{self.num_images}.')
    self.cache_dir = os.path.join(os.fspath(workdir), FID_STATS_DIR)
    if inception_variables is None:
      inception_variables = inception.load_inception_params(
          config.eval.inception_weights,
          verify_sha256=config.eval.verify_inception_weights)
    self._features = inception.make_feature_fn(
        inception_variables, mesh=mesh, batch_size=self.batch_size)
    self._generate = common.make_generate_fn(config, mesh)
    self._replicated = sharding.replicated(mesh)
    self._real_stats = None

  def batches(self) -> Iterator[dict[str, Any]]:
    """Global eval batches of the FID images (see `common.eval_batches`)."""
    return common.eval_batches(self.config, self.mesh, self.batch_size,
                               self.num_images)

  def device_features(self, images: jax.Array) -> jax.Array:
    """Pool3 features of one global batch, left on the devices."""
    return self._features.device_features(images)

  @staticmethod
  def gather_features(pending) -> np.ndarray:
    """[(device features, valid)] -> [N, 2048] float64 of the valid rows."""
    return np.concatenate([batching.to_host(f)[v] for f, v in pending]
                          ).astype(np.float64)

  def real_statistics(self) -> Tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the real images: memory, else workdir cache, else run."""
    if self._real_stats is None:
      self._real_stats = fid_lib.load_or_compute_real_statistics(
          self.cache_dir, fid_cache_key(self.config),
          lambda: compute_real_statistics(self))
    return self._real_stats

  def generate(self, variables: common.Variables, batch) -> jax.Array:
    """Images of the batch's label maps, noise by example index."""
    return self._generate(variables, batch['label'], batch['index'])

  def place_variables(self, variables: common.Variables
                      ) -> common.Variables:
    """Generator (or D) variables replicated over this evaluator's mesh."""
    return jax.device_put(variables, self._replicated)

  def fid_of(self, variables: common.Variables,
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
    mu, sigma = fid_lib.compute_statistics(self.gather_features(pending))
    return fid_lib.frechet_distance(mu_real, sigma_real, mu, sigma)

  def __call__(self, state, step: int) -> dict[str, float]:
    """evaluate_fn of train.train_and_evaluate: {'fid': FID of the EMA G}."""
    value = self.fid_of(common.generator_variables(state))
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
