"""The OASIS discriminator: a U-Net segmenter with N+1 output channels."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.models import layers
from oasis_jax.models import model_config


class ResBlockDown(nn.Module):
  """Encoder block: two 3x3 convs and 2x2 average pooling, with a shortcut.

  dx = pool(conv2(lrelu(conv1(lrelu(x))))) (no first activation in the
  first block); the shortcut is pool(x), or a 1x1 conv_s before (first
  block) or after the pooling when the width changes.
  """
  config: model_config.DiscriminatorConfig
  features: int
  first: bool = False
  train: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    conv = lambda k, name: _conv(self.config, fout, k, name)
    if fin != fout:
      if self.first:
        shortcut = conv(1, 'conv_s')(layers.avg_pool2x(x), train=self.train)
      else:
        shortcut = layers.avg_pool2x(conv(1, 'conv_s')(x, train=self.train))
    else:
      shortcut = layers.avg_pool2x(x)
    dx = x if self.first else nn.leaky_relu(x, 0.2)
    dx = conv(3, 'conv1')(dx, train=self.train)
    dx = conv(3, 'conv2')(nn.leaky_relu(dx, 0.2), train=self.train)
    return shortcut + layers.avg_pool2x(dx)


class ResBlockUp(nn.Module):
  """Decoder block: nearest 2x upsampling and two 3x3 convs, with a shortcut.

  x' = upsample(x); dx = conv2(lrelu(conv1(lrelu(x')))); the shortcut is
  x', or conv_s(x') (1x1) when the width changes.
  """
  config: model_config.DiscriminatorConfig
  features: int
  train: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    # conv_s and conv1 read x' as "upsample, then convolve" (upsample_conv;
    # lrelu commutes with the nearest upsampling); conv2 reads dx.
    up_conv = lambda k, name: _conv(self.config, fout, k, name, upsample=True)
    if fin != fout:
      shortcut = up_conv(1, 'conv_s')(x, train=self.train)
    else:
      shortcut = layers.upsample2x(x)
    dx = up_conv(3, 'conv1')(nn.leaky_relu(x, 0.2), train=self.train)
    dx = _conv(self.config, fout, 3, 'conv2')(nn.leaky_relu(dx, 0.2),
                                              train=self.train)
    return shortcut + dx


def _conv(c: model_config.DiscriminatorConfig, features: int, k: int,
          name: str, upsample: bool = False) -> layers.Conv:
  """A spectral-norm conv; with upsample, of the 2x upsampled input."""
  f = c.formulations
  return f.conv_layer(features, k, spectral_norm=c.use_spectral_norm,
                      formulation=f.upsample_conv if upsample else f.conv,
                      dtype=c.dtype, name=name)


class OasisDiscriminator(nn.Module):
  """U-Net: len(channels) down blocks and as many up blocks with skips.

  The output has num_classes + 1 channels per pixel: channel 0 = fake,
  channel k = real pixel of class k - 1 (the N+1 segmenter of OASIS).
  """
  config: model_config.DiscriminatorConfig

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool) -> jax.Array:
    """Segments an image.

    Args:
      image: [B, H, W, 3] in [-1, 1]; H and W divisible by 2**len(channels).
      train: one spectral-norm power iteration per conv (True) or the stored
        vectors (False).

    Returns:
      [B, H, W, num_classes + 1] logits (float32, or float64 when computing
      in float64).
    """
    c = self.config
    n = len(c.channels)
    h, w = image.shape[1:3]
    if h % 2**n or w % 2**n:
      raise ValueError(f'discriminator input {h}x{w} must be divisible by '
                       f'{2**n} (2**len(discriminator.channels)).')
    ch = [3] + list(c.channels)
    down_cls, up_cls = ResBlockDown, ResBlockUp
    if c.remat:
      down_cls, up_cls = nn.remat(down_cls), nn.remat(up_cls)
    x = image.astype(c.dtype)
    encoded = []
    for i in range(n):
      x = down_cls(c, ch[i + 1], i == 0, train, name=f'body_down_{i}')(x)
      encoded.append(x)
    for i in range(n):
      out = ch[n - 1 - i] if i < n - 1 else c.last_channels
      if i > 0:
        x = jnp.concatenate([encoded[n - 1 - i], x], axis=-1)
      x = up_cls(c, out, train, name=f'body_up_{i}')(x)
    logits = c.formulations.conv_layer(
        c.num_classes + 1, 1, formulation=c.formulations.conv, dtype=c.dtype,
        name='layer_up_last')(x, train=train)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
