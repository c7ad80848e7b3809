"""DRN-D-105 in `DRNSeg` (fyu/drn), Cityscapes' mIoU segmenter, eval mode.

Children are named as in `DRNSeg.state_dict()`: `base` ('0'..'8', DRN's
layer0..layer8) and `seg`; `up`, a fixed bilinear transposed convolution,
has no parameters here. Logits have output stride 8 (ceil(n / 8)); the
test-time output is the log-softmax of `up(logits)`, 8 * ceil(n / 8) pixels
per side with attenuated borders, exactly as the reference computes it.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import convert
from oasis_jax.evaluation.segmenters import layers

NAME = 'drn_d_105'
NUM_CLASSES = 19  # Cityscapes train ids.
# (planes, blocks, stride, dilation) of the bottleneck layers base.3..6.
STAGES = ((64, 3, 2, 1), (128, 4, 2, 1), (256, 23, 1, 2), (512, 3, 1, 4))
# (channels, kernel, stride) of the conv-BN-ReLU layers base.0..2.
STEM = ((16, 7, 1), (16, 3, 1), (32, 3, 2))
# (layer, dilation) of the 512-channel 3x3 conv-BN-ReLU layers base.7, 8.
TAIL = ((7, 2), (8, 1))
_UP_KERNEL, _UP_STRIDE, _UP_PADDING = 16, 8, 4


def up_kernel_1d() -> np.ndarray:
  """k(t) = 1 - |t - 7.5| / 8, t = 0..15: the bilinear taps of `up`."""
  t = np.arange(_UP_KERNEL, dtype=np.float64)
  centre = (_UP_KERNEL - 1) / 2
  return (1 - np.abs(t - centre) / _UP_STRIDE).astype(np.float32)


def up_weight(num_classes: int) -> np.ndarray:
  """`DRNSeg.up.weight` as constructed: [C, 1, 16, 16], k(i) k(j) each."""
  k = up_kernel_1d()
  return np.broadcast_to(np.outer(k, k), (num_classes, 1) + (
      _UP_KERNEL,) * 2).astype(np.float32)


def upsample(logits):
  """`up`: depthwise ConvTranspose2d(16, stride 8, padding 4), no bias.

  As a dilated convolution: the input dilated by 8, padded by 16 - 1 - 4 on
  each side; the kernel is symmetric so it needs no flip. NHWC in and out,
  [B, 8h, 8w, C].
  """
  c = logits.shape[-1]
  k = up_kernel_1d()
  kernel = jnp.broadcast_to(jnp.asarray(np.outer(k, k))[:, :, None, None],
                            (_UP_KERNEL, _UP_KERNEL, 1, c))
  pad = _UP_KERNEL - 1 - _UP_PADDING
  return jax.lax.conv_general_dilated(
      logits, kernel.astype(logits.dtype), (1, 1), ((pad, pad), (pad, pad)),
      lhs_dilation=(_UP_STRIDE, _UP_STRIDE),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c,
      precision=layers.HIGHEST)


class DRNBase(nn.Module):
  """DRN-D-105 without avgpool/fc: children '0'..'8' (layer0..layer8)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, features: bool = False):
    """[B, H, W, 3] -> [B, ceil(H/8), ceil(W/8), 512] (and per layer)."""
    dt, feats = self.dtype, []
    for i, (ch, k, stride) in enumerate(STEM):
      x = layers.ConvBN(ch, k, stride=stride, dtype=dt, name=str(i))(x)
      feats.append(x)
    for i, (planes, blocks, stride, dilation) in enumerate(STAGES, 3):
      x = layers.BottleneckStage(planes, blocks, stride, dilation,
                                 dtype=dt, name=str(i))(x)
      feats.append(x)
    for i, dilation in TAIL:
      x = layers.ConvBN(512, 3, dilation=dilation, dtype=dt, name=str(i))(x)
      feats.append(x)
    return (x, feats) if features else x


class DRNSeg(nn.Module):
  """DRNSeg('drn_d_105', num_classes) in eval mode, NHWC.

  `__call__` returns the logits [B, ceil(H/8), ceil(W/8), C];
  `test_output` the reference's eval output, the log-softmax of the fixed
  bilinear upsampling, [B, 8 ceil(H/8), 8 ceil(W/8), C].
  """
  num_classes: int = NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, features: bool = False):
    y, feats = DRNBase(dtype=self.dtype, name='base')(x, features=True)
    logits = layers.conv(self.num_classes, 1, use_bias=True,
                         dtype=self.dtype, name='seg')(y)
    return (logits, feats) if features else logits

  def test_output(self, x):
    return jax.nn.log_softmax(upsample(self(x)).astype(jnp.float32), -1)


def fixed_keys(num_classes: int) -> dict[str, np.ndarray]:
  """State-dict entries that are constants, not parameters, here."""
  return {'up.weight': up_weight(num_classes)}


def num_classes_of(state) -> int:
  """The class count of a `DRNSeg` state dict (its `seg` conv)."""
  state = convert.strip_prefix(state, convert.DATA_PARALLEL_PREFIX)
  return int(np.shape(state['seg.weight'])[0])


def from_state_dict(state, *, what: str = 'DRN weights') -> dict:
  """Flax variables of `DRNSeg.state_dict()` keys (or `module.`-prefixed)."""
  n = num_classes_of(state)
  abstract = convert.abstract_variables(DRNSeg(n))
  return convert.state_dict_to_variables(state, abstract,
                                         fixed=fixed_keys(n), what=what)


def to_state_dict(variables) -> dict[str, np.ndarray]:
  """`DRNSeg.state_dict()` keys (with `up.weight`, without the counters)."""
  n = variables['params']['seg']['bias'].shape[0]
  return convert.variables_to_state_dict(variables, fixed=fixed_keys(n))
