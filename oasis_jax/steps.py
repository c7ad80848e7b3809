"""The OASIS training iteration and sampling, as pure functions.

One iteration runs the official five training-mode forwards in order, each
seeing the network state (spectral-norm vectors, BN statistics) the previous
one left: G step: G(label, z1) -> D(fake); D step: G(label, z2) (no gradient)
-> D(fake) -> D(real) -> D(mixed). Then the EMA of the generator's state.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from oasis_jax import config_lib
from oasis_jax import losses
from oasis_jax import models
from oasis_jax import train_state as train_state_lib


def preprocess_batch(batch) -> tuple[jax.Array, jax.Array]:
  """Host batch -> (image [B, H, W, 3] in [-1, 1], label int32).

  The image is float32, or float64 when given in float64.
  """
  image = batch['image']
  if image.dtype == jnp.uint8:
    image = image.astype(jnp.float32) / 127.5 - 1.0
  image = image.astype(jnp.promote_types(image.dtype, jnp.float32))
  return image, batch['label'].astype(jnp.int32)


def draw_noise(rng: jax.Array, batch_size: int, config) -> Optional[jax.Array]:
  """z ~ N(0, I) of shape [B, z_dim], or None without 3D noise."""
  if not config.generator.use_3d_noise:
    return None
  return jax.random.normal(rng, (batch_size, config.generator.z_dim))


def _dontcare(config) -> Optional[int]:
  d = config.data.get('dontcare_id', 0)
  return None if d is None or d < 0 else d


def balance_weights(label: jax.Array, config) -> Optional[jax.Array]:
  """Class-balancing weights if enabled, else None (weight 1)."""
  if not config.loss.use_class_balancing:
    return None
  return losses.class_balance_weights(label, config.data.num_classes,
                                      _dontcare(config))


def _apply(module, params, stats, *args, train: bool, **kwargs):
  """Applies a module, returning (output, new batch_stats)."""
  variables = {'params': params, 'batch_stats': stats}
  if not train:
    return module.apply(variables, *args, train=False, **kwargs), stats
  out, mutated = module.apply(variables, *args, train=True,
                              mutable=['batch_stats'], **kwargs)
  return out, mutated.get('batch_stats', stats)


def generator_step(state: train_state_lib.TrainState, image, label, z,
                   weights, *, config):
  """One G update: adversarial N+1 loss through D, Adam on G's params.

  Returns the new state, the metrics, and the auxiliary outputs (fake image,
  D logits on it, G gradients) for tests.
  """
  del image
  gen, disc = models.make_generator(config), models.make_discriminator(config)
  g, d = state.generator, state.discriminator

  def loss_fn(g_params):
    fake, g_stats = _apply(gen, g_params, g.batch_stats, label, z, train=True)
    logits, d_stats = _apply(disc, d.params, d.batch_stats, fake, train=True)
    loss = losses.n_plus_one_loss(logits, label, real=True, weights=weights)
    return loss, (g_stats, d_stats, fake, logits)

  (loss, (g_stats, d_stats, fake, logits)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(g.params)
  updates, opt_state = state.g_tx.update(grads, g.opt_state, g.params)
  g = g.replace(params=optax.apply_updates(g.params, updates),
                batch_stats=g_stats, opt_state=opt_state)
  # D's gradients of the G step are discarded; its SN state advances.
  d = d.replace(batch_stats=d_stats)
  state = state.replace(generator=g, discriminator=d)
  aux = {'fake': fake, 'd_fake': logits, 'grads': grads}
  return state, {'g/adv': loss, 'g/total': loss}, aux


def discriminator_step(state: train_state_lib.TrainState, image, label, z,
                       weights, mask, *, config):
  """One D update: fake + real N+1 losses and LabelMix, Adam on D's params.

  Args:
    mask: [B, H, W, 1] LabelMix mask (1 = real), or None without LabelMix.
  """
  gen, disc = models.make_generator(config), models.make_discriminator(config)
  g, d = state.generator, state.discriminator
  fake, g_stats = _apply(gen, g.params, g.batch_stats, label, z, train=True)
  fake = jax.lax.stop_gradient(fake)
  use_labelmix = config.loss.use_labelmix and mask is not None

  mixed = losses.labelmix_images(mask, image, fake) if use_labelmix else None
  fuse = config.perf.get('fuse_d_forwards', True)

  def forwards(d_params):
    """D(fake), D(real) [, D(mixed)]: consecutive official forwards."""
    inputs = [fake, image] + ([mixed] if use_labelmix else [])
    if fuse:  # One batched call; each chunk sees its own power iteration.
      logits, stats = _apply(disc, d_params, d.batch_stats,
                             jnp.concatenate(inputs), train=True,
                             groups=len(inputs))
      return jnp.split(logits, len(inputs)), stats
    outs, stats = [], d.batch_stats
    for x in inputs:
      out, stats = _apply(disc, d_params, stats, x, train=True)
      outs.append(out)
    return outs, stats

  def loss_fn(d_params):
    outs, stats = forwards(d_params)
    d_fake, d_real = outs[0], outs[1]
    loss_fake = losses.n_plus_one_loss(d_fake, label, real=False)
    loss_real = losses.n_plus_one_loss(d_real, label, real=True,
                                       weights=weights)
    total = loss_fake + loss_real
    metrics = {'d/fake': loss_fake, 'd/real': loss_real}
    aux = {'fake': fake, 'd_fake': d_fake, 'd_real': d_real}
    if use_labelmix:
      lm = config.loss.lambda_labelmix * losses.labelmix_loss(
          mask, d_real, d_fake, outs[2])
      total = total + lm
      metrics['d/labelmix'] = lm
      aux.update(mixed=mixed, d_mixed=outs[2])
    metrics['d/total'] = total
    return total, (stats, metrics, aux)

  (_, (d_stats, metrics, aux)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(d.params)
  updates, opt_state = state.d_tx.update(grads, d.opt_state, d.params)
  d = d.replace(params=optax.apply_updates(d.params, updates),
                batch_stats=d_stats, opt_state=opt_state)
  g = g.replace(batch_stats=g_stats)
  aux['grads'] = grads
  return state.replace(generator=g, discriminator=d), metrics, aux


def train_step(state: train_state_lib.TrainState, batch, rng: jax.Array, *,
               config, noise=None, labelmix_mask=None, return_aux=False):
  """One OASIS iteration: G step, D step, EMA update.

  Args:
    state: the train state.
    batch: {'image': [B, H, W, 3] uint8 or float in [-1, 1],
      'label': [B, H, W] integer class ids}.
    rng: base PRNG key; the step number is folded in.
    config: the run configuration (bind with functools.partial).
    noise: optional (z1, z2), the noise of the two generator forwards
      (default: drawn from rng).
    labelmix_mask: optional [B, H, W, 1] LabelMix mask (default: one random
      bit per class id, drawn from rng).
    return_aux: also return every intermediate output (for tests).

  Returns:
    (new state, metrics) — and the auxiliary outputs with return_aux.
  """
  image, label = preprocess_batch(batch)
  rng = jax.random.fold_in(rng, state.step)
  z1_rng, z2_rng, mix_rng = jax.random.split(rng, 3)
  if noise is None:
    noise = (draw_noise(z1_rng, label.shape[0], config),
             draw_noise(z2_rng, label.shape[0], config))
  if labelmix_mask is None and config.loss.use_labelmix:
    bits = losses.draw_labelmix_bits(mix_rng, config.data.num_classes)
    labelmix_mask = losses.make_labelmix_mask(label, bits)
  weights = balance_weights(label, config)
  state, g_metrics, g_aux = generator_step(
      state, image, label, noise[0], weights, config=config)
  state, d_metrics, d_aux = discriminator_step(
      state, image, label, noise[1], weights, labelmix_mask, config=config)
  ema = state.ema
  if ema is not None:
    ema = train_state_lib.ema_update(ema, state.generator, config.ema.decay)
  state = state.replace(step=state.step + 1, ema=ema)
  metrics = {**g_metrics, **d_metrics}
  if return_aux:
    return state, metrics, {'g': g_aux, 'd': d_aux}
  return state, metrics


_CPU_SCHEDULERS = {
    'memory': {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'},
    'concurrency': {
        'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED'},
    'default': {},
}


def compiler_options(config) -> dict[str, Any]:
  """XLA options for jitting the training step (jax.jit(compiler_options=))."""
  name = config_lib.resolve(config).perf.cpu_scheduler
  return dict(_CPU_SCHEDULERS[name])


def generate(variables, label: jax.Array, z: Optional[jax.Array], *, config,
             train: bool = False) -> jax.Array:
  """Generator forward from {'params', 'batch_stats'}; [B, H, W, 3] in [-1,1].

  With train=True returns (image, new batch_stats) instead.
  """
  out, stats = _apply(models.make_generator(config), variables['params'],
                      variables.get('batch_stats', {}), label, z, train=train)
  return (out, stats) if train else out


def sample_step(state: train_state_lib.TrainState, label: jax.Array,
                rng: jax.Array, *, config):
  """Eval-mode images of G and of the EMA G (same noise) for a label map."""
  label = label.astype(jnp.int32)
  z = draw_noise(rng, label.shape[0], config)
  g_vars = {'params': state.generator.params,
            'batch_stats': state.generator.batch_stats}
  out = {'generator': generate(g_vars, label, z, config=config)}
  if state.ema is not None:
    out['ema'] = generate(state.ema, label, z, config=config)
  return out


def refresh_stats_step(variables, label: jax.Array, rng: jax.Array, *,
                       config):
  """One train-mode forward of a generator without gradient (fresh z).

  Re-estimates BN running statistics and advances the spectral-norm vectors,
  as the official code does for the EMA generator before sampling; returns
  the new variables. Run it over config.ema.bn_refresh_batches batches.
  """
  z = draw_noise(rng, label.shape[0], config)
  _, stats = generate(variables, label.astype(jnp.int32), z, config=config,
                      train=True)
  return {'params': variables['params'], 'batch_stats': stats}
