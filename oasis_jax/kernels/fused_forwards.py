"""Consecutive discriminator forwards as one batched call.

The official D step runs D(fake), D(real), D(mixed) one after another; each
training-mode forward advances every spectral norm by one power iteration.
Given a batch of n equal chunks, `formulations(f, n)` makes the
discriminator compute those n forwards at once: each Conv runs n power
iterations, chunk i is convolved with the kernel normalized by the vectors
after i + 1 of them, and the state after the last is kept. Same numbers as
n calls, one batched network.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from oasis_jax.kernels import conv as conv_kernels
from oasis_jax.models import layers
from oasis_jax.models import model_config

# Formulations that take one (u, v) per chunk of the batch themselves.
_CHUNK_AWARE = (conv_kernels.spectral_conv,
                conv_kernels.upsample_spectral_conv)


class ConsecutiveForwardsConv(layers.Conv):
  """layers.Conv for a batch of ``forwards`` consecutive forwards: its
  formulation gets one (u, v) per chunk. Same parameters and state."""
  forwards: int = 1

  def power_iterations(self, kernel: jax.Array, train: bool,
                       count: int = 1):
    return super().power_iterations(kernel, train, count * self.forwards)


@dataclasses.dataclass(frozen=True)
class PerChunk:
  """A one-forward formulation applied to each chunk with its own (u, v)."""
  formulation: Callable[..., jax.Array]

  def __call__(self, x: jax.Array, kernel: jax.Array, vectors, *,
               train: bool, dtype: Any) -> jax.Array:
    if vectors is None or len(vectors) == 1:
      return self.formulation(x, kernel, vectors, train=train, dtype=dtype)
    return jnp.concatenate([
        self.formulation(chunk, kernel, [uv], train=train, dtype=dtype)
        for chunk, uv in zip(jnp.split(x, len(vectors)), vectors)])


@functools.lru_cache(maxsize=None)
def _conv_layer(forwards: int):
  return functools.partial(ConsecutiveForwardsConv, forwards=forwards)


def formulations(f: model_config.Formulations,
                 forwards: int) -> model_config.Formulations:
  """The discriminator formulations f computing ``forwards`` consecutive
  forwards on a batch of as many equal chunks."""
  per_chunk = lambda g: g if g in _CHUNK_AWARE else PerChunk(g)
  return dataclasses.replace(
      f, conv=per_chunk(f.conv), upsample_conv=per_chunk(f.upsample_conv),
      conv_layer=_conv_layer(forwards))
