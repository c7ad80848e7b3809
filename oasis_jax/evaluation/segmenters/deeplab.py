"""DeepLab-v2 ResNet-101 in the MSC wrapper (kazuto1011/deeplab-pytorch).

COCO-Stuff's mIoU segmenter, eval mode, NHWC. Children are named as in
`MSC.state_dict()`: `base` (layer1 stem, layer2..layer5 of `blockB` MSRA
bottlenecks with the stride on the 1x1 `reduce`, and the summed ASPP
`aspp.c0..c3`). The test-time output is MSC's: the elementwise maximum of the
logits at scales 1, 0.5 and 0.75, the smaller ones resized to scale 1's
output-stride-8 grid.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import convert
from oasis_jax.evaluation.segmenters import layers

NAME = 'deeplabv2_msc'
NUM_CLASSES = 182  # COCO-Stuff 164k ids 0..181.
MSC_SCALES = (0.5, 0.75)  # DeepLabV2_ResNet101_MSC fixes them.
ATROUS_RATES = (6, 12, 18, 24)
# (out channels, blocks, stride, dilation) of layer2..layer5.
STAGES = ((256, 3, 1, 1), (512, 4, 2, 1), (1024, 23, 1, 2),
           (2048, 3, 1, 4))
CBR_NAMES = ('conv', 'bn')  # _ConvBnReLU's children.


class _MSRABottleneck(nn.Module):
  """reduce (1x1, stride) -> conv3x3 (dilated) -> increase, + shortcut."""
  out_ch: int
  stride: int
  dilation: int
  downsample: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    mid, dt = self.out_ch // 4, self.dtype
    y = layers.ConvBN(mid, 1, stride=self.stride, names=CBR_NAMES, dtype=dt,
                      name='reduce')(x)
    y = layers.ConvBN(mid, 3, dilation=self.dilation, names=CBR_NAMES,
                      dtype=dt, name='conv3x3')(y)
    y = layers.ConvBN(self.out_ch, 1, relu=False, names=CBR_NAMES, dtype=dt,
                      name='increase')(y)
    if self.downsample:
      x = layers.ConvBN(self.out_ch, 1, stride=self.stride, relu=False,
                        names=CBR_NAMES, dtype=dt, name='shortcut')(x)
    return nn.relu(x + y)


class _ResLayer(nn.Module):
  """`_ResLayer`: blocks 'block1'..; block 1 strides and projects."""
  out_ch: int
  num_blocks: int
  stride: int
  dilation: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      x = _MSRABottleneck(self.out_ch, self.stride if i == 0 else 1,
                          self.dilation, i == 0, dtype=self.dtype,
                          name=f'block{i + 1}')(x)
    return x


class _Stem(nn.Module):
  """7x7 conv stride 2 + BN + ReLU, then MaxPool2d(3, 2, 1, ceil_mode)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.ConvBN(64, 7, stride=2, names=CBR_NAMES, dtype=self.dtype,
                      name='conv1')(x)
    return layers.max_pool_3x3_s2(x, ceil_mode=True)


class _ASPP(nn.Module):
  """Four dilated 3x3 convolutions with bias, summed (children c0..c3)."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, feats: dict):
    out = 0
    for i, rate in enumerate(ATROUS_RATES):
      y = feats[f'aspp_c{i}'] = layers.conv(
          self.num_classes, 3, dilation=rate, use_bias=True, dtype=self.dtype,
          name=f'c{i}')(x)
      out = out + y
    return out


class DeepLabV2(nn.Module):
  """`DeepLabV2(n_classes, [3, 4, 23, 3], [6, 12, 18, 24])`: stride-8 logits."""
  num_classes: int = NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, features: bool = False):
    feats = {'layer1': _Stem(dtype=self.dtype, name='layer1')(x)}
    x = feats['layer1']
    for i, (ch, blocks, stride, dilation) in enumerate(STAGES, 2):
      x = feats[f'layer{i}'] = _ResLayer(ch, blocks, stride, dilation,
                                         dtype=self.dtype,
                                         name=f'layer{i}')(x)
    logits = _ASPP(self.num_classes, dtype=self.dtype, name='aspp')(x, feats)
    return (logits, feats) if features else logits


class MSC(nn.Module):
  """`MSC(DeepLabV2, scales=[0.5, 0.75])` in eval mode.

  `__call__(x)` returns MSC's eval output; with `outputs=True` also a dict
  of the per-scale inputs and logits ('input_s0p5', 'logits_s0p5',
  'logits_s0p5_up', ...), the unscaled 'logits' and its features.
  """
  num_classes: int = NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, outputs: bool = False):
    base = DeepLabV2(self.num_classes, dtype=self.dtype, name='base')
    logits, feats = base(x, features=True)
    out = dict(logits=logits, **{f'feat_{k}': v for k, v in feats.items()})
    h, w = logits.shape[1:3]
    fused = logits
    for p in MSC_SCALES:
      tag = 's' + f'{p:g}'.replace('.', 'p')
      x_p = out[f'input_{tag}'] = layers.rescale_bilinear(x, p)
      out[f'logits_{tag}'] = base(x_p)
      up = out[f'logits_{tag}_up'] = layers.resize_bilinear(
          out[f'logits_{tag}'], h, w)
      fused = jnp.maximum(fused, up)
    out['test_output'] = fused
    return out if outputs else fused


def num_classes_of(state) -> int:
  """The class count of an `MSC` state dict (ASPP's first branch)."""
  state = convert.strip_prefix(state, convert.DATA_PARALLEL_PREFIX)
  return int(np.shape(state['base.aspp.c0.weight'])[0])


def from_state_dict(state, *, what: str = 'DeepLab weights') -> dict:
  """Flax variables of `MSC.state_dict()` keys (all starting `base.`)."""
  abstract = convert.abstract_variables(MSC(num_classes_of(state)))
  return convert.state_dict_to_variables(state, abstract, what=what)


def to_state_dict(variables) -> dict[str, np.ndarray]:
  """`MSC.state_dict()` keys (without the BN counters)."""
  return convert.variables_to_state_dict(variables)
