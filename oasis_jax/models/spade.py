"""SPADE normalization and the SPADE residual block of the OASIS generator."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.models import layers


class SPADE(nn.Module):
  """norm(x) * (1 + gamma(seg)) + beta(seg), seg resized nearest to x.

  ``seg`` is the full-resolution conditioning map [B, H, W, S] ([z | one-hot]
  with 3D noise); the shared conv has ``hidden`` channels and a ReLU.
  """
  hidden: int = 128
  norm: str = 'batch'
  train: bool = True
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array, seg: jax.Array) -> jax.Array:
    normalized = layers.ParamFreeNorm(self.norm, name='norm')(
        x, train=self.train)
    s = layers.nearest_resize(seg, x.shape[1:3])
    conv = lambda f, name: layers.Conv(f, 3, dtype=self.dtype, name=name)
    actv = nn.relu(conv(self.hidden, 'mlp_shared')(s, train=self.train))
    gamma = conv(x.shape[-1], 'mlp_gamma')(actv, train=self.train)
    beta = conv(x.shape[-1], 'mlp_beta')(actv, train=self.train)
    return normalized * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
  """The generator's residual block, fin -> fout, fmid = min(fin, fout)."""
  features: int
  hidden: int = 128
  norm: str = 'batch'
  spectral_norm: bool = True
  train: bool = True
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array, seg: jax.Array) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    fmid = min(fin, fout)
    spade = lambda name: SPADE(self.hidden, self.norm, self.train, self.dtype,
                               name=name)
    conv = lambda f, k, bias, name: layers.Conv(
        f, k, use_bias=bias, spectral_norm=self.spectral_norm,
        dtype=self.dtype, name=name)
    if fin != fout:
      shortcut = conv(fout, 1, False, 'conv_s')(
          spade('norm_s')(x, seg), train=self.train)
    else:
      shortcut = x
    dx = conv(fmid, 3, True, 'conv_0')(
        nn.leaky_relu(spade('norm_0')(x, seg), 0.2), train=self.train)
    dx = conv(fout, 3, True, 'conv_1')(
        nn.leaky_relu(spade('norm_1')(dx, seg), 0.2), train=self.train)
    return shortcut + dx
