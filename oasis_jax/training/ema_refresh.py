"""The EMA generator's BN statistics, re-estimated on training batches.

The EMA of running statistics that a train state holds is not what the EMA
weights produce, so before the EMA generator is sampled, evaluated or
exported its statistics are re-estimated: `config.ema.bn_refresh_batches`
train-mode forwards without gradient on training batches of a separate
iterator seeded by (config.seed, step), so the same step always sees the
same batches and noise. Training (`train.py`) and inference
(`inference/synthesis.py`) both call this module.
"""

import functools
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from oasis_jax.training import input_pipeline
from oasis_jax.runtime import sharding
from oasis_jax.training import steps

REFRESH_TAG = 0x2EF5E5  # Folded into the seed: noise of the EMA refresh.


def make_refresh_step(config, mesh: jax.sharding.Mesh):
  """steps.refresh_stats_step jitted over the mesh (labels split on 'data')."""
  return jax.jit(
      functools.partial(steps.refresh_stats_step, config=config),
      in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=sharding.replicated(mesh))


def refresh_ema(config, mesh: jax.sharding.Mesh, ema: Any, step: int,
                *, refresh_fn: Optional[Callable[..., Any]] = None) -> Any:
  """The EMA generator's variables with BN statistics re-estimated.

  Args:
    config: the run configuration.
    mesh: the device mesh.
    ema: {'params', 'batch_stats'} of the EMA generator (replicated).
    step: the training step (selects the refresh batches and noise).
    refresh_fn: the jitted refresh step (made here if not given).

  Returns:
    The refreshed {'params', 'batch_stats'}; `ema` itself is unchanged.
  """
  num_batches = int(config.ema.bn_refresh_batches)
  if num_batches <= 0:
    return ema
  if refresh_fn is None:
    refresh_fn = make_refresh_step(config, mesh)
  seed = int(np.random.SeedSequence([config.seed, REFRESH_TAG, step])
             .generate_state(1)[0])
  data_iter = input_pipeline.create_train_iterator(
      config, seed=seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  try:
    for i in range(num_batches):
      label = sharding.global_batch(
          {'label': next(data_iter)['label']}, mesh)['label']
      ema = refresh_fn(ema, label, sharding.replicated_key(
          mesh, config.seed, REFRESH_TAG, step, i))
  finally:
    input_pipeline.close_iterator(data_iter)
  return ema


def refresh_mesh(config) -> jax.sharding.Mesh:
  """The most devices (of the 'data' mesh) that divide the train batch."""
  batch = int(config.train.batch_size)
  n = max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)
  return sharding.make_mesh(n)


def refresh_statistics(config, variables, step: int,
                       num_batches: Optional[int] = None):
  """A generator's BN statistics re-estimated, on the host (outside training).

  `num_batches` (default config.ema.bn_refresh_batches) train-mode forwards
  over the training split, the batches and noise that training uses for the
  same step, on a mesh of its own (`refresh_mesh`).

  Returns:
    The variables with new batch_stats (numpy); `variables` if 0 batches.
  """
  if num_batches is None:
    num_batches = int(config.ema.bn_refresh_batches)
  if num_batches <= 0:
    return variables
  config = ml_collections.ConfigDict(config.to_dict())
  config.ema.bn_refresh_batches = int(num_batches)
  refreshed = refresh_ema(config, refresh_mesh(config), variables, step)
  return jax.tree.map(np.asarray, jax.device_get(refreshed))
