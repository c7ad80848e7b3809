"""SPADE's discriminator: a multi-scale PatchGAN on [one-hot label | image].

The paper's ablation trains the OASIS generator against this discriminator
(NVlabs SPADE's `MultiscaleDiscriminator` with `n_layer` sub-discriminators,
spectral norm and instance norm), with hinge losses and feature matching
(oasis_jax/training/losses.py). Scale i sees the input average-pooled i
times (3x3, stride 2, padding 1, the padding not counted); each scale has its
own weights. Every conv is 4x4 with zero padding 2 on each side (not 'same':
a stride-1 conv grows the map by one pixel).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.models import layers

LEAKY_SLOPE = 0.2
KERNEL_SIZE = 4
PADDING = 2
MAX_CHANNELS = 512


def avg_pool3x3_s2_exclude_pad(x: jax.Array) -> jax.Array:
  """3x3 average pool, stride 2, padding 1, padded cells not counted.

  Args:
    x: [B, H, W, C].

  Returns:
    [B, ceil(H / 2), ceil(W / 2), C]; windows at the borders average only
    the in-image cells (4 at a corner, 6 along an edge).
  """
  window, strides = (1, 3, 3, 1), (1, 2, 2, 1)
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  sums = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  counts = jax.lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,),
                                          x.dtype), 0.0, jax.lax.add, window,
                                 strides, padding)
  return sums / counts


def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), ((PADDING, PADDING),) * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class PatchDiscriminator(nn.Module):
  """One scale (SPADE's NLayerDiscriminator), groups ``model0..model<n>``.

  model0: conv -> LeakyReLU(0.2); model1..model<n-1>: spectral-norm conv
  without bias -> instance norm (no affine, eps 1e-5) -> LeakyReLU(0.2);
  model<n>: conv to 1 channel (logits). Widths double from base_channels up
  to 512; strides 2, except model<n-1> and model<n> (1).
  """
  num_layers: int = 4
  base_channels: int = 64
  train: bool = True  # An attribute, not an argument: nn.remat-friendly.
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """The num_layers + 1 outputs, [B, h_j, w_j, C_j] (the last: logits)."""
    n, train = self.num_layers, self.train
    outputs = []
    channels = self.base_channels
    for j in range(n + 1):
      if j == n:
        channels = 1
      elif j > 0:
        channels = min(2 * channels, MAX_CHANNELS)
      stride = 2 if j < n - 1 else 1
      spectral = 0 < j < n
      kernel, bias, vectors = layers.Conv(
          channels, KERNEL_SIZE, use_bias=not spectral,
          spectral_norm=spectral, name=f'model{j}').weights(x.shape[-1],
                                                            train=train)
      if vectors is not None:  # W / sigma, after this call's iteration.
        (u, v), = vectors
        kernel = kernel / layers.sigma(kernel, u, v)
      x = _conv(x, kernel, stride)
      if bias is not None:
        x = x + bias.astype(x.dtype)
      if spectral:
        x = layers.ParamFreeNorm('instance', name=f'norm{j}')(x, train=train)
      if j < n:
        x = nn.leaky_relu(x, LEAKY_SLOPE)
      outputs.append(x)
    return outputs


class SpadeDiscriminator(nn.Module):
  """SPADE's multi-scale discriminator on [one-hot label | image].

  Attributes:
    num_classes: one-hot channels (class 0 is an ordinary channel here).
    num_scales: sub-discriminators (SPADE's num_D, official 2).
    num_layers: SPADE's n_layers_D (official 4).
    base_channels: SPADE's ndf (official 64).
    remat: jax.checkpoint each scale.
    dtype: compute dtype (None: float32); outputs are float32.
  """
  num_classes: int
  num_scales: int = 2
  num_layers: int = 4
  base_channels: int = 64
  remat: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, image: jax.Array, label: jax.Array, *,
               train: bool) -> list[list[jax.Array]]:
    """Every intermediate output and the logits of every scale.

    Args:
      image: [B, H, W, 3] in [-1, 1]; any H, W.
      label: [B, H, W] integer class ids (one-hot encoded here).
      train: one spectral-norm power iteration per conv (stored u, v
        updated) or the stored vectors (eval).

    Returns:
      outputs[i][j]: scale i, group j, [B, h, w, C] float32; j = num_layers
      is the 1-channel logit map.
    """
    if self.num_layers < 1 or self.num_scales < 1:
      raise ValueError('config.discriminator.num_layers and num_scales must '
                       f'be >= 1, got {self.num_layers}, {self.num_scales}.')
    one_hot = jax.nn.one_hot(label, self.num_classes, dtype=jnp.float32)
    x = jnp.concatenate([one_hot, image.astype(jnp.float32)], axis=-1)
    if self.dtype is not None:
      x = x.astype(self.dtype)
    scale_cls = nn.remat(PatchDiscriminator) if self.remat else (
        PatchDiscriminator)
    outputs = []
    for i in range(self.num_scales):
      if i > 0:
        x = avg_pool3x3_s2_exclude_pad(x)
      feats = scale_cls(self.num_layers, self.base_channels, train,
                        self.dtype, name=f'discriminator_{i}')(x)
      outputs.append([f.astype(jnp.float32) for f in feats])
    return outputs
