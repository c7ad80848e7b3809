"""MS-SSIM, and the mean over pairs of images as a diversity score.

Diversity: mean pairwise MS-SSIM between images generated from one label map
with different noise (lower is more diverse).

Layout: images [B, H, W, 3] float in [-1, 1] (NHWC).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-x**2 / (2.0 * sigma**2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x, window):
  """Separable Gaussian filter of [B, H, W, C] per channel, 'valid' region."""
  channels = x.shape[-1]
  size = window.shape[0]
  dn = ('NHWC', 'HWIO', 'NHWC')
  for kernel_shape in ((size, 1), (1, size)):
    kernel = jnp.tile(jnp.asarray(window).reshape(kernel_shape + (1, 1)),
                      (1, 1, 1, channels))
    x = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), 'VALID', dimension_numbers=dn,
        feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)
  return x


def _ssim_and_cs(x, y, window, max_val, k1, k2):
  """Mean SSIM and contrast-structure term per image ([B] each)."""
  c1, c2 = (k1 * max_val)**2, (k2 * max_val)**2
  mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
  var_x = _filter_valid(x * x, window) - mu_x**2
  var_y = _filter_valid(y * y, window) - mu_y**2
  cov = _filter_valid(x * y, window) - mu_x * mu_y
  cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
  ssim_map = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
  return ssim_map.mean(axis=(1, 2, 3)), cs_map.mean(axis=(1, 2, 3))


def _downsample(x):
  """2x2 average pool, stride 2; odd sizes padded, padding not counted."""
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1),
                               (1, 2, 2, 1), 'SAME') / jax.lax.reduce_window(
                                   jnp.ones_like(x), 0.0, jax.lax.add,
                                   (1, 2, 2, 1), (1, 2, 2, 1), 'SAME')


@functools.partial(jax.jit, static_argnames=('max_val', 'filter_size',
                                              'filter_sigma', 'k1', 'k2'))
def ms_ssim(img1, img2, max_val: float = 2.0, filter_size: int = 11,
            filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
  """Multi-scale SSIM (Wang et al. 2003), 5 scales, per image pair.

  prod_{i<5} relu(cs_i)^w_i * relu(ssim_5)^w_5 with the standard weights,
  an 11x11 Gaussian window (sigma 1.5) over the valid region, and 2x2 average
  downsampling between scales (as tf.image.ssim_multiscale).

  Args:
    img1: [B, H, W, C] (or [H, W, C]) float; min(H, W) >= 16 * (filter_size
      - 1) + 1 (161 for the default window).
    img2: same shape as img1.
    max_val: the dynamic range (2.0 for images in [-1, 1], 1.0 for [0, 1],
      255 for uint8 values).
    filter_size: Gaussian window size.
    filter_sigma: Gaussian window width.
    k1: SSIM constant.
    k2: SSIM constant.

  Returns:
    [B] float32 MS-SSIM (a scalar for unbatched input); 1 for equal images.
  """
  x, y = jnp.asarray(img1, jnp.float32), jnp.asarray(img2, jnp.float32)
  if x.shape != y.shape:
    raise ValueError(f'Shapes differ: {x.shape} vs {y.shape}.')
  unbatched = x.ndim == 3
  if unbatched:
    x, y = x[None], y[None]
  levels = len(MS_SSIM_WEIGHTS)
  min_side = (filter_size - 1) * 2**(levels - 1) + 1
  if min(x.shape[1:3]) < min_side:
    raise ValueError(f'MS-SSIM with a {filter_size} window needs images of at '
                     f'least {min_side} pixels per side, got {x.shape[1:3]}.')
  window = _gaussian_window(filter_size, filter_sigma)
  weights = jnp.asarray(MS_SSIM_WEIGHTS, jnp.float32)
  terms = []
  for level in range(levels):
    ssim, cs = _ssim_and_cs(x, y, window, max_val, k1, k2)
    if level < levels - 1:
      terms.append(cs)
      x, y = _downsample(x), _downsample(y)
    else:
      terms.append(ssim)
  values = jnp.maximum(jnp.stack(terms, axis=-1), 0.0)
  result = jnp.prod(values**weights, axis=-1)
  return result[0] if unbatched else result


def mean_pairwise_ms_ssim(images, max_val: float = 2.0,
                          batch_size: int = 64) -> float:
  """Mean MS-SSIM over all pairs of images (diversity; lower = more diverse).

  Args:
    images: [N, H, W, C] images generated from one label map with different
      noise, float in [-1, 1] (else set max_val); N >= 2.
    max_val: dynamic range of the images.
    batch_size: pairs per `ms_ssim` call.

  Returns:
    The mean over the N (N - 1) / 2 pairs.
  """
  images = np.asarray(images, np.float32)
  n = images.shape[0]
  if n < 2:
    raise ValueError(f'Need at least 2 images, got {n}.')
  first, second = np.triu_indices(n, k=1)
  values = []
  for start in range(0, first.shape[0], batch_size):
    i, j = first[start:start + batch_size], second[start:start + batch_size]
    values.append(np.asarray(ms_ssim(images[i], images[j], max_val=max_val)))
  return float(np.concatenate(values).astype(np.float64).mean())
