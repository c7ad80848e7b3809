"""Faster CPU formulations of the convolutions of layers.Conv.

XLA:CPU's convolution is slow in a few cases this module works around,
with the same numbers up to float rounding:
- small maps (H*W <= 64) and wide inputs (>= 512 channels, at most 2048
  pixels in the batch): one im2col matmul of the shifted copies of x
  (recomputed, not stored, for the backward pass); 1x1 kernels: a matmul;
- larger maps: XLA's forward and input gradient, the kernel gradient per
  image in bands of rows (conv_kernel_grad);
- forwards that are not differentiated (eval mode): Winograd F(4, 3) for
  float32 3x3 convs to many channels on large maps (winograd.py);
- a nearest-2x upsampling followed by a 3x3 conv: four 2x2 convs of the
  small map (upsample_conv2d);
- spectral norm: the smaller of kernel and output divided by sigma; in eval
  mode W v as one more row of the conv's matmul (conv2d_with_row).
`spectral_conv` and `upsample_spectral_conv` are the formulations injected
into layers.Conv.
"""

import functools
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from oasis_jax.kernels import winograd

# 'cpu': outputs of at most this many pixels per image (or inputs this wide
# with at most _WIDE_INPUT_PIXELS output pixels in the batch) run as one
# im2col matmul; larger outputs get the banded kernel gradient.
_SMALL_MAP_PIXELS = 64
_WIDE_INPUT = 512
_WIDE_INPUT_PIXELS = 2048
_BAND_PIXELS = 4096
# Chunked spectral-norm convs (consecutive forwards) with outputs of at least this many elements
# (16 MiB in float32) normalize the kernel per chunk (see spectral_conv).
_BIG_ARRAY = 2**22
# A forward alone (inference) takes the wide-input matmul only for at most
# this many pixels in the batch or this many output channels (in between,
# XLA's conv was faster; BENCHMARKS.md).
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

  XLA:CPU's weight-gradient convolution slows down once one call's working
  set outgrows the caches; bands of rows keep it in them. The sum of the
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


def _conv_formulation(x_shape: Sequence[int], kernel_shape: Sequence[int],
                      padding: Padding, inference: bool) -> str:
  """Which formulation _conv takes: 'xla', 'matmul' (1x1), 'im2col' or
  'banded' (XLA's forward, the kernel gradient in bands)."""
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
          inference: bool = False) -> jax.Array:
  """Stride-1 NHWC/HWIO convolution with explicit padding; see conv2d."""
  form = _conv_formulation(x.shape, kernel.shape, padding, inference)
  if form == 'matmul':
    c, f = kernel.shape[2:]
    return jnp.matmul(x.reshape(-1, c), kernel.reshape(c, f)).reshape(
        x.shape[:3] + (f,))
  if form == 'im2col':
    return _im2col_conv(x, kernel, padding)
  if form == 'banded':
    return _conv_banded_grad(x, kernel, padding)
  return _xla_conv(x, kernel, padding)


def conv2d(x: jax.Array, kernel: jax.Array, *,
           inference: bool = False) -> jax.Array:
  """layers.conv2d ('same', stride 1, NHWC/HWIO) in the CPU formulations.

  ``inference``: a forward that is not differentiated (eval mode); float32
  3x3 convs to many channels on large maps then run as
  winograd.winograd_conv3x3.
  """
  if _conv2d_formulation(x, kernel, inference) == 'winograd':
    return winograd.winograd_conv3x3(x, kernel)
  return _conv(x, kernel, _same_padding(*kernel.shape[:2]), inference)


def _conv2d_formulation(x: jax.Array, kernel: jax.Array,
                        inference: bool) -> str:
  """Which formulation conv2d takes: 'winograd' or _conv_formulation's."""
  if (inference and kernel.shape[:2] == (3, 3)
      and winograd.uses_winograd(x.shape, kernel.shape[-1], x.dtype)):
    return 'winograd'
  return _conv_formulation(x.shape, kernel.shape,
                           _same_padding(*kernel.shape[:2]), inference)


def conv2d_with_row(x: jax.Array, kernel: jax.Array,
                    row: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(conv2d(x, kernel, inference=True), row @ kernel), the kernel read as
  the [kh*kw*in, out] matrix and row [kh*kw*in] in that order.

  Where the conv is one matmul (small maps, 1x1), the row is one more row
  of it, so a weight-bound conv reads its kernel once for both: eval-mode
  spectral norm's W v.
  """
  kh, kw, c, f = kernel.shape
  form = _conv2d_formulation(x, kernel, inference=True)
  if form == 'im2col':
    y, out = _im2col_conv_forward(x, kernel, _same_padding(kh, kw), row[None])
    return y, out[0]
  if form == 'matmul':
    y = jnp.matmul(jnp.concatenate([x.reshape(-1, c), row[None]]),
                   kernel.reshape(c, f))
    return y[:-1].reshape(x.shape[:3] + (f,)), y[-1]
  return (conv2d(x, kernel, inference=True),
          jnp.matmul(row, kernel.reshape(-1, f), precision='highest'))


def upsample_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
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
    return _upsample2x(conv2d(x, kernel))
  if (kh, kw) != (3, 3):
    return conv2d(_upsample2x(x), kernel)
  # Taps of phase 0 (offsets -1, 0) and phase 1 (offsets 0, +1) per axis.
  rows = ((kernel[0], kernel[1] + kernel[2]), (kernel[0] + kernel[1],
                                                kernel[2]))
  pads = ((1, 0), (0, 1))
  phases = []
  for a in range(2):
    kr = jnp.stack(rows[a])  # [2, 3, C, F]
    cols = ((kr[:, 0], kr[:, 1] + kr[:, 2]), (kr[:, 0] + kr[:, 1], kr[:, 2]))
    phases.append([_conv(x, jnp.stack(cols[b_], axis=1), (pads[a], pads[b_]))
                   for b_ in range(2)])
  b, h, w, _ = x.shape
  y = jnp.stack([jnp.stack(p, axis=3) for p in phases], axis=2)
  return y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])


def _upsample2x(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def v_rows(v: jax.Array, k: int) -> jax.Array:
  """Spectral norm's v from PyTorch's (in, kh, kw) order to the kernel's
  (kh, kw, in) rows (as layers.w_times_v reads it)."""
  return v.reshape(-1, k, k).transpose(1, 2, 0).reshape(-1)


def sigma(kernel: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
  """u . (W v) as layers.sigma computes it; u, v constants for autodiff."""
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  w_v = jnp.matmul(v_rows(v, kernel.shape[0]),
                   kernel.reshape(-1, kernel.shape[-1]), precision='highest')
  return jnp.dot(u, w_v, precision='highest')


def spectral_conv(x: jax.Array, kernel: jax.Array, vectors, *, train: bool,
                  dtype: Any) -> jax.Array:
  """layers.spectral_conv's numbers in the CPU formulations.

  vectors: None, or one (u, v) per equal chunk of the batch (consecutive
  forwards, kernels/fused_forwards.py). Spectral norm divides the smaller of
  kernel and output by sigma; in eval mode, when it divides the output and
  the conv is one float32 matmul, W v is one more row of it
  (conv2d_with_row). Several chunks share one batched conv, each divided by
  its sigma, unless the output is big (_BIG_ARRAY): then each chunk gets its
  own normalized kernel, since dividing the outputs would keep them for
  d/dsigma.
  """
  return _spectral_conv(x, kernel, vectors, train=train, dtype=dtype,
                        upsample=False)


def upsample_spectral_conv(x: jax.Array, kernel: jax.Array, vectors, *,
                           train: bool, dtype: Any) -> jax.Array:
  """layers.upsample_spectral_conv's numbers: spectral_conv of the 2x
  upsampled map, the upsampling folded into the conv (upsample_conv2d)."""
  return _spectral_conv(x, kernel, vectors, train=train, dtype=dtype,
                        upsample=True)


def _spectral_conv(x, kernel, vectors, *, train: bool, dtype: Any,
                   upsample: bool) -> jax.Array:
  conv = (upsample_conv2d if upsample
          else functools.partial(conv2d, inference=not train))
  if vectors is None:
    return conv(x.astype(dtype), kernel.astype(dtype))
  k, in_features, features = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  chunks = len(vectors)
  upsampled = 4 if upsample else 1
  divide_output = (chunks == 1 and math.prod(x.shape[:3]) * upsampled
                   < k * k * in_features)
  if (divide_output and not train and not upsample
      and jnp.dtype(dtype) == jnp.float32):
    u, v = (jax.lax.stop_gradient(a) for a in vectors[0])
    y, w_v = conv2d_with_row(x.astype(dtype), kernel, v_rows(v, k))
    return y / jnp.dot(u, w_v, precision='highest')
  sigmas = jnp.stack([sigma(kernel, u, v) for u, v in vectors])
  if chunks == 1:
    if divide_output:
      return (conv(x.astype(dtype), kernel.astype(dtype))
              / sigmas[0].astype(dtype))
    return conv(x.astype(dtype), (kernel / sigmas[0]).astype(dtype))
  if math.prod(x.shape[:3]) * features * upsampled >= _BIG_ARRAY:
    return jnp.concatenate([
        conv(xc.astype(dtype), (kernel / s).astype(dtype))
        for xc, s in zip(jnp.split(x, chunks), sigmas)])
  y = conv(x.astype(dtype), kernel.astype(dtype))
  y = y.reshape((chunks, -1) + y.shape[1:])
  y = y / sigmas.astype(dtype)[:, None, None, None, None]
  return y.reshape((-1,) + y.shape[2:])
