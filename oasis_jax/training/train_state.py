"""The OASIS train state: both networks, their optimizers, the EMA generator."""

import functools
from typing import Any

import flax
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines import geometry
from oasis_jax.kernels import select
from oasis_jax import models


class NetState(struct.PyTreeNode):
  """One network: parameters, state (BN statistics, SN vectors), optimizer."""
  params: Any
  batch_stats: Any
  opt_state: Any


class TrainState(struct.PyTreeNode):
  """Everything that changes during training; what is jitted and saved.

  ``ema`` holds the EMA generator's whole state
  (``{'params': ..., 'batch_stats': ...}``); ``rng`` is the base PRNG key
  (a raw uint32[2] key) that each step folds its step number into.
  """
  step: jax.Array
  rng: jax.Array
  generator: NetState
  discriminator: NetState
  ema: Any
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)

@functools.lru_cache(maxsize=None)
def _adam(lr: float, b1: float, b2: float, eps: float):
  # One object per setting: the optimizers are static fields of TrainState,
  # so states built by separate calls share one tree structure.
  return optax.adam(lr, b1=b1, b2=b2, eps=eps)


def make_optimizers(config):
  """Adam for G and D with the official betas (0, 0.999) and eps."""
  o = config.optim
  make = lambda lr: _adam(float(lr), float(o.b1), float(o.b2), float(o.eps))
  return make(o.lr_g), make(o.lr_d)


def init_variables(config, rng: jax.Array):
  """Initial generator and discriminator variables (official init)."""
  g_rng, d_rng = jax.random.split(rng)
  h, w = geometry.image_hw(config.data)
  label = jnp.zeros((1, h, w), jnp.int32)
  z = None
  if config.generator.use_3d_noise:
    z = jnp.zeros((1, config.generator.z_dim), jnp.float32)
  g_vars = select.make_generator(config).init(g_rng, label, z, train=False)
  d_inputs = (jnp.zeros((1, h, w, 3), jnp.float32),)
  if models.discriminator_kind(config) == 'spade':  # D([label | image]).
    d_inputs += (label,)
  d_vars = select.make_discriminator(config).init(d_rng, *d_inputs,
                                                  train=False)
  return _split(g_vars), _split(d_vars)


def random_generator_variables(config, seed: int = 0, gain: float = 1.0):
  """An untrained generator's variables, drawn with numpy (nothing compiled).

  For tests and demos without a checkpoint: Xavier-normal kernels times
  `gain` (the official init uses 0.02), zero biases, random unit
  spectral-norm vectors, BN statistics mean 0, variance 1.

  Returns:
    {'params': ..., 'batch_stats': ...} of numpy arrays.
  """
  (params, stats), _ = jax.eval_shape(
      lambda: init_variables(config, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == 'kernel':
      kh, kw, cin, cout = shape
      std = gain * np.sqrt(2.0 / (kh * kw * (cin + cout)))
      return (std * rng.standard_normal(shape)).astype(np.float32)
    if name in ('u', 'v'):
      x = rng.standard_normal(shape)
      return (x / np.linalg.norm(x)).astype(np.float32)
    if name == 'var':
      return np.ones(shape, np.float32)
    return np.zeros(shape, np.float32)  # bias, mean

  return {'params': jax.tree_util.tree_map_with_path(fill, params),
          'batch_stats': jax.tree_util.tree_map_with_path(fill, stats)}


def _split(variables):
  variables = flax.core.unfreeze(variables)
  return variables['params'], variables.get('batch_stats', {})


def create_train_state(config, rng: jax.Array) -> TrainState:
  """A fresh train state; pure, so it can be jitted with out_shardings.

  Args:
    config: the run configuration.
    rng: PRNG key for the initialization; the step key is derived from it.
  """
  init_rng, step_rng = jax.random.split(rng)
  (g_params, g_stats), (d_params, d_stats) = init_variables(config, init_rng)
  g_tx, d_tx = make_optimizers(config)
  ema = None
  if config.ema.use_ema:
    ema = {'params': g_params, 'batch_stats': g_stats}
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=step_rng,
      generator=NetState(g_params, g_stats, g_tx.init(g_params)),
      discriminator=NetState(d_params, d_stats, d_tx.init(d_params)),
      ema=ema, g_tx=g_tx, d_tx=d_tx)


def abstract_train_state(config) -> TrainState:
  """The train state's shapes and dtypes, without computing anything."""
  return jax.eval_shape(functools.partial(create_train_state, config),
                        jax.random.PRNGKey(config.seed))


def ema_update(ema, generator: NetState, decay: float):
  """ema = decay * ema + (1 - decay) * current, over params AND buffers."""
  current = {'params': generator.params, 'batch_stats': generator.batch_stats}
  return jax.tree.map(lambda e, g: decay * e + (1 - decay) * g, ema, current)
