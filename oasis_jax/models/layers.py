"""Layers shared by the OASIS networks: spectral-norm conv, param-free norms,
floor-indexed nearest resizing, average pooling.

All activations are NHWC. Spectral-norm vectors and normalization running
statistics live in the ``batch_stats`` collection, so one
``mutable=['batch_stats']`` threads every piece of state the official
training-mode forward updates.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SN_EPS = 1e-12  # torch.nn.utils.spectral_norm's eps.
NORM_EPS = 1e-5
NORM_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch.

Dtype = Any

# Arrays of at least this many elements (16 MiB in float32) get the
# memory-saving formulations (per-group SN kernels, LabelConv scans); below
# it the faster one-call forms win and their memory does not matter.
_BIG_ARRAY = 2**22


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


def _v_rows(v: jax.Array, k: int) -> jax.Array:
  """Spectral norm's v from PyTorch's (in, kh, kw) order to the kernel's
  (kh, kw, in) rows."""
  return v.reshape(-1, k, k).transpose(1, 2, 0).reshape(-1)


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
  impl: str = 'auto'  # See conv2d.
  upsample: bool = False  # Convolve upsample2x(x); see upsample_conv2d.
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               params_only: bool = False):
    """The conv of x; with params_only, (kernel, bias or None) instead.

    params_only gives the kernel the forward would use (divided by sigma)
    and leaves the convolving to the caller (SPADE joins gamma and beta).
    """
    k = self.kernel_size
    in_features = x.shape[-1]
    kernel = self.param('kernel', xavier_normal(),
                        (k, k, in_features, self.features), jnp.float32)
    sigmas = None
    divide_output = False
    stored_vectors = None
    dtype = self.dtype or x.dtype
    if self.spectral_norm:
      # Divide the smaller of kernel and output by sigma (a small map's
      # output, not a 1024 x 1024 x 3 x 3 kernel: 14 ms for its 38 MB).
      divide_output = (not params_only and self.groups == 1
                       and math.prod(x.shape[:3]) * (4 if self.upsample else 1)
                       < k * k * in_features)
      if (divide_output and not train and not self.upsample
          and jnp.dtype(dtype) == jnp.float32):
        stored_vectors = self._spectral_vectors(kernel)  # See below.
      else:
        sigmas = self._sigmas(kernel, train)
        if self.groups == 1 and not divide_output:
          kernel = kernel / sigmas[0]
    bias = None
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        jnp.float32)
    if params_only:
      if self.groups != 1:
        raise ValueError('Conv(params_only=True) needs groups=1.')
      return kernel, bias
    if stored_vectors is not None:
      # Eval mode: sigma = u . (W v), W v one more row of the conv's matmul
      # where the conv is one (conv2d_with_row): the kernel is read once.
      u, v = stored_vectors
      y, w_v = conv2d_with_row(x.astype(dtype), kernel, _v_rows(v, k),
                               self.impl)
      y = y / jnp.dot(u, w_v, precision='highest')
      return y if bias is None else y + bias
    if self.upsample:
      conv = upsample_conv2d
    else:
      conv = functools.partial(conv2d, inference=not train)
    if sigmas is None or self.groups == 1:
      y = conv(x.astype(dtype), kernel.astype(dtype), self.impl)
      if divide_output:
        y = y / sigmas[0].astype(dtype)
    elif math.prod(x.shape[:3]) * self.features * (
        4 if self.upsample else 1) >= _BIG_ARRAY:
      # Each chunk with its own normalized kernel: dividing the outputs
      # instead would keep them for the backward pass (d/dsigma).
      y = jnp.concatenate([
          conv(xg.astype(dtype), (kernel / s).astype(dtype), self.impl)
          for xg, s in zip(jnp.split(x, self.groups), sigmas)])
    else:  # Small outputs: one batched conv, each chunk divided by its sigma.
      y = conv(x.astype(dtype), kernel.astype(dtype), self.impl)
      y = y.reshape((self.groups, -1) + y.shape[1:])
      y = y / sigmas.astype(dtype)[:, None, None, None, None]
      y = y.reshape((-1,) + y.shape[2:])
    if bias is not None:
      y = y + bias.astype(dtype)
    return y

  def _spectral_variables(self, kernel: jax.Array):
    k, n_in = self.kernel_size, kernel.shape[2]
    u_var = self.variable('batch_stats', 'u', lambda: _unit_vector(
        self.make_rng('params'), (self.features,)))
    v_var = self.variable('batch_stats', 'v', lambda: _unit_vector(
        self.make_rng('params'), (n_in * k * k,)))
    return u_var, v_var

  def _spectral_vectors(self, kernel: jax.Array):
    """The stored (u, v), constants for autodiff."""
    u_var, v_var = self._spectral_variables(kernel)
    return (jax.lax.stop_gradient(u_var.value),
            jax.lax.stop_gradient(v_var.value))

  def _sigmas(self, kernel: jax.Array, train: bool) -> jax.Array:
    """sigma of each group; advances (u, v) once per group in training."""
    k = self.kernel_size
    n_out, n_in = self.features, kernel.shape[2]
    u_var, v_var = self._spectral_variables(kernel)
    # W is the [out, in*kh*kw] matrix in PyTorch's OIHW order. W v and
    # W^T u are products with the kernel as the [kh*kw*in, out] matrix it
    # already is, the small vector reordered (an einsum, or w_mat as a
    # transposed copy, took 17-35x as long for a 1024 x 1024 x 3 x 3 kernel).
    def w_v(kern, v):
      return jnp.matmul(_v_rows(v, k), kern.reshape(-1, n_out),
                        precision='highest')

    def w_t_u(kern, u):
      wtu = jnp.matmul(kern.reshape(-1, n_out), u, precision='highest')
      return wtu.reshape(k, k, n_in).transpose(2, 0, 1).reshape(-1)

    k_const = jax.lax.stop_gradient(kernel)
    u, v = u_var.value, v_var.value
    iterate = train and not self.is_initializing()
    sigmas = []
    for _ in range(self.groups):
      if iterate:
        v = _normalize(w_t_u(k_const, u))
        u = _normalize(w_v(k_const, v))
      sigmas.append(jnp.dot(jax.lax.stop_gradient(u),
                            w_v(kernel, jax.lax.stop_gradient(v)),
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
  def __call__(self, x: jax.Array, *, train: bool, stats_only: bool = False):
    """The normalized x; with stats_only, (mean, 1 / std) to apply later."""
    xf = x.astype(jnp.float32)
    if self.kind == 'instance':
      mean = xf.mean(axis=(1, 2), keepdims=True)
      var = jnp.square(xf - mean).mean(axis=(1, 2), keepdims=True)
    elif self.kind != 'batch':
      raise ValueError(f"norm must be 'batch' or 'instance', got {self.kind!r}")
    else:
      mean, var = self._batch_stats(xf, train)
    if stats_only:
      return mean, jax.lax.rsqrt(var + NORM_EPS)
    return ((xf - mean) * jax.lax.rsqrt(var + NORM_EPS)).astype(x.dtype)

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


LABEL_CONV_MODES = ('dense', 'gather', 'gather_matmul', 'auto')


def resolve_label_conv_mode(mode: str) -> str:
  """'auto' -> 'gather' on CPU/GPU, 'gather_matmul' on TPU."""
  if mode not in LABEL_CONV_MODES:
    raise ValueError(f'config.perf.label_conv must be one of '
                     f'{LABEL_CONV_MODES}, got {mode!r}.')
  if mode == 'auto':
    return 'gather_matmul' if jax.default_backend() == 'tpu' else 'gather'
  return mode


def _shifted_labels(label: jax.Array, num_classes: int, k: int):
  """The k*k shifted views of the label map; outside pixels get id C."""
  p = k // 2
  h, w = label.shape[1:]
  lp = jnp.pad(label, ((0, 0), (p, p), (p, p)), constant_values=num_classes)
  return [lp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]


def _tap_rows(label: jax.Array, tables_shape, offsets: bool) -> jax.Array:
  """[k*k, B, h, w] rows of each tap's table read at each pixel.

  Outside pixels read the last (zero) row; with offsets, image b's rows
  are those of its own table in the [k*k, n_tables * rows, F] stack.
  """
  n_tables, kk, rows, _ = tables_shape
  ids = jnp.stack(_shifted_labels(label, rows - 1, math.isqrt(kk)))
  if offsets and n_tables > 1:
    ids = ids + (jnp.arange(n_tables, dtype=ids.dtype) * rows)[
        None, :, None, None]
  return ids


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _one_hot_conv(tables: jax.Array, label: jax.Array, init: jax.Array,
                  matmul_grad: bool, sequential: bool):
  """init + conv(one_hot(label), kernel), as a sum of k*k row gathers.

  tables: [1 or B, k*k, C + 1, F], the kernel's rows by tap and class (one
  table, or one per image with its z part added), the last row zero (read
  by pixels outside the map). init: [F] or the [B, h, w, F] output shape,
  of the tables' dtype.

  sequential: add one gather at a time in a scan over the taps (for outputs
  of at least _BIG_ARRAY elements; smaller ones always unroll). Unrolled
  (faster by itself: 25 vs 44 ms at 256x256, batch 2, 128 features), XLA
  hoists the k*k gathers of every SPADE of a training step (they depend on
  the label alone) and keeps them live: 27 x 64 MiB at the generator's last
  block for 256x256, batch 2.
  """
  del matmul_grad
  n_tables, kk, rows, f = tables.shape
  flat = jnp.swapaxes(tables, 0, 1).reshape(kk, n_tables * rows, f)
  ids = _tap_rows(label, tables.shape, offsets=True)
  if not sequential or label.size * f < _BIG_ARRAY:
    return init + sum(flat[t][ids[t]] for t in range(kk))

  def tap(acc, tap_table_ids):
    tap_table, tap_ids = tap_table_ids
    return acc + tap_table[tap_ids], None

  out, _ = jax.lax.scan(tap, jnp.broadcast_to(init, label.shape + (f,)),
                        (flat, ids))
  return out


def _one_hot_conv_fwd(tables, label, init, matmul_grad, sequential):
  return (_one_hot_conv(tables, label, init, matmul_grad, sequential),
          (tables.shape, label, init.shape))


def _one_hot_conv_bwd(matmul_grad, sequential, res, g):
  del sequential
  # d table[tap, c] = sum of g over the pixels q whose tap reads class c,
  # i.e. with label[q + offset(tap)] == c: one reduction of the unshifted g
  # per tap, by the shifted label map (per image with per-image tables). A
  # scan over the taps keeps one [rows, F] partial live; materializing the
  # k*k shifted copies of g instead took 14x the time and 1.1 GiB at
  # 256x256.
  tables_shape, label, init_shape = res
  n_tables, kk, rows, f = tables_shape
  dtype = g.dtype  # That of tables and init.
  g_init = g if g.shape == init_shape else g.sum(axis=(0, 1, 2))
  b = label.shape[0]
  g = g.astype(jnp.float32).reshape(b, -1, f)
  ids = _tap_rows(label, tables_shape, offsets=not matmul_grad)

  def tap(_, tap_ids):
    if matmul_grad:  # Dense one-hot matmuls: MXU-friendly (TPU).
      one_hot = jax.nn.one_hot(tap_ids.reshape(b, -1), rows, dtype=g.dtype)
      part = jnp.einsum('bpr,bpf->brf', one_hot, g, precision='highest')
      return None, part.sum(0, keepdims=True) if n_tables == 1 else part
    part = jax.ops.segment_sum(g.reshape(-1, f), tap_ids.reshape(-1),
                               num_segments=n_tables * rows)
    return None, part.reshape(n_tables, rows, f)

  _, d_tables = jax.lax.scan(tap, None, ids)  # [k*k, n_tables, rows, F]
  return jnp.swapaxes(d_tables, 0, 1).astype(dtype), None, g_init


_one_hot_conv.defvjp(_one_hot_conv_fwd, _one_hot_conv_bwd)


class LabelConv(nn.Module):
  """'same' conv of the conditioning map [z | one_hot(label)], with bias.

  The kernel is that of a Conv over z_dim + num_classes input channels
  (channel order [z, one-hot], as officially), so weights convert as for a
  plain conv. 'dense' materializes the one-hot map and convolves it (the
  reference); 'gather' / 'gather_matmul' read kernel rows by class id
  instead (k*k gathers rather than a num_classes-channel conv), and handle
  a per-image z analytically; their backward passes scatter-add or use a
  one-hot matmul. Results agree to float rounding.
  """
  features: int
  num_classes: int
  z_dim: int = 0
  kernel_size: int = 3
  mode: str = 'auto'
  sequential: bool = True  # Gathers in a scan (training); see _one_hot_conv.
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, label: jax.Array, z: Optional[jax.Array], *,
               tables_only: bool = False):
    """label: [B, h, w] ids; z: None, [B, z_dim] or [B, h, w, z_dim].

    With tables_only (gather modes, z None or per image), the (tables,
    bias) of _one_hot_conv instead of the output: see label_conv_rows.
    """
    k, c, f = self.kernel_size, self.num_classes, self.features
    kernel = self.param('kernel', xavier_normal(),
                        (k, k, self.z_dim + c, f), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (f,), jnp.float32)
    dtype = self.dtype or jnp.float32
    b, h, w = label.shape
    mode = resolve_label_conv_mode(self.mode)
    if mode == 'dense' and tables_only:
      raise ValueError("LabelConv(tables_only=True) needs mode 'gather' or "
                       "'gather_matmul'.")
    if mode == 'dense':
      seg = jax.nn.one_hot(label, c, dtype=dtype)
      if self.z_dim:
        if z.ndim == 2:
          z = jnp.broadcast_to(z[:, None, None, :], (b, h, w, self.z_dim))
        seg = jnp.concatenate([z.astype(dtype), seg], axis=-1)
      return conv2d(seg, kernel.astype(dtype), 'xla') + bias.astype(dtype)
    # A per-image z adds z . W_tap to every class row of tap's table (one
    # table per image; outside pixels read the zero row, as the zero
    # padding of a conv would); a per-pixel z is a conv of its own.
    tables = kernel[:, :, self.z_dim:].reshape(1, k * k, c, f)
    init = bias
    if self.z_dim:
      kz = kernel[:, :, :self.z_dim].reshape(k * k, self.z_dim, f)
      if z.ndim == 2 and not tables_only and h * w < k * k * (c + 1):
        # A map smaller than a table: z per pixel costs less than a table
        # per image (the generator's fc at 4x4: 11 MB of tables, 5 ms).
        z = jnp.broadcast_to(z[:, None, None, :], (b, h, w, self.z_dim))
      if z.ndim == 2:
        tables = tables + jnp.einsum('bz,tzf->btf', z.astype(jnp.float32), kz,
                                     precision='highest')[:, :, None]
      else:
        init = bias + conv2d(z.astype(dtype), kz.reshape(
            k, k, self.z_dim, f).astype(dtype), 'xla')
    tables = jnp.concatenate(
        [tables, jnp.zeros(tables.shape[:2] + (1, f), tables.dtype)], axis=2)
    if tables_only:
      if init is not bias:
        raise ValueError('LabelConv(tables_only=True) needs z None or '
                         '[B, z_dim].')
      return tables.astype(dtype), bias.astype(dtype)
    return _one_hot_conv(tables.astype(dtype), label, init.astype(dtype),
                         mode == 'gather_matmul', self.sequential)


CONV_IMPLS = ('auto', 'xla', 'cpu')

# 'cpu': outputs of at most this many pixels per image (or inputs this wide
# with at most _WIDE_INPUT_PIXELS output pixels in the batch) run as one
# im2col matmul; larger outputs get the banded kernel gradient.
_SMALL_MAP_PIXELS = 64
_WIDE_INPUT = 512
_WIDE_INPUT_PIXELS = 2048
_BAND_PIXELS = 4096
# A forward alone (inference) takes the wide-input matmul only for at most
# this many pixels in the batch or this many output channels: [2, 16, 16,
# 1024] -> 512 took 25 ms in XLA's conv, 38 ms as the matmul; -> 1024, 67 vs
# 60 ms; [1, 16, 16, 1024] -> 512, 14.4 vs 13.4 ms.
_WIDE_INPUT_FWD_PIXELS = 256
_WIDE_INPUT_FWD_FEATURES = 1024

Padding = tuple[tuple[int, int], tuple[int, int]]


def _same_padding(kh: int, kw: int) -> Padding:
  return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _xla_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int],
                     padding: Optional[Padding] = None,
                     band_pixels: int = _BAND_PIXELS) -> jax.Array:
  """dL/dkernel of a stride-1 conv of x, given g = dL/dy, in bands of rows.

  XLA:CPU's weight-gradient convolution slows down 2-3x once one call's
  working set outgrows the caches (measured: [2, 256, 256, 128] -> 64 took
  420 ms as one call, 190 ms as 32 bands of 16 rows). The sum of the
  per-image, per-band gradients is the same gradient up to float rounding.
  padding defaults to 'same'.
  """
  kh, kw = kernel_hw
  (pt, pb), (pl, pr) = padding or _same_padding(kh, kw)
  b, h, w, c = g.shape[:3] + x.shape[-1:]
  rows = max(1, min(h, band_pixels // w))
  xp = jnp.pad(x, ((0, 0), (pt, pb), (0, 0), (0, 0)))
  zero = jnp.zeros((kh, kw, c, g.shape[-1]), x.dtype)
  total = None
  for n in range(b):
    for r0 in range(0, h, rows):
      r1 = min(h, r0 + rows)
      x_band = xp[n:n + 1, r0:r1 + kh - 1]
      _, vjp = jax.vjp(lambda kk, xb=x_band: _xla_conv(
          xb, kk, ((0, 0), (pl, pr))), zero)
      part = vjp(g[n:n + 1, r0:r1])[0]
      total = part if total is None else total + part
  return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_banded_grad(x: jax.Array, kernel: jax.Array,
                      padding: Padding) -> jax.Array:
  return _xla_conv(x, kernel, padding)


def _conv_banded_grad_fwd(x, kernel, padding):
  return _xla_conv(x, kernel, padding), (x, kernel)


def _conv_banded_grad_bwd(padding, res, g):
  x, kernel = res
  _, vjp_x = jax.vjp(lambda xx: _xla_conv(xx, kernel, padding), x)
  return vjp_x(g)[0], conv_kernel_grad(x, g, kernel.shape[:2], padding)


_conv_banded_grad.defvjp(_conv_banded_grad_fwd, _conv_banded_grad_bwd)


def _im2col_conv_forward(x: jax.Array, kernel: jax.Array, padding: Padding,
                         extra_rows: Optional[jax.Array] = None):
  """The conv as one matmul; with extra_rows [n, kh*kw*C] (in the columns'
  (kh, kw, C) order) also their products with the kernel: (y, [n, F])."""
  kh, kw, c, f = kernel.shape
  xp = jnp.pad(x, ((0, 0),) + padding + ((0, 0),))
  b, hp, wp, _ = xp.shape
  h, w = hp - kh + 1, wp - kw + 1
  cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh)
                          for j in range(kw)], axis=-1)
  cols = cols.reshape(b * h * w, kh * kw * c)
  if extra_rows is not None:
    cols = jnp.concatenate([cols, extra_rows.astype(cols.dtype)])
  y = jnp.matmul(cols, kernel.reshape(kh * kw * c, f))
  if extra_rows is None:
    return y.reshape(b, h, w, f)
  return y[:b * h * w].reshape(b, h, w, f), y[b * h * w:]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _im2col_conv(x: jax.Array, kernel: jax.Array,
                 padding: Padding) -> jax.Array:
  """One matmul of the kh*kw shifted copies of x (the copies: 9x x).

  The backward pass keeps x and makes the copies again, behind an
  optimization barrier: without it XLA merges them with the forward's
  (as it did under jax.checkpoint) and keeps those alive in between.
  """
  return _im2col_conv_forward(x, kernel, padding)


def _im2col_conv_fwd(x, kernel, padding):
  return _im2col_conv_forward(x, kernel, padding), (x, kernel)


def _im2col_conv_bwd(padding, res, g):
  x, kernel = jax.lax.optimization_barrier(res)
  _, vjp = jax.vjp(lambda xx, kk: _im2col_conv_forward(xx, kk, padding),
                   x, kernel)
  return vjp(g)


_im2col_conv.defvjp(_im2col_conv_fwd, _im2col_conv_bwd)


# Winograd F(4, 3) along the width (Lavin & Gray, "Fast Algorithms for
# Convolutional Neural Networks", 2016), interpolation points 0, +-1, +-2,
# inf: 4 outputs of a 3-tap correlation from 6 products of transformed
# inputs (B^T d) and taps (G g), y = A^T [(G g) * (B^T d)].
_WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0],
                         [0, -4, -4, 1, 1, 0],
                         [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0],
                         [0, 2, -1, -2, 1, 0],
                         [0, 4, 0, -5, 0, 1]], np.float32)
_WINOGRAD_G = np.array([[1 / 4, 0, 0],
                        [-1 / 6, -1 / 6, -1 / 6],
                        [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6],
                        [1 / 24, -1 / 12, 1 / 6],
                        [0, 0, 1]], np.float32)
_WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0],
                         [0, 1, -1, 2, -2, 0],
                         [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]], np.float32)
_WINOGRAD_TILE = 4
# Where the Winograd forward beats XLA:CPU's conv (measured): maps of at
# least this many pixels and at least this many output channels.
_WINOGRAD_MIN_PIXELS = 1024
_WINOGRAD_MIN_FEATURES = 128
_WINOGRAD_BAND_ROWS = 8


def _combine(matrix: np.ndarray, parts: Sequence[jax.Array]) -> list[jax.Array]:
  """[sum_j matrix[i, j] * parts[j] for each row i], skipping zero terms."""
  out = []
  for row in matrix:
    terms = [p if c == 1 else -p if c == -1 else p * c
             for c, p in zip(row.tolist(), parts) if c != 0]
    out.append(functools.reduce(jnp.add, terms))
  return out


class BandSource(NamedTuple):
  """An input of winograd_conv3x3 made band by band instead of stored.

  reader(padded_h, padded_w) returns read(image, row, n_rows): rows
  [row, row + n_rows) of image ``image`` of the [B, H, W, C] map ``shape``
  zero-padded to [padded_h, padded_w] with one row and column of zeros
  before it.
  """
  shape: tuple[int, int, int, int]
  reader: Callable[[int, int], Callable[..., jax.Array]]


def label_conv_rows(tables: jax.Array, bias: jax.Array, label: jax.Array,
                    activation: Callable[[jax.Array], jax.Array]
                    ) -> BandSource:
  """activation(LabelConv(label)) as a BandSource: gathered per band.

  tables, bias: from LabelConv(tables_only=True). Fed this way to SPADE's
  gamma / beta Winograd conv, the [B, H, W, hidden] map never reaches
  memory.
  """
  n_tables, kk, n_ids, f = tables.shape
  k = math.isqrt(kk)
  p = k // 2
  b, h, w = label.shape
  flat = jnp.swapaxes(tables, 0, 1).reshape(kk, n_tables * n_ids, f)

  def reader(padded_h, padded_w):
    # Ids of the padded map's rows and columns widened by p on each side;
    # outside pixels read the zero row.
    ids = jnp.pad(label, ((0, 0), (1 + p, padded_h + p - 1 - h),
                          (1 + p, padded_w + p - 1 - w)),
                  constant_values=n_ids - 1)

    def read(image, row, n_rows):
      band = jax.lax.dynamic_slice(ids, (image, row, 0),
                                   (1, n_rows + 2 * p, padded_w + 2 * p))[0]
      if n_tables > 1:
        band = band + image * n_ids
      out = activation(bias + sum(
          flat[i * k + j][band[i:i + n_rows, j:j + padded_w]]
          for i in range(k) for j in range(k)))
      rows = row - 1 + jnp.arange(n_rows)
      cols = jnp.arange(padded_w) - 1
      inside = (((rows >= 0) & (rows < h))[:, None]
                & ((cols >= 0) & (cols < w))[None, :])
      return jnp.where(inside[..., None], out, 0)

    return read

  return BandSource((b, h, w, f), reader)


def winograd_conv3x3(x: Union[jax.Array, BandSource], kernel: jax.Array,
                     band_rows: int = _WINOGRAD_BAND_ROWS,
                     epilogue: Optional[Callable[..., jax.Array]] = None,
                     operands: Sequence[jax.Array] = ()) -> jax.Array:
  """'same' stride-1 3x3 NHWC/HWIO convolution by 1D Winograd F(4, 3).

  Along the width, each run of 4 outputs takes 6 multiplies per row tap
  instead of 12: for each kernel row, the 6 transformed input tiles
  (B^T d) are matmuls with the transformed taps (G g), the three kernel
  rows joined along the channels (K = 3 C), and A^T folds the 6 products
  into 4 outputs. Half the FLOPs of the direct conv; the transforms cost
  memory traffic, so it runs in bands of ``band_rows`` rows that stay in
  the cache (a lax.map). On this project's 2-core CPU it beats XLA's conv
  by 1.3-1.8x for >= 128 output channels on maps of >= 32x32. Same
  numbers up to float rounding (relative error ~3e-6 in float32); meant
  for float32 forwards (inference): differentiable, but its backward pass
  would keep the transformed tiles.

  x may be a BandSource that makes each input band when it is needed
  (SPADE's shared activations, see label_conv_rows). ``epilogue(y,
  *operand_bands)``, if given, maps each band of the output ([rows, W', F],
  W' = W rounded up to a multiple of 4) with the same band of each of
  ``operands`` ([B, H, W, *] arrays) to the band of the result, while it
  is still in the cache (SPADE normalizes and modulates there: its gamma
  and beta never reach memory).
  """
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f'winograd_conv3x3 needs a 3x3 kernel, got '
                     f'{kernel.shape[:2]}.')
  m, n = _WINOGRAD_TILE, _WINOGRAD_TILE + 2
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  tiles = -(-w // m)
  rows = max(1, min(band_rows, h))
  bands = -(-h // rows)
  # Zero 'same' padding plus whatever completes the last tile and band.
  padded_hw = (bands * rows + 2, m * tiles + 2)
  if isinstance(x, BandSource):
    read = x.reader(*padded_hw)
  else:
    xp = jnp.pad(x, ((0, 0), (1, padded_hw[0] - 1 - h),
                     (1, padded_hw[1] - 1 - w), (0, 0)))
    read = lambda image, row, n_rows: jax.lax.dynamic_slice(
        xp, (image, row, 0, 0), (1, n_rows) + xp.shape[2:])[0]
  # Transformed taps: [6, 3 * C, F], rows of the kernel joined along C.
  u = jnp.einsum('tj,ijcf->ticf', _WINOGRAD_G.astype(kernel.dtype), kernel,
                 precision='highest')
  u = u.reshape(n, 3 * c, f)
  operands = [jnp.pad(o, ((0, 0), (0, bands * rows - h), (0, m * tiles - w),
                          (0, 0))) for o in operands]

  def band(index):  # Band index % bands of image index // bands.
    image, row = index // bands, (index % bands) * rows
    xb = read(image, row, rows + 2)
    taps = [jax.lax.slice_in_dim(xb, j, j + m * (tiles - 1) + 1, stride=m,
                                 axis=1) for j in range(n)]
    v = jnp.stack(_combine(_WINOGRAD_BT, taps))  # [6, rows + 2, T, C]
    v = jnp.concatenate([v[:, r:r + rows] for r in range(3)], axis=-1)
    prod = jnp.matmul(v.reshape(n, rows * tiles, 3 * c), u)
    y = jnp.stack(_combine(_WINOGRAD_AT, list(prod)), axis=1)
    y = y.reshape(rows, m * tiles, f)
    if epilogue is None:
      return y
    return epilogue(y, *[jax.lax.dynamic_slice(
        o, (image, row, 0, 0), (1, rows) + o.shape[2:])[0] for o in operands])

  y = jax.lax.map(band, jnp.arange(b * bands))  # [B * bands, rows, W', F']
  y = y.reshape((b, bands * rows, m * tiles) + y.shape[3:])
  return y[:, :h, :w]


def uses_winograd(x_shape: Sequence[int], features: int, dtype,
                  impl: str) -> bool:
  """Whether conv2d(..., inference=True) takes winograd_conv3x3."""
  _, h, w, _ = x_shape
  return (_resolve_conv_impl(impl) == 'cpu'
          and jnp.dtype(dtype) == jnp.float32
          and h * w >= _WINOGRAD_MIN_PIXELS
          and features >= _WINOGRAD_MIN_FEATURES)


def _resolve_conv_impl(impl: str) -> str:
  if impl not in CONV_IMPLS:
    raise ValueError(f'config.perf.conv_impl must be one of {CONV_IMPLS}, '
                     f'got {impl!r}.')
  if impl == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def _conv_formulation(x_shape: Sequence[int], kernel_shape: Sequence[int],
                      padding: Padding, impl: str, inference: bool) -> str:
  """Which formulation _conv takes: 'xla', 'matmul' (1x1), 'im2col' or
  'banded' (XLA's forward, the kernel gradient in bands)."""
  if _resolve_conv_impl(impl) == 'xla':
    return 'xla'
  kh, kw, c, f = kernel_shape
  b, h, w, _ = x_shape
  if (kh, kw) == (1, 1) and padding == ((0, 0), (0, 0)):
    return 'matmul'
  ho = h + sum(padding[0]) - kh + 1
  wo = w + sum(padding[1]) - kw + 1
  wide = c >= _WIDE_INPUT and b * ho * wo <= _WIDE_INPUT_PIXELS
  if wide and inference:  # Forward alone: XLA's conv wins in between.
    wide = (b * ho * wo <= _WIDE_INPUT_FWD_PIXELS
            or f >= _WIDE_INPUT_FWD_FEATURES)
  if ho * wo <= _SMALL_MAP_PIXELS or wide:
    return 'im2col'
  if b * ho * wo > _BAND_PIXELS:
    return 'banded'
  return 'xla'


def _conv(x: jax.Array, kernel: jax.Array, padding: Padding,
          impl: str, inference: bool = False) -> jax.Array:
  """Stride-1 NHWC/HWIO convolution with explicit padding; see conv2d."""
  form = _conv_formulation(x.shape, kernel.shape, padding, impl, inference)
  if form == 'matmul':
    kh, kw, c, f = kernel.shape
    return jnp.matmul(x.reshape(-1, c), kernel.reshape(c, f)).reshape(
        x.shape[:3] + (f,))
  if form == 'im2col':
    return _im2col_conv(x, kernel, padding)
  if form == 'banded':
    return _conv_banded_grad(x, kernel, padding)
  return _xla_conv(x, kernel, padding)


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = 'auto', *,
           inference: bool = False) -> jax.Array:
  """'same' stride-1 NHWC/HWIO convolution.

  impl 'xla' is lax.conv_general_dilated. 'cpu' works around XLA:CPU's slow
  cases: small maps (H*W <= 64) and wide inputs (>= 512 channels, at most
  2048 pixels in the batch) run as one im2col matmul of the shifted copies
  of x (up to 60x faster than XLA's conv for 2x2 maps with 512 channels;
  recomputed, not stored, for the backward pass), 1x1 kernels as a matmul,
  and larger maps keep XLA's forward and input gradient but compute the
  kernel gradient per image in bands of rows (see conv_kernel_grad). 'auto'
  is 'cpu' on CPU and 'xla' elsewhere. Same numbers up to float rounding.

  ``inference`` (a forward that is not differentiated, e.g. eval mode):
  with 'cpu', float32 3x3 convs with >= 128 output channels on maps of
  >= 32x32 pixels run as winograd_conv3x3 (half the FLOPs).
  """
  if _conv2d_formulation(x, kernel, impl, inference) == 'winograd':
    return winograd_conv3x3(x, kernel)
  return _conv(x, kernel, _same_padding(*kernel.shape[:2]), impl, inference)


def _conv2d_formulation(x: jax.Array, kernel: jax.Array, impl: str,
                        inference: bool) -> str:
  """Which formulation conv2d takes: 'winograd' or _conv_formulation's."""
  if (inference and kernel.shape[:2] == (3, 3)
      and uses_winograd(x.shape, kernel.shape[-1], x.dtype, impl)):
    return 'winograd'
  return _conv_formulation(x.shape, kernel.shape,
                           _same_padding(*kernel.shape[:2]), impl, inference)


def conv2d_with_row(x: jax.Array, kernel: jax.Array, row: jax.Array,
                    impl: str = 'auto') -> tuple[jax.Array, jax.Array]:
  """(conv2d(x, kernel, impl, inference=True), row @ kernel), the kernel
  read as the [kh*kw*in, out] matrix and row [kh*kw*in] in that order.

  Where the conv is one matmul (small maps, 1x1), the row is one more row
  of it, so a weight-bound conv reads its kernel once for both: eval-mode
  spectral norm's W v (38 MB kernels at 4x4 and 8x8 in the generator).
  """
  kh, kw, c, f = kernel.shape
  form = _conv2d_formulation(x, kernel, impl, inference=True)
  if form == 'im2col':
    y, out = _im2col_conv_forward(x, kernel, _same_padding(kh, kw), row[None])
    return y, out[0]
  if form == 'matmul':
    y = jnp.matmul(jnp.concatenate([x.reshape(-1, c), row[None]]),
                   kernel.reshape(c, f))
    return y[:-1].reshape(x.shape[:3] + (f,)), y[-1]
  return (conv2d(x, kernel, impl, inference=True),
          jnp.matmul(row, kernel.reshape(-1, f), precision='highest'))


def upsample_conv2d(x: jax.Array, kernel: jax.Array,
                    impl: str = 'auto') -> jax.Array:
  """conv2d(upsample2x(x), kernel) without making the upsampled map.

  Output pixel (2i + a, 2j + b) of a 'same' 3x3 conv of the nearest-2x
  upsampled map reads input rows i-1, i, i (a = 0) or i, i, i+1 (a = 1),
  and likewise columns: so each of the four output phases is a 2x2 conv of
  x with summed kernel taps, 16 instead of 36 multiply-adds per input pixel
  and no 4x larger input to store for the backward pass. A 1x1 conv
  commutes with the upsampling. Same numbers up to float rounding.
  """
  kh, kw = kernel.shape[:2]
  if (kh, kw) == (1, 1):
    return upsample2x(conv2d(x, kernel, impl))
  if (kh, kw) != (3, 3):
    return conv2d(upsample2x(x), kernel, impl)
  # Taps of phase 0 (offsets -1, 0) and phase 1 (offsets 0, +1) per axis.
  rows = ((kernel[0], kernel[1] + kernel[2]), (kernel[0] + kernel[1],
                                                kernel[2]))
  pads = ((1, 0), (0, 1))
  phases = []
  for a in range(2):
    kr = jnp.stack(rows[a])  # [2, 3, C, F]
    cols = ((kr[:, 0], kr[:, 1] + kr[:, 2]), (kr[:, 0] + kr[:, 1], kr[:, 2]))
    phases.append([_conv(x, jnp.stack(cols[b_], axis=1), (pads[a], pads[b_]),
                         impl) for b_ in range(2)])
  b, h, w, _ = x.shape
  y = jnp.stack([jnp.stack(p, axis=3) for p in phases], axis=2)
  return y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])
