"""SPADE normalization and the SPADE residual block of the OASIS generator.

The conditioning map ``seg`` = [z | one_hot(label)] is passed as its parts:
``label`` [B, H, W] ids and ``z`` (None, [B, z_dim] or [B, H, W, z_dim]),
and each SPADE reads it at its own resolution (floor-indexed nearest).
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.models import layers


def resize_condition(label: jax.Array, z: Optional[jax.Array], hw):
  """Nearest (floor) resize of the label ids and of a per-pixel z."""
  label = layers.nearest_resize(label[..., None], hw)[..., 0]
  if z is not None and z.ndim == 4:
    z = layers.nearest_resize(z, hw)
  return label, z


class SPADE(nn.Module):
  """norm(x) * (1 + gamma(seg)) + beta(seg), seg resized nearest to x.

  The shared conv (``hidden`` channels, ReLU) reads [z | one-hot]; gamma and
  beta are 3x3 convs to x's channels. No spectral norm (as officially).
  In eval mode with conv_impl 'cpu' and float32, large maps take a fused
  path (_winograd_eval); same numbers up to float rounding.
  """
  num_classes: int
  z_dim: int = 0
  hidden: int = 128
  norm: str = 'batch'
  train: bool = True
  label_conv: str = 'auto'
  conv_impl: str = 'auto'
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array, z: Optional[jax.Array],
               project: Optional[jax.Array] = None) -> jax.Array:
    """SPADE(x); with ``project`` [C, F] (eval only), SPADE(x) @ project.

    A projection (the residual block's 1x1 shortcut conv) is linear, so
    beta's conv is folded into it: beta @ project is one 3x3 conv to F
    channels with kernel W_beta @ project, not a conv to C channels and a
    1x1 conv. Same numbers up to float rounding.
    """
    mean, rstd = layers.ParamFreeNorm(self.norm, name='norm')(
        x, train=self.train, stats_only=True)
    normalize = lambda xx: ((xx.astype(jnp.float32) - mean) * rstd).astype(
        xx.dtype)
    label, z = resize_condition(label, z, x.shape[1:3])
    shared = layers.LabelConv(
        self.hidden, self.num_classes, self.z_dim, mode=self.label_conv,
        sequential=self.train, dtype=self.dtype, name='mlp_shared')
    features = x.shape[-1]
    conv = lambda name: layers.Conv(features, 3, impl=self.conv_impl,
                                    dtype=self.dtype, name=name)
    dtype = self.dtype or jnp.float32
    out_features = features + (features if project is None
                               else project.shape[-1])
    if not self.train and layers.uses_winograd(
        x.shape[:3] + (self.hidden,), out_features, dtype, self.conv_impl):
      return self._winograd_eval(x, label, z, normalize, mean.ndim == 1,
                                 shared, conv, project)
    actv = nn.relu(shared(label, z))
    if self.train:
      if project is not None:
        raise ValueError('SPADE(project=...) is for eval mode only.')
      gamma = conv('mlp_gamma')(actv, train=True)
      beta = conv('mlp_beta')(actv, train=True)
      return normalize(x) * (1 + gamma) + beta
    actv = actv.astype(dtype)
    gamma, beta = [layers.conv2d(actv, kk.astype(dtype), self.conv_impl,
                                 inference=True) + bias.astype(dtype)
                   for kk, bias in self._eval_kernels(conv, project)]
    return _modulate(normalize(x), gamma, beta, project, dtype)

  def _eval_kernels(self, conv, project):
    """(kernel, bias) of gamma and of beta, beta's folded into project."""
    probe = jnp.zeros((1, 1, 1, self.hidden))  # Conv reads in_features.
    (kg, bg), (kb, bb) = [conv(name)(probe, train=False, params_only=True)
                          for name in ('mlp_gamma', 'mlp_beta')]
    if project is not None:
      kb = jnp.einsum('ijcf,fo->ijco', kb, project, precision='highest')
      bb = jnp.matmul(bb, project, precision='highest')
    return (kg, bg), (kb, bb)

  def _winograd_eval(self, x, label, z, normalize, per_band, shared, conv,
                     project):
    """Eval mode as one Winograd conv of gamma and beta (they share its
    input transforms) per band of rows, normalizing and modulating each
    band while it is in the cache. With a gather LabelConv and z per image
    (or none), the band's shared activations are gathered there too, so
    neither they nor gamma and beta are ever stored (batch norm's
    per-channel statistics apply to a band; instance norm's do not).
    """
    features = x.shape[-1]
    dtype = self.dtype or jnp.float32
    if (layers.resolve_label_conv_mode(self.label_conv) != 'dense'
        and (z is None or z.ndim == 2)):
      tables, bias = shared(label, z, tables_only=True)
      actv = layers.label_conv_rows(tables, bias, label, nn.relu)
    else:
      actv = nn.relu(shared(label, z)).astype(dtype)
    (kg, bg), (kb, bb) = self._eval_kernels(conv, project)
    bias = jnp.concatenate([bg, bb]).astype(dtype)

    def modulate(y, xb):
      y = y + bias
      return _modulate(normalize(xb) if per_band else xb, y[..., :features],
                       y[..., features:], project, dtype)

    return layers.winograd_conv3x3(
        actv, jnp.concatenate([kg, kb], -1).astype(dtype), epilogue=modulate,
        operands=(x if per_band else normalize(x),))


def _modulate(normalized, gamma, beta, project, dtype):
  """normalized * (1 + gamma) + beta, or (normalized * (1 + gamma)) @ project
  + beta with beta already projected (see SPADE)."""
  out = normalized * (1 + gamma)
  if project is not None:
    out = jnp.matmul(out, project.astype(dtype))  # The 1x1 shortcut conv.
  return out + beta


def folds_shortcut(x_shape, features: int) -> bool:
  """Whether an eval-mode block folds beta's conv into its 1x1 shortcut.

  The fold (W_beta @ W_s, 9 * hidden * fin * fout multiply-adds per call)
  saves 9 * hidden * (fin - fout) per pixel: it pays when the shortcut
  narrows and the batch has more than fin * fout / (fin - fout) pixels
  (not for [2, 16, 16, 1024] -> 512, where it cost 1.2 GFLOP to save 0.6).
  """
  fin = x_shape[-1]
  pixels = math.prod(x_shape[:-1])
  return features < fin and pixels * (fin - features) > fin * features


class SPADEResBlock(nn.Module):
  """The generator's residual block, fin -> fout, fmid = min(fin, fout)."""
  features: int
  num_classes: int
  z_dim: int = 0
  hidden: int = 128
  norm: str = 'batch'
  spectral_norm: bool = True
  train: bool = True
  label_conv: str = 'auto'
  conv_impl: str = 'auto'
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array,
               z: Optional[jax.Array]) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    fmid = min(fin, fout)
    spade = lambda name: SPADE(self.num_classes, self.z_dim, self.hidden,
                               self.norm, self.train, self.label_conv,
                               self.conv_impl, self.dtype, name=name)
    conv = lambda f, k, bias, name: layers.Conv(
        f, k, use_bias=bias, spectral_norm=self.spectral_norm,
        impl=self.conv_impl, dtype=self.dtype, name=name)
    if not self.train and folds_shortcut(x.shape, fout):
      # conv_s(SPADE(x)) with beta folded into conv_s (see SPADE).
      kernel_s, _ = conv(fout, 1, False, 'conv_s')(x, train=False,
                                                    params_only=True)
      shortcut = spade('norm_s')(x, label, z, project=kernel_s[0, 0])
    elif fin != fout:
      shortcut = conv(fout, 1, False, 'conv_s')(
          spade('norm_s')(x, label, z), train=self.train)
    else:
      shortcut = x
    dx = conv(fmid, 3, True, 'conv_0')(
        nn.leaky_relu(spade('norm_0')(x, label, z), 0.2), train=self.train)
    dx = conv(fout, 3, True, 'conv_1')(
        nn.leaky_relu(spade('norm_1')(dx, label, z), 0.2), train=self.train)
    return shortcut + dx
