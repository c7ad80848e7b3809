"""OASIS losses: N+1 cross-entropy with class balancing, and LabelMix."""

from typing import Optional

import jax
import jax.numpy as jnp


def class_balance_weights(label: jax.Array, num_classes: int,
                          dontcare_id: Optional[int] = 0) -> jax.Array:
  """Per-pixel class-balancing weights over the whole batch.

  weight = B*H*W / (K * n_c) for a pixel of class c, with n_c the pixel count
  of c in the batch and K the number of classes present (the don't-care
  class excluded: its count is zeroed and its weight is 0). A gather, so
  absent classes (n_c = 0) are never touched.

  Args:
    label: [B, H, W] integer class ids.
    num_classes: number of classes.
    dontcare_id: class with weight 0 (None: every class counts).

  Returns:
    [B, H, W] weights, float32 (float64 with jax_enable_x64).
  """
  counts = jnp.zeros((num_classes,), float).at[label.reshape(-1)].add(1)
  if dontcare_id is not None:
    counts = counts.at[dontcare_id].set(0)
  present = counts > 0
  k = present.sum().astype(counts.dtype)
  coef = jnp.where(present, label.size / (k * jnp.where(present, counts, 1)),
                   0.0)
  return coef[label]


def n_plus_one_targets(label: jax.Array, real: bool) -> jax.Array:
  """N+1 targets: class id + 1 for real pixels, 0 (the fake class) else."""
  return label + 1 if real else jnp.zeros_like(label)


def n_plus_one_loss(logits: jax.Array, label: jax.Array, *, real: bool,
                    weights: Optional[jax.Array] = None) -> jax.Array:
  """Mean per-pixel softmax CE of [B, H, W, N+1] logits, optionally weighted.

  The mean is over all B*H*W pixels (zero-weight pixels count in it).
  """
  targets = n_plus_one_targets(label, real)
  dtype = jnp.promote_types(logits.dtype, jnp.float32)  # float64 kept.
  if weights is None:
    weights = jnp.ones(label.shape, dtype)
  return _weighted_ce_mean(logits.astype(dtype), targets, weights)


def _target_mask(logits: jax.Array, targets: jax.Array) -> jax.Array:
  iota = jax.lax.broadcasted_iota(targets.dtype, logits.shape,
                                  logits.ndim - 1)
  return iota == targets[..., None]


def _pixel_ce(logits, targets):
  """(per-pixel CE, logsumexp) without a [.., N+1] log-softmax array."""
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.sum(jnp.where(_target_mask(logits, targets), logits, 0.0), -1)
  return lse - picked, lse


@jax.custom_vjp
def _weighted_ce_mean(logits, targets, weights):
  return jnp.mean(_pixel_ce(logits, targets)[0] * weights)


def _weighted_ce_mean_fwd(logits, targets, weights):
  ce, lse = _pixel_ce(logits, targets)
  return jnp.mean(ce * weights), (logits, targets, weights, ce, lse)


def _weighted_ce_mean_bwd(res, g):
  # d/dlogits = w / n * (softmax - one_hot(target)), in one elementwise pass
  # over the saved logits: autodiff of log_softmax + take_along_axis kept
  # about six logits-sized arrays (76 MiB each at 256x256, batch 2, ADE20K).
  logits, targets, weights, ce, lse = res
  per_pixel = g / ce.size
  soft = jnp.exp(logits - lse[..., None])
  dlogits = (per_pixel * weights)[..., None] * (
      soft - _target_mask(logits, targets))
  return dlogits, None, per_pixel * ce


_weighted_ce_mean.defvjp(_weighted_ce_mean_fwd, _weighted_ce_mean_bwd)


def make_labelmix_mask(label: jax.Array, bits: jax.Array) -> jax.Array:
  """LabelMix mask from one bit per class id.

  Args:
    label: [B, H, W] class ids.
    bits: [num_classes] in {0, 1}; the bit of every class (classes absent
      from the batch are never read). Static shapes under jit.

  Returns:
    [B, H, W, 1] float32, 1 = take the real image.
  """
  return bits.astype(jnp.float32)[label][..., None]


def draw_labelmix_bits(rng: jax.Array, num_classes: int) -> jax.Array:
  """One independent fair bit per class id (the paper's LabelMix)."""
  return jax.random.bernoulli(rng, 0.5, (num_classes,)).astype(jnp.int32)


def labelmix_images(mask: jax.Array, real: jax.Array,
                    fake: jax.Array) -> jax.Array:
  """mask * real + (1 - mask) * fake."""
  return mask * real + (1 - mask) * fake


def labelmix_loss(mask: jax.Array, d_real: jax.Array, d_fake: jax.Array,
                  d_mixed: jax.Array) -> jax.Array:
  """Unweighted LabelMix: MSE between D(mixed) and the mixed D outputs.

  Gradients flow through all three discriminator outputs (as officially).
  """
  target = mask * d_real + (1 - mask) * d_fake
  return jnp.mean(jnp.square(d_mixed - target))
