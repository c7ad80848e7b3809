"""The OASIS generator: a SPADE ResNet generator conditioned on [z | one-hot]."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax import geometry
from oasis_jax.models import layers
from oasis_jax.models import spade


def channel_multipliers(num_res_blocks: int) -> list[int]:
  """Width multipliers of the block boundaries: [16,16,16,8,4,2,1] for 6."""
  mults = [16] * max(0, num_res_blocks - 3) + [16, 8, 4, 2, 1]
  return mults[-(num_res_blocks + 1):]


def latent_hw(image_size: int, aspect_ratio: float,
              num_res_blocks: int) -> tuple[int, int]:
  """(h, w) of the first feature map (the rule of geometry.latent_hw)."""
  return geometry.latent_hw(image_size, aspect_ratio, num_res_blocks)


class OasisGenerator(nn.Module):
  """SPADE generator with 3D noise.

  Attributes:
    num_classes: semantic_nc, the one-hot channels (don't-care included).
    channels: width ch (official 64).
  """
  num_classes: int
  channels: int = 64
  z_dim: int = 64
  num_res_blocks: int = 6
  spade_hidden: int = 128
  use_3d_noise: bool = True
  spectral_norm: bool = True
  norm: str = 'batch'
  aspect_ratio: float = 1.0
  remat: bool = False
  label_conv: str = 'auto'  # How [z | one-hot] is convolved (LabelConv).
  conv_impl: str = 'auto'  # layers.conv2d.
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, label: jax.Array, z: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    """Generates images.

    Args:
      label: [B, H, W] integer class ids.
      z: [B, z_dim] (broadcast to every pixel) or [B, H, W, z_dim] (per-pixel
        noise, for local editing); None without 3D noise.
      train: batch statistics and one spectral-norm power iteration (True),
        or the stored statistics and vectors (False).

    Returns:
      [B, H, W, 3] in [-1, 1].
    """
    b, h, w = label.shape
    label = label.astype(jnp.int32)
    z_dim = self.z_dim if self.use_3d_noise else 0
    if self.use_3d_noise:
      if z is None:
        raise ValueError('use_3d_noise=True: the generator needs z.')
      if (z.ndim not in (2, 4) or z.shape[0] != b
          or (z.ndim == 4 and z.shape[1:3] != (h, w))
          or z.shape[-1] != self.z_dim):
        raise ValueError(f'z must be [B, z_dim] or [B, H, W, z_dim] with '
                         f'z_dim={self.z_dim}, label {label.shape}; got '
                         f'{z.shape}.')
    elif z is not None:
      raise ValueError('use_3d_noise=False: the generator takes no z.')

    lh, lw = latent_hw(w, self.aspect_ratio, self.num_res_blocks)
    scale = 2**(self.num_res_blocks - 1)
    if (lh * scale, lw * scale) != (h, w):
      raise ValueError(
          f'label map {h}x{w} does not match aspect_ratio={self.aspect_ratio}'
          f' and num_res_blocks={self.num_res_blocks}: expected '
          f'{lh * scale}x{lw * scale}.')
    chans = [m * self.channels for m in channel_multipliers(
        self.num_res_blocks)]
    x = layers.LabelConv(chans[0], self.num_classes, z_dim,
                         mode=self.label_conv, dtype=self.dtype, name='fc')(
                             *spade.resize_condition(label, z, (lh, lw)))
    block_cls = spade.SPADEResBlock
    if self.remat:
      block_cls = nn.remat(block_cls)
    for i in range(self.num_res_blocks):
      x = block_cls(chans[i + 1], self.num_classes, z_dim, self.spade_hidden,
                    self.norm, self.spectral_norm, train, self.label_conv,
                    self.conv_impl, self.dtype, name=f'body_{i}')(x, label, z)
      if i < self.num_res_blocks - 1:
        x = layers.upsample2x(x)
    x = layers.Conv(3, 3, impl=self.conv_impl, dtype=self.dtype,
                    name='conv_img')(
        nn.leaky_relu(x, 0.2), train=train)
    return jnp.tanh(x.astype(jnp.float32))
