"""UperNet-101 of CSAILVision/semantic-segmentation-pytorch in Flax.

ADE20K's mIoU segmenter, eval mode, NHWC. Children are named as in
CSAIL's two checkpoint files: `encoder` (`encoder_epoch_N.pth`: a ResNet with
a three-convolution stem) and `decoder` (`decoder_epoch_N.pth`: PPM, FPN and
`conv_last`). Logits have output stride 4; the test-time output is the
softmax of the logits resized (bilinear, half-pixel) to the label size.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import convert
from oasis_jax.evaluation.segmenters import layers

NAME = 'upernet101'
NUM_CLASSES = 150  # ADE20K.
FPN_DIM = 512  # build_decoder('upernet') fixes it.
POOL_SCALES = (1, 2, 3, 6)
# (channels, stride) of the stem's 3x3 conv1..conv3 (each with BN, ReLU).
STEM = ((64, 2), (64, 1), (128, 1))
# (planes, blocks, stride) of layer1..layer4 (ResNet-101).
STAGES = ((64, 3, 1), (128, 4, 2), (256, 23, 2), (512, 3, 2))


class ResNetEncoder(nn.Module):
  """CSAIL's `Resnet(resnet101)`: 3-conv stem, max-pool, layer1..layer4."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[B, H, W, 3] -> ([layer1..layer4] at strides 4..32, stem, maxpool)."""
    dt = self.dtype
    for i, (ch, stride) in enumerate(STEM, 1):
      x = layers.conv(ch, 3, stride=stride, dtype=dt, name=f'conv{i}')(x)
      x = nn.relu(layers.batch_norm(dtype=dt, name=f'bn{i}')(x))
    stem = x
    x = pooled = layers.max_pool_3x3_s2(x)
    outs = []
    for i, (planes, blocks, stride) in enumerate(STAGES, 1):
      x = layers.BottleneckStage(planes, blocks, stride, dtype=dt,
                                 name=f'layer{i}')(x)
      outs.append(x)
    return outs, stem, pooled


class _Wrapped(nn.Module):
  """A Sequential holding one conv-BN-ReLU block as '0' (`fpn_out[i]`)."""
  kernel: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return layers.ConvBN(FPN_DIM, self.kernel, dtype=self.dtype, name='0')(x)


class _Indexed(nn.Module):
  """A ModuleList of conv-BN-ReLU blocks, entry i named str(i); `wrapped`
  entries are Sequentials around the block (see `_Wrapped`)."""
  kernel: int
  wrapped: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, i: int, x):
    block = _Wrapped if self.wrapped else functools.partial(
        layers.ConvBN, FPN_DIM)
    return block(self.kernel, dtype=self.dtype, name=str(i))(x)


class UPerNetDecoder(nn.Module):
  """CSAIL's `UPerNet` decoder (fpn_dim 512, pool scales 1, 2, 3, 6)."""
  num_classes: int = NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, conv_out: Sequence[jax.Array], *,
               features: Optional[dict] = None):
    """[C2, C3, C4, C5] -> logits at C2's size [B, h4, w4, num_classes]."""
    dt, feats = self.dtype, features if features is not None else {}
    conv5 = conv_out[-1]
    h, w = conv5.shape[1:3]
    ppm_conv = _Indexed(1, dtype=dt, name='ppm_conv')
    ppm = [conv5]
    for i, s in enumerate(POOL_SCALES):
      pooled = layers.resize_bilinear(layers.adaptive_avg_pool(conv5, s), h, w)
      ppm.append(feats.setdefault(f'ppm{i}', ppm_conv(i, pooled)))
    f = layers.ConvBN(FPN_DIM, 3, dtype=dt, name='ppm_last_conv')(
        jnp.concatenate(ppm, -1))
    feats['ppm_last'] = f
    fpn_in = _Indexed(1, dtype=dt, name='fpn_in')
    fpn_out = _Indexed(3, wrapped=True, dtype=dt, name='fpn_out')
    pyramid = [f]
    for i in reversed(range(len(conv_out) - 1)):
      lateral = feats[f'fpn_in{i}'] = fpn_in(i, conv_out[i])
      f = lateral + layers.resize_bilinear(f, *lateral.shape[1:3])
      pyramid.insert(0, feats.setdefault(f'fpn_out{i}', fpn_out(i, f)))
    size = pyramid[0].shape[1:3]
    fusion = jnp.concatenate(
        [pyramid[0]] + [layers.resize_bilinear(p, *size) for p in pyramid[1:]],
        -1)
    return _ConvLast(self.num_classes, dtype=dt, name='conv_last')(
        fusion, feats)


class _ConvLast(nn.Module):
  """`conv_last`: '0' a 3x3 conv-BN-ReLU to 512, '1' a 1x1 conv with bias."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, feats: dict):
    x = feats['fusion'] = layers.ConvBN(FPN_DIM, 3, dtype=self.dtype,
                                        name='0')(x)
    return layers.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype,
                       name='1')(x)


class UPerNet(nn.Module):
  """`SegmentationModule(encoder, decoder)` in eval mode, NHWC.

  `__call__` returns the stride-4 logits; `test_output(x, size)` the
  reference's eval output (softmax of the logits resized to `size`).
  """
  num_classes: int = NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, features: bool = False):
    conv_out, stem, pooled = ResNetEncoder(dtype=self.dtype,
                                           name='encoder')(x)
    feats = {'stem': stem, 'maxpool': pooled}
    feats.update({f'layer{i}': c for i, c in enumerate(conv_out, 1)})
    logits = UPerNetDecoder(self.num_classes, dtype=self.dtype,
                            name='decoder')(conv_out, features=feats)
    return (logits, feats) if features else logits

  def test_output(self, x, size: Optional[Sequence[int]] = None):
    """Softmax over classes of the logits resized to `size` (default: x's)."""
    h, w = size if size is not None else x.shape[1:3]
    logits = layers.resize_bilinear(self(x).astype(jnp.float32), h, w)
    return jax.nn.softmax(logits, -1)


ENCODER_PREFIX, DECODER_PREFIX = 'encoder.', 'decoder.'


def merge_state_dicts(encoder, decoder) -> dict:
  """CSAIL's two files as one state dict (`SegmentationModule` key names)."""
  return {**convert.prefixed(ENCODER_PREFIX, encoder),
          **convert.prefixed(DECODER_PREFIX, decoder)}


def num_classes_of(state) -> int:
  """The class count of a merged state dict (`conv_last.1`)."""
  state = convert.strip_prefix(state, convert.DATA_PARALLEL_PREFIX)
  return int(np.shape(state[DECODER_PREFIX + 'conv_last.1.weight'])[0])


def from_state_dict(state, *, what: str = 'UperNet weights') -> dict:
  """Flax variables of a merged state dict (`merge_state_dicts`)."""
  abstract = convert.abstract_variables(UPerNet(num_classes_of(state)))
  return convert.state_dict_to_variables(state, abstract, what=what)


def from_state_dicts(encoder, decoder, *,
                     what: str = 'UperNet weights') -> dict:
  """Flax variables of `encoder_epoch_N.pth`'s and `decoder_epoch_N.pth`'s
  state dicts."""
  return from_state_dict(merge_state_dicts(encoder, decoder), what=what)


def to_state_dicts(variables) -> tuple[dict, dict]:
  """(encoder, decoder) state dicts with CSAIL's key names."""
  state = convert.variables_to_state_dict(variables)
  parts = ({}, {})
  for key, value in state.items():
    is_decoder = key.startswith(DECODER_PREFIX)
    parts[is_decoder][key.split('.', 1)[1]] = value
  return parts
