"""OASIS losses (N+1 cross-entropy, class balancing, LabelMix) and the
ablations' (VGG perceptual loss; SPADE D's hinge and feature matching)."""

import functools
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
  """Mean per-pixel softmax CE of [B, H, W, N+1] logits, optionally weighted.

  The mean is over all B*H*W pixels (zero-weight pixels count in it). Fused:
  per pixel, logsumexp minus the target's logit read by id, in float32
  whatever the logits' dtype (float64 for float64 logits); the backward
  pass is one elementwise pass over the logits. Apart from the gradient
  itself nothing logits-sized is made (no one-hot, no log-softmax, no
  float32 copy of bfloat16 logits), so the cost stays that of the logits
  with 1205 classes (LVIS).

  Args:
    logits: [B, H, W, N+1] discriminator outputs, channel 0 the fake class.
    label: [B, H, W] integer class ids in [0, N).
    real: targets are class id + 1 (True) or the fake class 0 (False).
    weights: optional [B, H, W] per-pixel weights (class balancing).

  Returns:
    The float32 scalar loss.
  """
  targets = n_plus_one_targets(label, real)
  dtype = jnp.promote_types(logits.dtype, jnp.float32)  # float64 kept.
  if weights is None:
    weights = jnp.ones(label.shape, dtype)
  return _weighted_ce_mean(logits, targets, weights.astype(dtype))


def _target_mask(logits: jax.Array, targets: jax.Array) -> jax.Array:
  iota = jax.lax.broadcasted_iota(targets.dtype, logits.shape,
                                  logits.ndim - 1)
  return iota == targets[..., None]


def _pixel_ce(logits, targets):
  """(per-pixel CE, logsumexp), float32 (float64 for float64 logits),
  without a [.., N+1] array.

  The target's logit is gathered by id (exactly the logit: the same number
  as summing the logits under a one-hot mask).
  """
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  lse = jax.nn.logsumexp(logits.astype(dtype), axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32),
                               axis=-1)[..., 0].astype(dtype)
  return lse - picked, lse


@jax.custom_vjp
def _weighted_ce_mean(logits, targets, weights):
  return jnp.mean(_pixel_ce(logits, targets)[0] * weights)


def _weighted_ce_mean_fwd(logits, targets, weights):
  ce, lse = _pixel_ce(logits, targets)
  return jnp.mean(ce * weights), (logits, targets, weights, ce, lse)


def _weighted_ce_mean_bwd(res, g):
  # d/dlogits = w / n * (softmax - one_hot(target)), in one elementwise pass
  # over the saved logits (the D output itself, not a copy): autodiff of
  # log_softmax + take_along_axis kept about six logits-sized arrays (76 MiB
  # each at 256x256, batch 2, ADE20K).
  logits, targets, weights, ce, lse = res
  per_pixel = g / ce.size
  soft = jnp.exp(logits.astype(lse.dtype) - lse[..., None])
  dlogits = (per_pixel * weights)[..., None] * (
      soft - _target_mask(logits, targets))
  return dlogits.astype(logits.dtype), None, per_pixel * ce


_weighted_ce_mean.defvjp(_weighted_ce_mean_fwd, _weighted_ce_mean_bwd)


# Pixels per chunk of the fused head: at most [16384, N+1] float32 logits
# (79 MB at LVIS's 1205 channels), and at most a 16th of the batch's pixels
# (but 256 at least), so that small batches do not hold all their logits.
HEAD_CHUNK_PIXELS = 16384
_HEAD_MIN_CHUNKS = 16
_HEAD_MIN_CHUNK_PIXELS = 256


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
  """[P, ...] -> [P / chunk, chunk, ...], zero-padded at the end."""
  pad = -x.shape[0] % chunk
  if pad:
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  return x.reshape((-1, chunk) + x.shape[1:])


def n_plus_one_loss_from_features(
    features: jax.Array, kernel: jax.Array, bias: jax.Array,
    label: jax.Array, *, real: bool, weights: Optional[jax.Array] = None,
    chunk_pixels: int = HEAD_CHUNK_PIXELS) -> jax.Array:
  """`n_plus_one_loss` of the logits features @ kernel + bias, never stored.

  The discriminator's last layer is a 1x1 conv; with many classes (LVIS:
  1205 logits per pixel) its output dwarfs every other activation. Here
  the logits exist one chunk of pixels at a time, in the forward pass (for
  logsumexp and the target's logit) and again in the backward pass, which
  returns the gradients of the features, the kernel and the bias. The same
  numbers as the loss of the stored logits up to float rounding.

  Args:
    features: [B, H, W, F] input of the last 1x1 conv.
    kernel: [F, N+1] (or [1, 1, F, N+1]) its kernel.
    bias: [N+1] its bias.
    label: [B, H, W] class ids in [0, N).
    real: targets are class id + 1 (True) or the fake class 0 (False).
    weights: optional [B, H, W] per-pixel weights.
    chunk_pixels: at most this many pixels per chunk.

  Returns:
    The float32 scalar loss.
  """
  targets = n_plus_one_targets(label, real).reshape(-1).astype(jnp.int32)
  if weights is None:
    weights = jnp.ones(label.shape, jnp.float32)
  f = features.shape[-1]
  pixels = targets.shape[0]
  chunk = min(int(chunk_pixels), pixels, max(
      _HEAD_MIN_CHUNK_PIXELS, -(-pixels // _HEAD_MIN_CHUNKS)))
  return _head_ce_mean(features.reshape(-1, f).astype(jnp.float32),
                       kernel.reshape(f, -1).astype(jnp.float32),
                       bias.astype(jnp.float32), targets,
                       weights.reshape(-1).astype(jnp.float32), chunk)


def _head_forward(x, kernel, bias, targets, chunk):
  """Per-pixel (CE, logsumexp) of x @ kernel + bias, chunk by chunk."""
  def one(args):
    xc, tc = args
    logits = jnp.dot(xc, kernel, precision='highest') + bias
    return _pixel_ce(logits, tc)

  ce, lse = jax.lax.map(one, (_chunks(x, chunk), _chunks(targets, chunk)))
  n = x.shape[0]
  return ce.reshape(-1)[:n], lse.reshape(-1)[:n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _head_ce_mean(x, kernel, bias, targets, weights, chunk):
  ce, _ = _head_forward(x, kernel, bias, targets, chunk)
  return jnp.mean(ce * weights)


def _head_ce_mean_fwd(x, kernel, bias, targets, weights, chunk):
  ce, lse = _head_forward(x, kernel, bias, targets, chunk)
  return jnp.mean(ce * weights), (x, kernel, bias, targets, weights, ce, lse)


def _head_ce_mean_bwd(chunk, res, g):
  # Per chunk: dlogits = w g / n (softmax - one_hot), recomputed from the
  # features; dx = dlogits @ kernel^T, dkernel += x^T dlogits.
  x, kernel, bias, targets, weights, ce, lse = res
  n = x.shape[0]
  scale = weights * (g / n)

  def one(carry, args):
    dk, db = carry
    xc, tc, sc, lc = args
    logits = jnp.dot(xc, kernel, precision='highest') + bias
    soft = jnp.exp(logits - lc[:, None])
    dlogits = sc[:, None] * (soft - _target_mask(logits, tc))
    dx = jnp.dot(dlogits, kernel.T, precision='highest')
    dk = dk + jnp.dot(xc.T, dlogits, precision='highest')
    return (dk, db + dlogits.sum(0)), dx

  (dk, db), dx = jax.lax.scan(
      one, (jnp.zeros_like(kernel), jnp.zeros_like(bias)),
      (_chunks(x, chunk), _chunks(targets, chunk), _chunks(scale, chunk),
       _chunks(lse, chunk)))
  return (dx.reshape(-1, x.shape[1])[:n], dk, db, None, (g / n) * ce)


_head_ce_mean.defvjp(_head_ce_mean_fwd, _head_ce_mean_bwd)


def labelmix_loss_from_features(mask: jax.Array, real: jax.Array,
                                fake: jax.Array, mixed: jax.Array,
                                kernel: jax.Array) -> jax.Array:
  """`labelmix_loss` of the logits of a last 1x1 conv, from its inputs.

  D(mixed) - (mask D(real) + (1 - mask) D(fake)) = dx @ kernel with dx =
  mixed - mask real - (1 - mask) fake (the biases cancel), so the mean
  square over the N+1 logits is the mean of dx (K K^T) dx^T / (N+1): a
  quadratic form of F channels, not N+1. Same value up to float rounding.

  Args:
    mask: [B, H, W, 1] LabelMix mask (1 = real).
    real: [B, H, W, F] last-conv inputs of D(real).
    fake: likewise of D(fake).
    mixed: likewise of D(mixed).
    kernel: [F, N+1] (or [1, 1, F, N+1]) the last conv's kernel.

  Returns:
    The float32 scalar loss.
  """
  f = real.shape[-1]
  kernel = kernel.reshape(f, -1).astype(jnp.float32)
  gram = jnp.dot(kernel, kernel.T, precision='highest')
  dx = (mixed - mask * real - (1 - mask) * fake).astype(jnp.float32)
  quad = jnp.sum(jnp.dot(dx, gram, precision='highest') * dx, axis=-1)
  return jnp.mean(quad) / kernel.shape[1]


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
