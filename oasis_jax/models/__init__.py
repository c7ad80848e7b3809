"""Flax modules of the OASIS generator and discriminator, built from a config."""

import jax.numpy as jnp

from oasis_jax.models import discriminator as discriminator_lib
from oasis_jax.models import generator as generator_lib
from oasis_jax.models import spade_discriminator as spade_discriminator_lib
from oasis_jax.models import vgg as vgg_lib

_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def compute_dtype(config):
  """The activation dtype of config.perf.compute_dtype (None: float32)."""
  name = config.perf.get('compute_dtype', 'float32')
  if name not in _DTYPES:
    raise ValueError(f'config.perf.compute_dtype must be one of '
                     f'{sorted(_DTYPES)}, got {name!r}.')
  return _DTYPES[name]


def make_generator(config) -> generator_lib.OasisGenerator:
  """The generator that config.generator and config.data describe."""
  g = config.generator
  if g.norm not in ('batch', 'instance'):
    raise ValueError("config.generator.norm must be 'batch' or 'instance', "
                     f'got {g.norm!r}.')
  return generator_lib.OasisGenerator(
      num_classes=config.data.num_classes, channels=g.channels,
      z_dim=g.z_dim, num_res_blocks=g.num_res_blocks,
      spade_hidden=g.spade_hidden, use_3d_noise=g.use_3d_noise,
      spectral_norm=g.use_spectral_norm, norm=g.norm,
      aspect_ratio=config.data.aspect_ratio,
      remat=config.perf.get('remat', False),
      label_conv=config.perf.get('label_conv', 'auto'),
      conv_impl=config.perf.get('conv_impl', 'auto'),
      dtype=compute_dtype(config))


def make_discriminator(config) -> discriminator_lib.OasisDiscriminator:
  """The discriminator that config.discriminator and config.data describe."""
  d = config.discriminator
  if discriminator_kind(config) == 'spade':
    return make_spade_discriminator(config)
  return discriminator_lib.OasisDiscriminator(
      num_classes=config.data.num_classes, channels=tuple(d.channels),
      last_channels=d.last_channels, spectral_norm=d.use_spectral_norm,
      remat=config.perf.get('remat', False),
      conv_impl=config.perf.get('conv_impl', 'auto'),
      dtype=compute_dtype(config))


DISCRIMINATOR_KINDS = ('oasis', 'spade')


def discriminator_kind(config) -> str:
  """config.discriminator.kind, checked against the other settings.

  Raises:
    ValueError: an unknown kind, or an OASIS-D-only loss switched on with the
      SPADE D (one line naming the key).
  """
  kind = config.discriminator.get('kind', 'oasis')
  if kind not in DISCRIMINATOR_KINDS:
    raise ValueError(f'config.discriminator.kind must be one of '
                     f'{DISCRIMINATOR_KINDS}, got {kind!r}.')
  if kind == 'spade':
    for key in ('use_labelmix', 'use_class_balancing'):
      if config.loss.get(key, False):
        raise ValueError(
            f'config.loss.{key}=True needs the OASIS discriminator; with '
            "config.discriminator.kind='spade' (hinge + feature matching) "
            f'set config.loss.{key}=False.')
  return kind


def make_spade_discriminator(
    config) -> spade_discriminator_lib.SpadeDiscriminator:
  """SPADE's multi-scale PatchGAN (the ablation's discriminator)."""
  d = config.discriminator
  return spade_discriminator_lib.SpadeDiscriminator(
      num_classes=config.data.num_classes, num_scales=d.num_scales,
      num_layers=d.num_layers, base_channels=d.base_channels,
      remat=config.perf.get('remat', False), dtype=compute_dtype(config))


def make_vgg(config, vgg_params) -> vgg_lib.VGG19Features:
  """The frozen VGG-19 stack of the VGG loss; widths read off its params."""
  channels = tuple(int(vgg_params[f'conv_{i}_kernel'].shape[-1])
                   for i in vgg_lib.FEATURE_CONVS)
  return vgg_lib.VGG19Features(
      channels=channels, conv_impl=config.perf.get('conv_impl', 'auto'),
      dtype=compute_dtype(config))
