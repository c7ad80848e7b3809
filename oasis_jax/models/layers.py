"""The OASIS layers: spectral-norm conv, the conv of the label map,
parameter-free normalization, nearest resizing and average pooling.

All activations are NHWC, kernels HWIO. Spectral-norm vectors and the
running statistics of batch norm live in the ``batch_stats`` collection, so
one ``mutable=['batch_stats']`` threads every piece of state the official
training-mode forward updates.

How a convolution is computed is injected (``formulation``): the functions
here are the reference (XLA's convolution); ``oasis_jax/kernels/`` holds
faster formulations of the same numbers.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SN_EPS = 1e-12  # torch.nn.utils.spectral_norm's eps.
NORM_EPS = 1e-5
NORM_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch.

Dtype = Any
# (u, v) of spectral norm, one pair per consecutive forward (see Conv).
Vectors = Optional[Sequence[tuple[jax.Array, jax.Array]]]


def xavier_normal(gain: float = 0.02):
  """Xavier-normal init with a gain, for HWIO kernels (official init)."""
  return nn.initializers.variance_scaling(gain**2, 'fan_avg', 'normal')


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


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'same' stride-1 convolution: x [B, H, W, C], kernel [kh, kw, C, F]."""
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x), SN_EPS)


def _unit_vector(key, shape):
  return _normalize(jax.random.normal(key, shape, jnp.float32))


def _v_rows(v: jax.Array, k: int) -> jax.Array:
  """v from PyTorch's (in, kh, kw) order to the kernel's (kh, kw, in)."""
  return v.reshape(-1, k, k).transpose(1, 2, 0).reshape(-1)


def w_times_v(kernel: jax.Array, v: jax.Array) -> jax.Array:
  """W v, W the [out, in*kh*kw] matrix of the kernel in PyTorch's order.

  The kernel [kh, kw, in, out] already is W^T with its rows in (kh, kw, in)
  order, so v is reordered to match instead of the kernel being copied.
  """
  k, n_out = kernel.shape[0], kernel.shape[-1]
  return jnp.matmul(_v_rows(v, k), kernel.reshape(-1, n_out),
                    precision='highest')


def w_transpose_times_u(kernel: jax.Array, u: jax.Array) -> jax.Array:
  """W^T u in PyTorch's (in, kh, kw) order; see w_times_v."""
  k, n_in, n_out = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  wtu = jnp.matmul(kernel.reshape(-1, n_out), u, precision='highest')
  return wtu.reshape(k, k, n_in).transpose(2, 0, 1).reshape(-1)


def sigma(kernel: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
  """The spectral-norm estimate u . (W v); u, v constants for autodiff."""
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  return jnp.dot(u, w_times_v(kernel, v), precision='highest')


def spectral_conv(x: jax.Array, kernel: jax.Array, vectors: Vectors, *,
                  train: bool, dtype: Dtype) -> jax.Array:
  """conv2d(x, kernel / sigma), the reference formulation of Conv.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, F] float32, the raw parameter.
    vectors: None (no spectral norm) or [(u, v)], this forward's vectors.
    train: whether the forward is differentiated (formulations may differ;
      this one does not).
    dtype: the compute dtype.

  Returns:
    [B, H, W, F] in dtype, without the bias.
  """
  del train
  x = x.astype(dtype)
  if vectors is None:
    return conv2d(x, kernel.astype(dtype))
  (u, v), = vectors
  return conv2d(x, (kernel / sigma(kernel, u, v)).astype(dtype))


def upsample_spectral_conv(x: jax.Array, kernel: jax.Array, vectors: Vectors,
                           *, train: bool, dtype: Dtype) -> jax.Array:
  """Nearest 2x upsampling, then the conv: [B, H, W, C] -> [B, 2H, 2W, F].

  The reference formulation of a Conv that reads the upsampled map (the D
  decoder's); a kernel may compute both steps as one.
  """
  return spectral_conv(upsample2x(x), kernel, vectors, train=train,
                       dtype=dtype)


class Conv(nn.Module):
  """Conv2d (stride 1, 'same' zero padding), optionally spectral-normalized.

  With ``spectral_norm`` (torch.nn.utils.spectral_norm), the raw kernel is
  the parameter (``weight_orig`` of PyTorch) and ``u`` [out], ``v``
  [in*kh*kw] (in PyTorch's OIHW flattening order) are state in
  ``batch_stats``. A training-mode forward runs one power iteration first
  (v = W^T u / |.|, u = W v / |.|) and stores the vectors; eval mode uses
  the stored ones. The kernel used is W / sigma, sigma = u . (W v).
  ``formulation`` computes it (see spectral_conv).
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  spectral_norm: bool = False
  formulation: Callable[..., jax.Array] = spectral_conv
  dtype: Optional[Dtype] = None

  @nn.compact
  def weights(self, in_features: int, *, train: bool):
    """(kernel [k, k, in, out], bias [out] or None, [(u, v)] or None)."""
    k = self.kernel_size
    kernel = self.param('kernel', xavier_normal(),
                        (k, k, in_features, self.features), jnp.float32)
    vectors = None
    if self.spectral_norm:
      vectors = self.power_iterations(kernel, train)
    bias = None
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        jnp.float32)
    return kernel, bias, vectors

  def power_iterations(self, kernel: jax.Array, train: bool,
                       count: int = 1):
    """The (u, v) of ``count`` consecutive forwards: in training each
    advances the stored pair by one power iteration (the last is kept)."""
    k, n_in = self.kernel_size, kernel.shape[2]
    u_var = self.variable('batch_stats', 'u', lambda: _unit_vector(
        self.make_rng('params'), (self.features,)))
    v_var = self.variable('batch_stats', 'v', lambda: _unit_vector(
        self.make_rng('params'), (n_in * k * k,)))
    w = jax.lax.stop_gradient(kernel)
    u, v = u_var.value, v_var.value
    iterate = train and not self.is_initializing()
    vectors = []
    for _ in range(count):
      if iterate:
        v = _normalize(w_transpose_times_u(w, u))
        u = _normalize(w_times_v(w, v))
      vectors.append((u, v))
    if iterate:
      u_var.value, v_var.value = u, v
    return vectors

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x: [B, H, W, in] -> [B, H', W', features] (the formulation's size)."""
    kernel, bias, vectors = self.weights(x.shape[-1], train=train)
    dtype = self.dtype or x.dtype
    y = self.formulation(x, kernel, vectors, train=train, dtype=dtype)
    return y if bias is None else y + bias.astype(dtype)


def dense_label_conv(kernel: jax.Array, bias: jax.Array, label: jax.Array,
                     z: Optional[jax.Array], *, train: bool,
                     dtype: Dtype) -> jax.Array:
  """conv2d([z | one_hot(label)], kernel) + bias, the reference.

  Args:
    kernel: [k, k, z_dim + num_classes, F].
    bias: [F].
    label: [B, H, W] integer class ids.
    z: None, [B, z_dim] (the same at every pixel) or [B, H, W, z_dim].
    train: whether the forward is differentiated (unused here).
    dtype: the compute dtype.

  Returns:
    [B, H, W, F] in dtype.
  """
  del train
  b, h, w = label.shape
  z_dim = 0 if z is None else z.shape[-1]
  seg = jax.nn.one_hot(label, kernel.shape[2] - z_dim, dtype=dtype)
  if z is not None:
    if z.ndim == 2:
      z = jnp.broadcast_to(z[:, None, None, :], (b, h, w, z_dim))
    seg = jnp.concatenate([z.astype(dtype), seg], axis=-1)
  return conv2d(seg, kernel.astype(dtype)) + bias.astype(dtype)


class LabelConv(nn.Module):
  """The conv (with bias) of the conditioning map [z | one_hot(label)].

  The kernel is that of a Conv over z_dim + num_classes input channels,
  channel order [z, one-hot] as officially; ``formulation`` computes it
  (see dense_label_conv).
  """
  features: int
  num_classes: int
  z_dim: int = 0
  kernel_size: int = 3
  formulation: Callable[..., jax.Array] = dense_label_conv
  dtype: Optional[Dtype] = None

  @nn.compact
  def weights(self):
    """(kernel [k, k, z_dim + num_classes, F], bias [F])."""
    k = self.kernel_size
    kernel = self.param('kernel', xavier_normal(),
                        (k, k, self.z_dim + self.num_classes, self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    return kernel, bias

  def __call__(self, label: jax.Array, z: Optional[jax.Array], *,
               train: bool) -> jax.Array:
    """label: [B, H, W] ids; z: None, [B, z_dim] or [B, H, W, z_dim]."""
    kernel, bias = self.weights()
    return self.formulation(kernel, bias, label, z if self.z_dim else None,
                            train=train, dtype=self.dtype or jnp.float32)


class ParamFreeNorm(nn.Module):
  """Normalization without scale or bias: 'batch' or 'instance'.

  'batch' normalizes with the batch mean and biased variance over (B, H, W)
  in training (under ``jit`` with a batch-sharded input the reduction covers
  the global batch) and keeps PyTorch-style running statistics (momentum
  0.1, unbiased variance) in ``batch_stats`` for eval mode. 'instance'
  normalizes each image and channel over (H, W) and has no state.
  """
  kind: str = 'batch'

  @nn.compact
  def statistics(self, x: jax.Array, *, train: bool):
    """(mean, 1 / std): [C] for 'batch', [B, 1, 1, C] for 'instance'."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if self.kind == 'instance':
      mean = xf.mean(axis=(1, 2), keepdims=True)
      var = jnp.square(xf - mean).mean(axis=(1, 2), keepdims=True)
    elif self.kind == 'batch':
      mean, var = self._batch_stats(xf, train)
    else:
      raise ValueError(f"norm must be 'batch' or 'instance', got {self.kind!r}")
    return mean, jax.lax.rsqrt(var + NORM_EPS)

  def _batch_stats(self, xf: jax.Array, train: bool):
    c = xf.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    if not train:
      return ra_mean.value, ra_var.value
    mean = xf.mean(axis=(0, 1, 2))
    var = jnp.square(xf - mean).mean(axis=(0, 1, 2))
    if not self.is_initializing():
      n = xf.shape[0] * xf.shape[1] * xf.shape[2]
      unbiased = var * (n / max(n - 1, 1))
      ra_mean.value = ((1 - NORM_MOMENTUM) * ra_mean.value
                       + NORM_MOMENTUM * mean)
      ra_var.value = ((1 - NORM_MOMENTUM) * ra_var.value
                      + NORM_MOMENTUM * unbiased)
    return mean, var

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """(x - mean) / std, in x's dtype."""
    mean, rstd = self.statistics(x, train=train)
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return ((xf - mean) * rstd).astype(x.dtype)
