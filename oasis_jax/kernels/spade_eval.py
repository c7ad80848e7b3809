"""Eval-mode SPADE residual block: fused SPADE, the shortcut conv folded in.

`FusedEvalResBlock` is spade.SPADEResBlock (same parameters and state) with
a faster eval-mode forward (injected as Formulations.res_block), the same
numbers up to float rounding:
- a SPADE on a large float32 map computes gamma and beta as one Winograd
  conv (they share its input transforms) band by band, normalizing and
  modulating each band while it is in the cache; with a gather label conv
  and z per image (or none), the band's shared activations are gathered
  there too, so neither they nor gamma and beta are ever stored;
- where the block narrows (1x1 shortcut conv_s to fewer channels) and the
  batch has enough pixels, beta's conv is folded into conv_s: beta @ W_s
  is one 3x3 conv with kernel W_beta @ W_s (folds_shortcut).
It computes with the block's own submodules (norm_*, conv_*, and each
SPADE's norm, mlp_shared, mlp_gamma, mlp_beta) and their parameters.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from oasis_jax.kernels import conv as conv_lib
from oasis_jax.kernels import label_conv as label_conv_lib
from oasis_jax.kernels import winograd
from oasis_jax.models import spade as spade_lib


def folds_shortcut(x_shape, features: int) -> bool:
  """Whether the block folds beta's conv into its 1x1 shortcut.

  The fold (W_beta @ W_s, 9 * hidden * fin * fout multiply-adds per call)
  saves 9 * hidden * (fin - fout) per pixel: it pays when the shortcut
  narrows and the batch has more than fin * fout / (fin - fout) pixels.
  """
  fin = x_shape[-1]
  pixels = math.prod(x_shape[:-1])
  return features < fin and pixels * (fin - features) > fin * features


class FusedEvalResBlock(spade_lib.SPADEResBlock):
  """SPADEResBlock; in eval mode computed by res_block."""

  def __call__(self, x: jax.Array, label: jax.Array,
               z: Optional[jax.Array]) -> jax.Array:
    if self.train:
      return super().__call__(x, label, z)
    return res_block(self, x, label, z)


def res_block(block: spade_lib.SPADEResBlock, x: jax.Array, label: jax.Array,
              z: Optional[jax.Array]) -> jax.Array:
  """block(x, label, z) in eval mode; block: a bound SPADEResBlock."""
  fin, fout = x.shape[-1], block.features
  if block.learned_shortcut and folds_shortcut(x.shape, fout):
    kernel_s, _, vectors = block.conv_s.weights(fin, train=False)
    kernel_s = kernel_s / conv_lib.sigma(kernel_s, *vectors[0])
    shortcut = spade(block.norm_s, x, label, z, project=kernel_s[0, 0])
  elif block.learned_shortcut:
    shortcut = block.conv_s(spade(block.norm_s, x, label, z), train=False)
  else:
    shortcut = x
  dx = block.conv_0(nn.leaky_relu(spade(block.norm_0, x, label, z), 0.2),
                    train=False)
  dx = block.conv_1(nn.leaky_relu(spade(block.norm_1, dx, label, z), 0.2),
                    train=False)
  return shortcut + dx


def spade(module, x: jax.Array, label: jax.Array, z: Optional[jax.Array],
          project: Optional[jax.Array] = None) -> jax.Array:
  """Eval-mode SPADE(x); with ``project`` [C, F], SPADE(x) @ project.

  module: a bound spade.SPADE. A projection (the block's 1x1 shortcut conv)
  is linear, so beta's conv is folded into it: beta @ project is one 3x3
  conv to F channels with kernel W_beta @ project.
  """
  c = module.config
  dtype = c.dtype
  out_features = x.shape[-1] + (x.shape[-1] if project is None
                                else project.shape[-1])
  fused = winograd.uses_winograd(x.shape[:3] + (c.spade_hidden,),
                                 out_features, dtype)
  if project is None and not fused:
    return module(x, label, z)
  mean, rstd = module.norm.statistics(x, train=False)
  normalize = lambda xx: ((xx.astype(jnp.promote_types(
      xx.dtype, jnp.float32)) - mean) * rstd).astype(xx.dtype)
  label, z = spade_lib.resize_condition(label, z, x.shape[1:3])
  if fused:
    return _winograd_spade(module, x, label, z, normalize, mean.ndim == 1,
                           project)
  actv = nn.relu(module.mlp_shared(label, z, train=False)).astype(dtype)
  gamma, beta = [conv_lib.conv2d(actv, kk.astype(dtype), inference=True)
                 + bias.astype(dtype)
                 for kk, bias in _gamma_beta(module, project)]
  return _modulate(normalize(x), gamma, beta, project, dtype)


def _gamma_beta(module, project):
  """(kernel, bias) of gamma and of beta, beta's folded into project."""
  hidden = module.config.spade_hidden
  kg, bg, _ = module.mlp_gamma.weights(hidden, train=False)
  kb, bb, _ = module.mlp_beta.weights(hidden, train=False)
  if project is not None:
    kb = jnp.einsum('ijcf,fo->ijco', kb, project, precision='highest')
    bb = jnp.matmul(bb, project, precision='highest')
  return (kg, bg), (kb, bb)


def _winograd_spade(module, x, label, z, normalize, per_band, project):
  """SPADE as one Winograd conv of gamma and beta per band of rows.

  Batch norm's per-channel statistics apply to a band (normalized there);
  instance norm's are per image (x normalized first).
  """
  features = x.shape[-1]
  dtype = module.config.dtype
  formulation = module.config.formulations.label_conv
  if (isinstance(formulation, label_conv_lib.GatherLabelConv)
      and (z is None or z.ndim == 2)):
    kernel, bias = module.mlp_shared.weights()
    _, h, w = label.shape
    tables, _ = formulation.tables(kernel, bias, z, h, w, dtype)
    actv = label_conv_lib.label_conv_rows(
        tables.astype(dtype), bias.astype(dtype), label, nn.relu)
  else:
    actv = nn.relu(module.mlp_shared(label, z, train=False)).astype(dtype)
  (kg, bg), (kb, bb) = _gamma_beta(module, project)
  bias = jnp.concatenate([bg, bb]).astype(dtype)

  def modulate(y, xb):
    y = y + bias
    return _modulate(normalize(xb) if per_band else xb, y[..., :features],
                     y[..., features:], project, dtype)

  return winograd.winograd_conv3x3(
      actv, jnp.concatenate([kg, kb], -1).astype(dtype), epilogue=modulate,
      operands=(x if per_band else normalize(x),))


def _modulate(normalized, gamma, beta, project, dtype):
  """normalized * (1 + gamma) + beta, or (normalized * (1 + gamma)) @ project
  + beta with beta already projected (see spade)."""
  out = normalized * (1 + gamma)
  if project is not None:
    out = jnp.matmul(out, project.astype(dtype))  # The 1x1 shortcut conv.
  return out + beta
