"""The OASIS generator: a SPADE ResNet conditioned on [z | one-hot]."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from data_pipelines import geometry
from oasis_jax.models import layers
from oasis_jax.models import model_config
from oasis_jax.models import spade


def channel_multipliers(num_res_blocks: int) -> list[int]:
  """Width multipliers of the block boundaries: [16,16,16,8,4,2,1] for 6."""
  mults = [16] * max(0, num_res_blocks - 3) + [16, 8, 4, 2, 1]
  return mults[-(num_res_blocks + 1):]


class OasisGenerator(nn.Module):
  """SPADE generator with 3D noise (OASIS, Sushko et al. 2022).

  x = fc([z | one-hot] at the latent size); num_res_blocks SPADE residual
  blocks, nearest 2x upsampling between them; image = tanh(conv_img(
  lrelu(x))).
  """
  config: model_config.GeneratorConfig

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
    c = self.config
    b, h, w = label.shape
    label = label.astype(jnp.int32)
    _check_noise(c, label, z)
    lh, lw = geometry.latent_hw(w, c.aspect_ratio, c.num_res_blocks)
    scale = 2**(c.num_res_blocks - 1)
    if (lh * scale, lw * scale) != (h, w):
      raise ValueError(
          f'label map {h}x{w} does not match aspect_ratio={c.aspect_ratio}'
          f' and num_res_blocks={c.num_res_blocks}: expected '
          f'{lh * scale}x{lw * scale}.')
    chans = [m * c.channels for m in channel_multipliers(c.num_res_blocks)]
    z_dim = c.z_dim if c.use_3d_noise else 0
    x = layers.LabelConv(chans[0], c.num_classes, z_dim,
                         formulation=c.formulations.label_conv, dtype=c.dtype,
                         name='fc')(
                             *spade.resize_condition(label, z, (lh, lw)),
                             train=train)
    block_cls = c.formulations.res_block or spade.SPADEResBlock
    if c.remat:
      block_cls = nn.remat(block_cls)
    for i in range(c.num_res_blocks):
      x = block_cls(c, chans[i], chans[i + 1], train, name=f'body_{i}')(
          x, label, z)
      if i < c.num_res_blocks - 1:
        x = layers.upsample2x(x)
    x = c.formulations.conv_layer(
        3, 3, formulation=c.formulations.conv, dtype=c.dtype,
        name='conv_img')(nn.leaky_relu(x, 0.2), train=train)
    return jnp.tanh(x.astype(jnp.promote_types(x.dtype, jnp.float32)))


def _check_noise(c: model_config.GeneratorConfig, label: jax.Array,
                 z: Optional[jax.Array]):
  """Raises ValueError unless z fits use_3d_noise, z_dim and label."""
  b, h, w = label.shape
  if c.use_3d_noise:
    if z is None:
      raise ValueError('use_3d_noise=True: the generator needs z.')
    if (z.ndim not in (2, 4) or z.shape[0] != b
        or (z.ndim == 4 and z.shape[1:3] != (h, w))
        or z.shape[-1] != c.z_dim):
      raise ValueError(f'z must be [B, z_dim] or [B, H, W, z_dim] with '
                       f'z_dim={c.z_dim}, label {label.shape}; got '
                       f'{z.shape}.')
  elif z is not None:
    raise ValueError('use_3d_noise=False: the generator takes no z.')
