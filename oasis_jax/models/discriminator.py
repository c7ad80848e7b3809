"""The OASIS discriminator: a U-Net segmenter with N+1 output channels."""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.models import layers


class ResBlockDown(nn.Module):
  """Encoder block: two 3x3 convs and 2x2 average pooling."""
  features: int
  first: bool = False
  spectral_norm: bool = True
  train: bool = True
  groups: int = 1
  conv_impl: str = 'auto'
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    conv = lambda k, name: layers.Conv(
        fout, k, spectral_norm=self.spectral_norm, groups=self.groups,
        impl=self.conv_impl, dtype=self.dtype, name=name)
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
  """Decoder block: nearest 2x upsampling and two 3x3 convs."""
  features: int
  spectral_norm: bool = True
  train: bool = True
  groups: int = 1
  conv_impl: str = 'auto'
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    # conv_s and conv1 read the upsampled maps without making them (same
    # numbers); conv2 works at the upsampled size.
    conv = lambda k, name, upsample=True: layers.Conv(
        fout, k, spectral_norm=self.spectral_norm, groups=self.groups,
        impl=self.conv_impl, upsample=upsample, dtype=self.dtype, name=name)
    if fin != fout:
      shortcut = conv(1, 'conv_s')(x, train=self.train)
    else:
      shortcut = layers.upsample2x(x)
    dx = conv(3, 'conv1')(nn.leaky_relu(x, 0.2), train=self.train)
    dx = conv(3, 'conv2', upsample=False)(nn.leaky_relu(dx, 0.2),
                                          train=self.train)
    return shortcut + dx


class OasisDiscriminator(nn.Module):
  """U-Net: len(channels) down blocks and as many up blocks with skips.

  Attributes:
    num_classes: semantic_nc; the output has num_classes + 1 channels
      (channel 0 = fake, channel k = real pixel of class k - 1).
    channels: encoder widths (official (128, 128, 256, 256, 512, 512)).
    last_channels: width of the last decoder block (official 64).
  """
  num_classes: int
  channels: Sequence[int] = (128, 128, 256, 256, 512, 512)
  last_channels: int = 64
  spectral_norm: bool = True
  remat: bool = False
  conv_impl: str = 'auto'  # layers.conv2d.
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool,
               groups: int = 1) -> jax.Array:
    """Segments an image.

    Args:
      image: [B, H, W, 3] in [-1, 1]; H and W divisible by 2**len(channels).
      train: one spectral-norm power iteration per conv (True) or the stored
        vectors (False).
      groups: the batch holds this many equal chunks that stand for as many
        consecutive official forwards (each its own power iteration); the
        D step runs D(fake), D(real), D(mixed) as one call this way.

    Returns:
      [B, H, W, num_classes + 1] float32 logits.
    """
    n = len(self.channels)
    h, w = image.shape[1:3]
    if h % 2**n or w % 2**n:
      raise ValueError(f'discriminator input {h}x{w} must be divisible by '
                       f'{2**n} (2**len(discriminator.channels)).')
    ch = [3] + list(self.channels)
    down_cls, up_cls = ResBlockDown, ResBlockUp
    if self.remat:
      down_cls, up_cls = nn.remat(down_cls), nn.remat(up_cls)
    x = image if self.dtype is None else image.astype(self.dtype)
    encoded = []
    for i in range(n):
      x = down_cls(ch[i + 1], i == 0, self.spectral_norm, train, groups,
                   self.conv_impl, self.dtype, name=f'body_down_{i}')(x)
      encoded.append(x)
    for i in range(n):
      out = ch[n - 1 - i] if i < n - 1 else self.last_channels
      if i > 0:
        x = jnp.concatenate([encoded[n - 1 - i], x], axis=-1)
      x = up_cls(out, self.spectral_norm, train, groups, self.conv_impl,
                 self.dtype, name=f'body_up_{i}')(x)
    logits = layers.Conv(self.num_classes + 1, 1, impl=self.conv_impl,
                         dtype=self.dtype, name='layer_up_last')(x,
                                                                 train=train)
    return logits.astype(jnp.float32)
