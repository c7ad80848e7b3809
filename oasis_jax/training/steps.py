"""The OASIS training iteration and sampling, as pure functions.

One iteration runs the official five training-mode forwards in order, each
seeing the network state (spectral-norm vectors, BN statistics) the previous
one left: G step: G(label, z1) -> D(fake); D step: G(label, z2) (no gradient)
-> D(fake) -> D(real) -> D(mixed). Then the EMA of the generator's state.
"""

import contextlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from oasis_jax.kernels import select
from oasis_jax.config import resolution
from oasis_jax.kernels import n_plus_one
from oasis_jax.training import losses
from oasis_jax import models
from oasis_jax.training import train_state as train_state_lib


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
  d = config.data.dontcare_id
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


# The discriminator's last layer, a 1x1 conv to the N+1 logits.
_D_HEAD = 'layer_up_last'


def _fused_head(config) -> bool:
  """config.perf.fused_d_head: losses from the last conv's inputs."""
  return bool(config.perf.fused_d_head)


def _without_head(next_fun, args, kwargs, context):
  """Flax interceptor: the discriminator's last conv returns its input."""
  if context.method_name == '__call__' and context.module.name == _D_HEAD:
    return args[0]
  return next_fun(*args, **kwargs)


def _apply_d(disc, params, stats, x, *, config):
  """D in train mode: (logits, or with the fused head the [B, H, W, F]
  inputs of its last conv, which the losses then apply chunk by chunk)."""
  with (nn.intercept_methods(_without_head) if _fused_head(config)
        else contextlib.nullcontext()):
    return _apply(disc, params, stats, x, train=True)


def _n_plus_one(d_out, d_params, label, *, real, weights, config):
  """N+1 loss of `_apply_d`'s output."""
  if not _fused_head(config):
    return n_plus_one.loss(d_out, label, real=real, weights=weights)
  head = d_params[_D_HEAD]
  return n_plus_one.loss_from_features(
      d_out, head['kernel'], head['bias'], label, real=real, weights=weights)


def generator_step(state: train_state_lib.TrainState, image, label, z,
                   weights, *, config, vgg_params=None):
  """One G update: adversarial loss through D, Adam on G's params.

  The OASIS D's N+1 loss, or (config.discriminator.kind 'spade') SPADE's
  -mean(logits) plus feature matching; plus the VGG loss when `vgg_params`
  (the frozen VGG-19's, a constant) are given.

  Returns the new state, the metrics, and the auxiliary outputs (fake image,
  D outputs on it, G gradients) for tests.
  """
  gen, disc = select.make_generator(config), select.make_discriminator(config)
  g, d = state.generator, state.discriminator
  spade = models.discriminator_kind(config) == 'spade'

  def loss_fn(g_params):
    fake, g_stats = _apply(gen, g_params, g.batch_stats, label, z, train=True)
    if spade:
      logits, d_stats, metrics = _spade_generator_loss(disc, d, fake, image,
                                                       label, config)
      loss = metrics['g/adv'] + metrics['g/feat']
    else:
      logits, d_stats = _apply_d(disc, d.params, d.batch_stats, fake,
                                 config=config)
      loss = _n_plus_one(logits, d.params, label, real=True,
                         weights=weights, config=config)
      metrics = {'g/adv': loss}
    if vgg_params is not None:
      metrics['g/vgg'] = config.loss.lambda_vgg * vgg_loss(
          vgg_params, fake, image, config=config)
      loss = loss + metrics['g/vgg']
    metrics['g/total'] = loss
    return loss, (g_stats, d_stats, fake, logits, metrics)

  (_, (g_stats, d_stats, fake, logits, metrics)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(g.params)
  updates, opt_state = state.g_tx.update(grads, g.opt_state, g.params)
  g = g.replace(params=optax.apply_updates(g.params, updates),
                batch_stats=g_stats, opt_state=opt_state)
  # D's gradients of the G step are discarded; its SN state advances.
  d = d.replace(batch_stats=d_stats)
  state = state.replace(generator=g, discriminator=d)
  aux = {'fake': fake, 'd_fake': logits, 'grads': grads}
  return state, metrics, aux


def vgg_loss(vgg_params, fake, image, *, config) -> jax.Array:
  """The unscaled VGG-19 loss of fake vs image ([B, H, W, 3] in [-1, 1]).

  One VGG call on [fake; image] (no layer mixes the batch); the real half's
  features carry no gradient, the VGG parameters are constants.
  """
  vgg_params = jax.lax.stop_gradient(vgg_params)
  feats = models.make_vgg(config, vgg_params).apply(
      {'params': vgg_params}, jnp.concatenate([fake, image]))
  b = fake.shape[0]
  return losses.vgg_loss([f[:b] for f in feats], [f[b:] for f in feats])


def _split_fake_real(outputs, b: int):
  """SPADE D outputs of [fake; real] -> (fake halves, real halves)."""
  return ([[f[:b] for f in scale] for scale in outputs],
          [[f[b:] for f in scale] for scale in outputs])


def _spade_generator_loss(disc, d, fake, image, label, config):
  """SPADE D on [fake; real] (one training-mode call) -> G's loss terms."""
  outputs, d_stats = _apply(disc, d.params, d.batch_stats,
                            jnp.concatenate([fake, image]),
                            jnp.concatenate([label, label]), train=True)
  fake_out, real_out = _split_fake_real(outputs, fake.shape[0])
  metrics = {
      'g/adv': losses.hinge_g_loss([o[-1] for o in fake_out]),
      'g/feat': config.loss.lambda_feat * losses.feature_matching_loss(
          [o[:-1] for o in fake_out], [o[:-1] for o in real_out])}
  return fake_out, d_stats, metrics


def _spade_discriminator_step(state, image, label, fake, g_stats, *, config):
  """One D update with SPADE's D: hinge on D([fake; real]), one call."""
  disc = select.make_discriminator(config)
  g, d = state.generator, state.discriminator

  def loss_fn(d_params):
    outputs, stats = _apply(disc, d_params, d.batch_stats,
                            jnp.concatenate([fake, image]),
                            jnp.concatenate([label, label]), train=True)
    fake_out, real_out = _split_fake_real(outputs, fake.shape[0])
    loss_fake, loss_real = losses.hinge_d_loss([o[-1] for o in fake_out],
                                               [o[-1] for o in real_out])
    metrics = {'d/fake': loss_fake, 'd/real': loss_real,
               'd/total': loss_fake + loss_real}
    aux = {'fake': fake, 'd_fake': fake_out, 'd_real': real_out}
    return loss_fake + loss_real, (stats, metrics, aux)

  (_, (d_stats, metrics, aux)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(d.params)
  updates, opt_state = state.d_tx.update(grads, d.opt_state, d.params)
  d = d.replace(params=optax.apply_updates(d.params, updates),
                batch_stats=d_stats, opt_state=opt_state)
  aux['grads'] = grads
  return (state.replace(generator=g.replace(batch_stats=g_stats),
                        discriminator=d), metrics, aux)


def discriminator_step(state: train_state_lib.TrainState, image, label, z,
                       weights, mask, *, config):
  """One D update: fake + real N+1 losses and LabelMix, Adam on D's params.

  Args:
    mask: [B, H, W, 1] LabelMix mask (1 = real), or None without LabelMix.
  """
  gen, disc = select.make_generator(config), select.make_discriminator(config)
  g, d = state.generator, state.discriminator
  fake, g_stats = _apply(gen, g.params, g.batch_stats, label, z, train=True)
  fake = jax.lax.stop_gradient(fake)
  if models.discriminator_kind(config) == 'spade':
    return _spade_discriminator_step(state, image, label, fake, g_stats,
                                     config=config)
  use_labelmix = config.loss.use_labelmix and mask is not None

  mixed = losses.labelmix_images(mask, image, fake) if use_labelmix else None
  fuse = config.perf.fuse_d_forwards

  def forwards(d_params):
    """D(fake), D(real) [, D(mixed)]: consecutive official forwards."""
    inputs = [fake, image] + ([mixed] if use_labelmix else [])
    if fuse:  # One batched call; each chunk sees its own power iteration.
      logits, stats = _apply_d(
          select.make_discriminator(config, forwards=len(inputs)), d_params,
          d.batch_stats, jnp.concatenate(inputs), config=config)
      return jnp.split(logits, len(inputs)), stats
    outs, stats = [], d.batch_stats
    for x in inputs:
      out, stats = _apply_d(disc, d_params, stats, x, config=config)
      outs.append(out)
    return outs, stats

  def loss_fn(d_params):
    outs, stats = forwards(d_params)
    d_fake, d_real = outs[0], outs[1]
    loss_fake = _n_plus_one(d_fake, d_params, label, real=False,
                            weights=None, config=config)
    loss_real = _n_plus_one(d_real, d_params, label, real=True,
                            weights=weights, config=config)
    total = loss_fake + loss_real
    metrics = {'d/fake': loss_fake, 'd/real': loss_real}
    aux = {'fake': fake, 'd_fake': d_fake, 'd_real': d_real}
    if use_labelmix:
      if _fused_head(config):
        lm = n_plus_one.labelmix_from_features(
            mask, d_real, d_fake, outs[2], d_params[_D_HEAD]['kernel'])
      else:
        lm = losses.labelmix_loss(mask, d_real, d_fake, outs[2])
      lm = config.loss.lambda_labelmix * lm
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
               config, noise=None, labelmix_mask=None, return_aux=False,
               vgg_params=None):
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
    vgg_params: the frozen VGG-19's parameters (vgg_weights.load_for_config)
      when config.loss.use_vgg, else None.

  Returns:
    (new state, metrics) — and the auxiliary outputs with return_aux.
  """
  if config.loss.use_vgg and vgg_params is None:
    raise ValueError('config.loss.use_vgg=True: pass the VGG-19 parameters '
                     '(vgg_params=vgg_weights.load_for_config(config)[0]).')
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
      state, image, label, noise[0], weights, config=config,
      vgg_params=vgg_params)
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
  name = resolution.resolve(config).perf.cpu_scheduler
  return dict(_CPU_SCHEDULERS[name])


def generate(variables, label: jax.Array, z: Optional[jax.Array], *, config,
             train: bool = False) -> jax.Array:
  """Generator forward from {'params', 'batch_stats'}; [B, H, W, 3] in [-1,1].

  With train=True returns (image, new batch_stats) instead.
  """
  out, stats = _apply(select.make_generator(config), variables['params'],
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
