"""OASIS losses (N+1 cross-entropy, class balancing, LabelMix) and the
ablations' (VGG perceptual loss; SPADE D's hinge and feature matching).

The paper's plain formulations; `kernels/n_plus_one.py` computes the N+1
loss and LabelMix with fused custom-VJP kernels and is tested against them.
"""

from typing import Optional, Sequence

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
  """The paper's N+1 loss: mean per-pixel softmax CE, optionally weighted.

  Real pixels target their class (channel id + 1), generated pixels the fake
  class (channel 0); the mean is over all B*H*W pixels (zero-weight pixels
  count in it). The plain formulation, differentiated by autodiff; training
  uses `kernels.n_plus_one`'s fused version of the same numbers.

  Args:
    logits: [B, H, W, N+1] discriminator outputs, channel 0 the fake class.
    label: [B, H, W] integer class ids in [0, N).
    real: targets are class id + 1 (True) or the fake class 0 (False).
    weights: optional [B, H, W] per-pixel weights (class balancing).

  Returns:
    The scalar loss, float32 (float64 for float64 logits).
  """
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  log_p = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  one_hot = jax.nn.one_hot(n_plus_one_targets(label, real), logits.shape[-1],
                           dtype=dtype)
  ce = -jnp.sum(one_hot * log_p, axis=-1)
  if weights is not None:
    ce = ce * weights.astype(dtype)
  return jnp.mean(ce)


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


# ----------------------------------------------------------------------------
# The ablations: VGG perceptual loss; SPADE discriminator's objective.
# ----------------------------------------------------------------------------

# Weights of relu1_1 .. relu5_1 in the VGG loss (official OASIS / pix2pixHD).
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _mean_abs_diff(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def vgg_loss(fake_features: Sequence[jax.Array],
             real_features: Sequence[jax.Array]) -> jax.Array:
  """sum_i w_i * mean|phi_i(fake) - stop_gradient(phi_i(real))| (unscaled).

  Args:
    fake_features, real_features: the five VGG-19 maps relu1_1..relu5_1
      (models.vgg.VGG19Features) of the fake and the real images.

  Returns:
    The scalar loss, without lambda_vgg; each mean is over all B*H*W*C.
  """
  total = jnp.zeros((), jnp.float32)
  for w, f, r in zip(VGG_LAYER_WEIGHTS, fake_features, real_features,
                     strict=True):
    total = total + w * _mean_abs_diff(f, jax.lax.stop_gradient(r))
  return total


def hinge_d_loss(fake_logits: Sequence[jax.Array],
                 real_logits: Sequence[jax.Array]) -> tuple[jax.Array,
                                                           jax.Array]:
  """SPADE's D hinge terms, each averaged over the scales.

  Args:
    fake_logits, real_logits: per scale, the [B, h, w, 1] logit maps.

  Returns:
    (mean_i mean(relu(1 + fake_i)), mean_i mean(relu(1 - real_i))).
  """
  fake = sum(jnp.mean(jax.nn.relu(1.0 + l)) for l in fake_logits)
  real = sum(jnp.mean(jax.nn.relu(1.0 - l)) for l in real_logits)
  return fake / len(fake_logits), real / len(real_logits)


def hinge_g_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
  """The generator's adversarial term: mean_i -mean(fake_i) (not a hinge)."""
  return sum(-jnp.mean(l) for l in fake_logits) / len(fake_logits)


def feature_matching_terms(fake_features: Sequence[Sequence[jax.Array]],
                           real_features: Sequence[Sequence[jax.Array]]
                           ) -> jax.Array:
  """mean|fake[i][j] - stop_gradient(real[i][j])| of every scale and layer.

  Args:
    fake_features, real_features: per scale, the discriminator's
      intermediate outputs (the logits excluded).

  Returns:
    [num_scales, num_layers] float32.
  """
  return jnp.stack([jnp.stack([
      _mean_abs_diff(f, jax.lax.stop_gradient(r)) for f, r in zip(
          fs, rs, strict=True)]) for fs, rs in zip(fake_features,
                                                  real_features, strict=True)])


def feature_matching_loss(fake_features: Sequence[Sequence[jax.Array]],
                          real_features: Sequence[Sequence[jax.Array]]
                          ) -> jax.Array:
  """SPADE's discriminator feature matching, without lambda_feat.

  Summed over the intermediate layers, averaged over the scales.
  """
  terms = feature_matching_terms(fake_features, real_features)
  return jnp.sum(terms) / terms.shape[0]
