"""Layers the three segmenters share: conv + BN, bottlenecks, torch resizes.

Every module here names its children after the PyTorch modules they port
(`conv1`, `bn1`, `downsample`, '0', '1', ...), so that a Flax parameter path
joined by dots is the PyTorch state-dict key (see `convert.py`). Layout is
NHWC. Padding is symmetric and explicit as in PyTorch (never 'SAME', which
pads stride-2 convolutions asymmetrically).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d default, used by all three.
HIGHEST = jax.lax.Precision.HIGHEST


def conv(features: int, kernel: int, *, stride: int = 1, dilation: int = 1,
         padding: Optional[int] = None, use_bias: bool = False,
         dtype: Any = jnp.float32, name: str) -> nn.Conv:
  """A PyTorch Conv2d: symmetric zero padding, default dilation (k - 1) / 2."""
  pad = dilation * (kernel - 1) // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)),
                 kernel_dilation=(dilation, dilation), use_bias=use_bias,
                 dtype=dtype, precision=HIGHEST, name=name)


def batch_norm(*, dtype: Any = jnp.float32, name: str) -> nn.BatchNorm:
  """Inference BatchNorm with the running statistics, eps 1e-5."""
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON,
                      dtype=dtype, name=name)


class ConvBN(nn.Module):
  """Conv (no bias) -> BN (-> ReLU); children named `names` (conv, bn)."""
  features: int
  kernel: int
  stride: int = 1
  dilation: int = 1
  relu: bool = True
  names: Sequence[str] = ('0', '1')
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = conv(self.features, self.kernel, stride=self.stride,
             dilation=self.dilation, dtype=self.dtype, name=self.names[0])(x)
    x = batch_norm(dtype=self.dtype, name=self.names[1])(x)
    return nn.relu(x) if self.relu else x


class Bottleneck(nn.Module):
  """torchvision-layout bottleneck (stride on the 3x3 conv), 4x expansion.

  Children conv1/bn1, conv2/bn2, conv3/bn3 and `downsample` ('0' conv, '1'
  BN), as in DRN's and CSAIL's ResNets; the 3x3 conv pads by its dilation.
  """
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dt = self.dtype
    y = conv(self.planes, 1, dtype=dt, name='conv1')(x)
    y = nn.relu(batch_norm(dtype=dt, name='bn1')(y))
    y = conv(self.planes, 3, stride=self.stride, dilation=self.dilation,
             dtype=dt, name='conv2')(y)
    y = nn.relu(batch_norm(dtype=dt, name='bn2')(y))
    y = conv(self.planes * 4, 1, dtype=dt, name='conv3')(y)
    y = batch_norm(dtype=dt, name='bn3')(y)
    if self.downsample:
      x = ConvBN(self.planes * 4, 1, stride=self.stride, relu=False,
                 dtype=dt, name='downsample')(x)
    return nn.relu(x + y)


class BottleneckStage(nn.Module):
  """`num_blocks` Bottlenecks named '0', '1', ...; block 0 strides and
  (when `downsample`) projects the shortcut."""
  planes: int
  num_blocks: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      x = Bottleneck(self.planes, self.stride if i == 0 else 1,
                     self.dilation, self.downsample and i == 0,
                     dtype=self.dtype, name=str(i))(x)
    return x


def max_pool_3x3_s2(x, *, ceil_mode: bool = False):
  """PyTorch MaxPool2d(3, 2, padding=1); padding never wins (-inf).

  ceil_mode adds one -inf row/column at the bottom/right of an even side,
  giving floor(n/2) + 1 outputs instead of ceil(n/2).
  """
  pads = [(1, 1 + (ceil_mode and n % 2 == 0)) for n in x.shape[1:3]]
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=pads)


def resize_bilinear(x, height: int, width: int):
  """PyTorch `interpolate(size=(h, w), mode='bilinear', align_corners=False)`
  on NHWC (half-pixel centres, edge clamping, no antialiasing)."""
  if x.shape[1:3] == (height, width):
    return x
  shape = (x.shape[0], height, width, x.shape[3])
  return jax.image.resize(x, shape, 'linear', antialias=False).astype(x.dtype)


def rescale_bilinear(x, factor: float):
  """PyTorch `interpolate(scale_factor=p, mode='bilinear',
  align_corners=False)` on NHWC: floor(n p) outputs sampled at (i + 0.5) / p
  - 0.5, i.e. with the scale p itself, not n / floor(n p)."""
  h, w = (int(np.floor(n * factor)) for n in x.shape[1:3])
  shape = (x.shape[0], h, w, x.shape[3])
  scale = jnp.array([factor, factor], jnp.float32)
  out = jax.image.scale_and_translate(
      x, shape, (1, 2), scale, jnp.zeros(2, jnp.float32), 'linear',
      antialias=False)
  return out.astype(x.dtype)


def adaptive_pool_matrix(n: int, s: int) -> np.ndarray:
  """[s, n] averaging weights of PyTorch's AdaptiveAvgPool over n -> s bins:
  bin i covers [floor(i n / s), ceil((i + 1) n / s))."""
  m = np.zeros((s, n), np.float32)
  for i in range(s):
    lo, hi = (i * n) // s, -((-(i + 1) * n) // s)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x, size: int):
  """PyTorch `AdaptiveAvgPool2d(size)` on NHWC (overlapping bins allowed)."""
  mh = jnp.asarray(adaptive_pool_matrix(x.shape[1], size), x.dtype)
  mw = jnp.asarray(adaptive_pool_matrix(x.shape[2], size), x.dtype)
  return jnp.einsum('ih,bhwc,jw->bijc', mh, x, mw, precision=HIGHEST)


def _aligned_matrix(n: int, m: int) -> np.ndarray:
  """[m, n] weights of `align_corners=True` linear resampling n -> m:
  output i samples source i (n - 1) / (m - 1)."""
  out = np.zeros((m, n), np.float32)
  src = np.arange(m) * ((n - 1) / (m - 1) if m > 1 else 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
  i1 = np.minimum(i0 + 1, n - 1)
  frac = (src - i0).astype(np.float32)
  np.add.at(out, (np.arange(m), i0), 1 - frac)
  np.add.at(out, (np.arange(m), i1), frac)
  return out


def resize_bilinear_aligned(x, height: int, width: int):
  """PyTorch `interpolate(mode='bilinear', align_corners=True)` on NHWC."""
  mh = jnp.asarray(_aligned_matrix(x.shape[1], height))
  mw = jnp.asarray(_aligned_matrix(x.shape[2], width))
  out = jnp.einsum('ih,bhwc,jw->bijc', mh, x.astype(jnp.float32), mw,
                   precision=HIGHEST)
  return out.astype(x.dtype)
