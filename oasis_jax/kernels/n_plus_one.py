"""The N+1 loss and LabelMix fused: custom-VJP formulations of their numbers.

`training/losses.py` holds the paper's plain versions; these compute the
same values and gradients (tests/kernels_n_plus_one_test.py) with far less
memory: `loss` never makes a one-hot or log-softmax of the logits,
`loss_from_features` never stores the logits of the discriminator's last
1x1 conv (LVIS: 1205 per pixel), `labelmix_from_features` works in the F
channels of that conv's input.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp


def _targets(label: jax.Array, real: bool) -> jax.Array:
  """N+1 targets (as losses.n_plus_one_targets): id + 1, or 0 for fake."""
  return label + 1 if real else jnp.zeros_like(label)


def loss(logits: jax.Array, label: jax.Array, *, real: bool,
                    weights: Optional[jax.Array] = None) -> jax.Array:
  """`losses.n_plus_one_loss`, fused: the same numbers in one pass.

  Mean per-pixel softmax CE of [B, H, W, N+1] logits, optionally weighted.
  The mean is over all B*H*W pixels (zero-weight pixels count in it). Fused:
  per pixel, logsumexp minus the target's logit read by id, in float32
  whatever the logits' dtype (float64 for float64 logits); the backward
  pass is one elementwise pass over the logits. Apart from the gradient
  itself nothing logits-sized is made (no one-hot, no log-softmax, no
  float32 copy of bfloat16 logits), so the cost stays that of the logits
  with 1205 classes (LVIS). Arguments as `losses.n_plus_one_loss`; returns
  the float32 scalar loss (float64 for float64 logits).
  """
  targets = _targets(label, real)
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


def loss_from_features(
    features: jax.Array, kernel: jax.Array, bias: jax.Array,
    label: jax.Array, *, real: bool, weights: Optional[jax.Array] = None,
    chunk_pixels: int = HEAD_CHUNK_PIXELS) -> jax.Array:
  """`loss` of the logits features @ kernel + bias, never stored.

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
  targets = _targets(label, real).reshape(-1).astype(jnp.int32)
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


def labelmix_from_features(mask: jax.Array, real: jax.Array,
                                fake: jax.Array, mixed: jax.Array,
                                kernel: jax.Array) -> jax.Array:
  """`losses.labelmix_loss` of the logits of a last 1x1 conv, from its inputs.

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
