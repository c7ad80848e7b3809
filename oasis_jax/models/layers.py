"""Layers shared by the OASIS networks: spectral-norm conv, param-free norms,
floor-indexed nearest resizing, average pooling.

All activations are NHWC. Spectral-norm vectors and normalization running
statistics live in the ``batch_stats`` collection, so one
``mutable=['batch_stats']`` threads every piece of state the official
training-mode forward updates.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SN_EPS = 1e-12  # torch.nn.utils.spectral_norm's eps.
NORM_EPS = 1e-5
NORM_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch.

Dtype = Any


def xavier_normal(gain: float = 0.02):
  """Xavier-normal init with a gain, for HWIO kernels (official init)."""
  return nn.initializers.variance_scaling(gain**2, 'fan_avg', 'normal')


def _unit_vector(key, shape, dtype=jnp.float32):
  v = jax.random.normal(key, shape, dtype)
  return v / jnp.maximum(jnp.linalg.norm(v), SN_EPS)


def _normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x), SN_EPS)


def nearest_resize(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Nearest resize with PyTorch's floor convention.

  Args:
    x: [B, H, W, C].
    size: (out_h, out_w).

  Returns:
    [B, out_h, out_w, C] with source index floor(dst * in / out), i.e. the
    top-left pixel of each cell for an integer down-factor (not the centre
    pixel ``jax.image.resize`` picks).
  """
  in_h, in_w = x.shape[1], x.shape[2]
  out_h, out_w = int(size[0]), int(size[1])
  if (in_h, in_w) == (out_h, out_w):
    return x
  if in_h % out_h == 0 and in_w % out_w == 0:
    return x[:, ::in_h // out_h, ::in_w // out_w, :]
  if out_h % in_h == 0 and out_w % in_w == 0:
    return upsample2x(x, out_h // in_h, out_w // in_w)
  rows = _floor_indices(in_h, out_h)
  cols = _floor_indices(in_w, out_w)
  return x[:, rows][:, :, cols]


def _floor_indices(n_in: int, n_out: int) -> np.ndarray:
  scale = np.float32(n_in) / np.float32(n_out)
  idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int32)
  return np.minimum(idx, n_in - 1)


def upsample2x(x: jax.Array, fh: int = 2, fw: int = 2) -> jax.Array:
  """Nearest upsampling by integer factors (pixel repetition), NHWC."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, fh, w, fw, c))
  return x.reshape(b, h * fh, w * fw, c)


def avg_pool2x(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2, NHWC."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class Conv(nn.Module):
  """Conv2d (stride 1, 'same' zero padding), optionally spectral-normalized.

  With ``spectral_norm``, the raw kernel is the parameter (``weight_orig`` of
  PyTorch) and ``u`` [out] / ``v`` [in*kh*kw] (v in PyTorch's OIHW flattening
  order) are state in ``batch_stats``. In training mode one power iteration
  runs first and updates them; in eval mode the stored vectors are used as
  they are. sigma = u . (W v), with u, v constants for autodiff.

  ``groups`` > 1 evaluates that many consecutive official forwards in one
  call: the batch is ``groups`` equal chunks, chunk i sees the state after i
  power iterations (its own sigma), and the state after the last is kept.
  This is how the D step's three forwards share one batched convolution.
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  spectral_norm: bool = False
  groups: int = 1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    k = self.kernel_size
    in_features = x.shape[-1]
    kernel = self.param('kernel', xavier_normal(),
                        (k, k, in_features, self.features), jnp.float32)
    sigmas = None
    if self.spectral_norm:
      sigmas = self._sigmas(kernel, train)
      if self.groups == 1:
        kernel = kernel / sigmas[0]
    bias = None
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        jnp.float32)
    dtype = self.dtype or x.dtype
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if sigmas is not None and self.groups > 1:
      y = y.reshape((self.groups, -1) + y.shape[1:])
      y = y / sigmas.astype(dtype)[:, None, None, None, None]
      y = y.reshape((-1,) + y.shape[2:])
    if bias is not None:
      y = y + bias.astype(dtype)
    return y

  def _sigmas(self, kernel: jax.Array, train: bool) -> jax.Array:
    """sigma of each group; advances (u, v) once per group in training."""
    k = self.kernel_size
    n_out, n_in = self.features, kernel.shape[2]
    u_var = self.variable('batch_stats', 'u', lambda: _unit_vector(
        self.make_rng('params'), (n_out,)))
    v_var = self.variable('batch_stats', 'v', lambda: _unit_vector(
        self.make_rng('params'), (n_in * k * k,)))
    # [out, in*kh*kw] in PyTorch's OIHW order.
    w_mat = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(n_out, -1)
    w_const = jax.lax.stop_gradient(w_mat)
    u, v = u_var.value, v_var.value
    iterate = train and not self.is_initializing()
    sigmas = []
    for _ in range(self.groups):
      if iterate:
        v = _normalize(jnp.matmul(w_const.T, u, precision='highest'))
        u = _normalize(jnp.matmul(w_const, v, precision='highest'))
      sigmas.append(jnp.dot(jax.lax.stop_gradient(u),
                            jnp.matmul(w_mat, jax.lax.stop_gradient(v),
                                       precision='highest'),
                            precision='highest'))
    if iterate:
      u_var.value, v_var.value = u, v
    return jnp.stack(sigmas)


class ParamFreeNorm(nn.Module):
  """Normalization without scale or bias: 'batch' or 'instance'.

  'batch' normalizes with the batch mean and biased variance over (B, H, W) in
  training (under ``jit`` with a batch-sharded input the reduction covers the
  global batch) and keeps PyTorch-style running statistics (momentum 0.1,
  unbiased variance) in ``batch_stats`` for eval mode. 'instance' normalizes
  each image and channel over (H, W) and has no state.
  """
  kind: str = 'batch'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    xf = x.astype(jnp.float32)
    if self.kind == 'instance':
      mean = xf.mean(axis=(1, 2), keepdims=True)
      var = jnp.square(xf - mean).mean(axis=(1, 2), keepdims=True)
      return ((xf - mean) * jax.lax.rsqrt(var + NORM_EPS)).astype(x.dtype)
    if self.kind != 'batch':
      raise ValueError(f"norm must be 'batch' or 'instance', got {self.kind!r}")
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    if train:
      mean = xf.mean(axis=(0, 1, 2))
      var = jnp.square(xf - mean).mean(axis=(0, 1, 2))
      if not self.is_initializing():
        n = x.shape[0] * x.shape[1] * x.shape[2]
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = ((1 - NORM_MOMENTUM) * ra_mean.value
                         + NORM_MOMENTUM * mean)
        ra_var.value = ((1 - NORM_MOMENTUM) * ra_var.value
                        + NORM_MOMENTUM * unbiased)
    else:
      mean, var = ra_mean.value, ra_var.value
    return ((xf - mean) * jax.lax.rsqrt(var + NORM_EPS)).astype(x.dtype)
