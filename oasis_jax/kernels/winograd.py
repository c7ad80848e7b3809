"""Winograd F(4, 3): a 'same' 3x3 convolution with half the multiplies.

A faster formulation of layers.conv2d for forwards that are not
differentiated (eval mode), float32, 3x3 kernels to many channels on large
maps; it runs in bands of rows that stay in the cache, and can fuse an
epilogue (SPADE's modulation) into each band.
"""

import functools
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

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
  the cache (a lax.map). Same numbers up to float rounding (relative error
  ~3e-6 in float32); meant
  for float32 forwards (inference): differentiable, but its backward pass
  would keep the transformed tiles.

  x may be a BandSource that makes each input band when it is needed
  (SPADE's shared activations, see label_conv.label_conv_rows). ``epilogue(y,
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



def uses_winograd(x_shape: Sequence[int], features: int, dtype) -> bool:
  """Whether a forward-only conv of x to ``features`` channels takes
  winograd_conv3x3 (float32 maps of >= _WINOGRAD_MIN_PIXELS pixels to >=
  _WINOGRAD_MIN_FEATURES channels, where it beats XLA:CPU's conv)."""
  _, h, w, _ = x_shape
  return (jnp.dtype(dtype) == jnp.float32
          and h * w >= _WINOGRAD_MIN_PIXELS
          and features >= _WINOGRAD_MIN_FEATURES)
