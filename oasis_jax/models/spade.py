"""SPADE and the SPADE residual block of the OASIS generator.

SPADE (Park et al. 2019) normalizes x without learned scale or bias and
modulates it per pixel from the conditioning map seg = [z | one_hot(label)]:

    SPADE(x, seg) = norm(x) * (1 + gamma(seg)) + beta(seg),
    gamma, beta = conv3x3(relu(conv3x3(seg))),

seg read at x's resolution (floor-indexed nearest). The map is passed as its
parts: ``label`` [B, H, W] ids and ``z`` (None, [B, z_dim] or
[B, H, W, z_dim]).
"""

from typing import Optional

import flax.linen as nn
import jax

from oasis_jax.models import layers
from oasis_jax.models import model_config


def resize_condition(label: jax.Array, z: Optional[jax.Array], hw):
  """Nearest (floor) resize of the label ids and of a per-pixel z."""
  label = layers.nearest_resize(label[..., None], hw)[..., 0]
  if z is not None and z.ndim == 4:
    z = layers.nearest_resize(z, hw)
  return label, z


class SPADE(nn.Module):
  """norm(x) * (1 + gamma(seg)) + beta(seg) for x of ``features`` channels.

  The shared conv (``spade_hidden`` channels, ReLU) reads [z | one-hot];
  gamma and beta are 3x3 convs to x's channels. No spectral norm (as
  officially).
  """
  config: model_config.GeneratorConfig
  features: int
  train: bool = True

  def setup(self):
    c = self.config
    z_dim = c.z_dim if c.use_3d_noise else 0
    conv = lambda: c.formulations.conv_layer(
        self.features, 3, formulation=c.formulations.conv, dtype=c.dtype)
    self.norm = layers.ParamFreeNorm(c.norm)
    self.mlp_shared = layers.LabelConv(
        c.spade_hidden, c.num_classes, z_dim,
        formulation=c.formulations.label_conv, dtype=c.dtype)
    self.mlp_gamma = conv()
    self.mlp_beta = conv()

  def __call__(self, x: jax.Array, label: jax.Array,
               z: Optional[jax.Array]) -> jax.Array:
    """x: [B, h, w, features]; label, z at any resolution -> like x."""
    label, z = resize_condition(label, z, x.shape[1:3])
    actv = nn.relu(self.mlp_shared(label, z, train=self.train))
    gamma = self.mlp_gamma(actv, train=self.train)
    beta = self.mlp_beta(actv, train=self.train)
    return self.norm(x, train=self.train) * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
  """The generator's residual block, in_features -> features.

  dx = conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x)))))), fmid = min(fin,
  fout) channels in between; the shortcut is x, or conv_s(SPADE_s(x)) (1x1,
  no bias) when the width changes.
  """
  config: model_config.GeneratorConfig
  in_features: int
  features: int
  train: bool = True

  def setup(self):
    c = self.config
    fin, fout = self.in_features, self.features
    fmid = min(fin, fout)
    spade = lambda f: SPADE(c, f, self.train)
    conv = lambda f, k, bias=True: c.formulations.conv_layer(
        f, k, use_bias=bias, spectral_norm=c.use_spectral_norm,
        formulation=c.formulations.conv, dtype=c.dtype)
    self.norm_0, self.conv_0 = spade(fin), conv(fmid, 3)
    self.norm_1, self.conv_1 = spade(fmid), conv(fout, 3)
    if self.learned_shortcut:
      self.norm_s, self.conv_s = spade(fin), conv(fout, 1, bias=False)

  @property
  def learned_shortcut(self) -> bool:
    return self.in_features != self.features

  def __call__(self, x: jax.Array, label: jax.Array,
               z: Optional[jax.Array]) -> jax.Array:
    """x: [B, h, w, in_features] -> [B, h, w, features]."""
    if self.learned_shortcut:
      shortcut = self.conv_s(self.norm_s(x, label, z), train=self.train)
    else:
      shortcut = x
    dx = self.conv_0(nn.leaky_relu(self.norm_0(x, label, z), 0.2),
                     train=self.train)
    dx = self.conv_1(nn.leaky_relu(self.norm_1(dx, label, z), 0.2),
                     train=self.train)
    return shortcut + dx
