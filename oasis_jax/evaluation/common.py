"""What the evaluators share: validation batches and the evaluation forward.

Generated image i gets the noise of (config.seed, a stream of the metric,
example index i) (noise.py), whatever the batch size or device count, so a
metric of a checkpoint is reproducible.
"""

import functools
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp

from oasis_jax.runtime import batching
from oasis_jax.training import input_pipeline
from oasis_jax.inference import noise
from oasis_jax.runtime import sharding
from oasis_jax.training import steps

FID_NOISE_STREAM = 0xF1D  # Folded into config.seed: the FID noise.

Variables = Mapping[str, Any]  # {'params', 'batch_stats'} of a network.


def eval_batch_size(config, mesh: jax.sharding.Mesh) -> int:
  """config.eval.batch_size rounded up to a multiple of the devices."""
  return batching.rounded_batch_size(config.eval.batch_size,
                                     mesh.devices.size)


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
    ids = jnp.maximum(noise_ids, 0)  # Padding: -1.
    z = noise.noise_for_ids(config.seed, stream, ids, config.generator.z_dim)
  return steps.generate(variables, label, z, config=config)


def make_generate_fn(config, mesh: jax.sharding.Mesh,
                     stream: int = FID_NOISE_STREAM):
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
      batch['valid'] = batching.to_host(batch['valid']).astype(bool)
      yield batch
  finally:
    input_pipeline.close_iterator(data_iter)
