"""VGG-19's convolutional stack up to relu5_1, for the perceptual loss."""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.models import layers

# torchvision's vgg19().features: (index of each 3x3 conv, its block). A 2x2
# max-pool precedes blocks 2..5; relu<block>_1 follows each block's first
# conv (indices 0, 5, 10, 19, 28), and the compared features are those.
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)
CONV_BLOCKS = (0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4)
FEATURE_CONVS = (0, 5, 10, 19, 28)  # Their ReLUs give relu1_1..relu5_1.
CHANNELS = (64, 128, 256, 512, 512)  # Widths of blocks 1..5 (ImageNet's).
FEATURE_NAMES = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')


def max_pool2x_floor(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, no padding; odd sizes drop the last row/column.

  Args:
    x: [B, H, W, C].

  Returns:
    [B, H // 2, W // 2, C].
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class VGG19Features(nn.Module):
  """torchvision's VGG-19 ``features`` (no batch norm), cut after relu5_1.

  Every conv is 3x3, stride 1, zero padding 1, with bias; no input
  normalization (images go in as they are, [-1, 1] for OASIS). Parameters are
  ``conv_<torchvision index>_kernel`` (HWIO) and ``..._bias``; they are frozen
  (never part of a train state), see
  oasis_jax/pretrained/vgg_weights.py.

  Attributes:
    channels: widths of blocks 1..5 (ImageNet's VGG-19: 64..512; tests use
      narrower stacks).
    dtype: compute dtype (None: the input's).
  """
  channels: Sequence[int] = CHANNELS
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """The five compared feature maps.

    Args:
      x: [B, H, W, 3] images (no normalization is applied).

    Returns:
      [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1], each [B, h, w, C] with
      h = H // 2**k for block k + 1 (floor at each pool).
    """
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    features = []
    block = 0
    for index, conv_block in zip(CONV_INDICES, CONV_BLOCKS):
      if conv_block != block:
        x = max_pool2x_floor(x)
        block = conv_block
      kernel = self.param(f'conv_{index}_kernel',
                          nn.initializers.lecun_normal(),
                          (3, 3, x.shape[-1], self.channels[block]),
                          jnp.float32)
      bias = self.param(f'conv_{index}_bias', nn.initializers.zeros,
                        (self.channels[block],), jnp.float32)
      x = layers.conv2d(x, kernel.astype(dtype))
      x = nn.relu(x + bias.astype(dtype))
      if index in FEATURE_CONVS:
        features.append(x)
    return features
