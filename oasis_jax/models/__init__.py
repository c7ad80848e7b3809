"""Flax modules of the OASIS generator and discriminator (and the ablation's
SPADE discriminator and VGG-19), built from a config.

`generator_config(config, formulations)` / `discriminator_config(...)` turn
the ml_collections config into the frozen dataclasses the modules take. The
formulations (how convolutions are computed) are injected: the reference by
default; `kernels/select.py` picks the faster ones config.perf names.
"""

from oasis_jax.config import resolution
from oasis_jax.models import discriminator as discriminator_lib
from oasis_jax.models import generator as generator_lib
from oasis_jax.models import model_config
from oasis_jax.models import spade_discriminator as spade_discriminator_lib
from oasis_jax.models import vgg as vgg_lib

def generator_config(config, formulations: model_config.Formulations = (
    model_config.REFERENCE)) -> model_config.GeneratorConfig:
  """The GeneratorConfig of config.generator, config.data and config.perf."""
  g = config.generator
  if g.norm not in ('batch', 'instance'):
    raise ValueError("config.generator.norm must be 'batch' or 'instance', "
                     f'got {g.norm!r}.')
  return model_config.GeneratorConfig(
      num_classes=config.data.num_classes, channels=g.channels,
      z_dim=g.z_dim, num_res_blocks=g.num_res_blocks,
      spade_hidden=g.spade_hidden, use_3d_noise=g.use_3d_noise,
      use_spectral_norm=g.use_spectral_norm, norm=g.norm,
      aspect_ratio=config.data.aspect_ratio,
      remat=config.perf.remat, dtype=resolution.compute_dtype(config),
      formulations=formulations)


def discriminator_config(config, formulations: model_config.Formulations = (
    model_config.REFERENCE)) -> model_config.DiscriminatorConfig:
  """The DiscriminatorConfig of config.discriminator, data and perf."""
  d = config.discriminator
  return model_config.DiscriminatorConfig(
      num_classes=config.data.num_classes, channels=tuple(d.channels),
      last_channels=d.last_channels, use_spectral_norm=d.use_spectral_norm,
      remat=config.perf.remat, dtype=resolution.compute_dtype(config),
      formulations=formulations)


def make_generator(config, formulations: model_config.Formulations = (
    model_config.REFERENCE)) -> generator_lib.OasisGenerator:
  """The generator that config.generator and config.data describe."""
  return generator_lib.OasisGenerator(generator_config(config, formulations))


def make_discriminator(config, formulations: model_config.Formulations = (
    model_config.REFERENCE)):
  """The discriminator that config.discriminator and config.data describe:
  the OASIS U-Net, or SPADE's PatchGAN (config.discriminator.kind)."""
  if discriminator_kind(config) == 'spade':
    return make_spade_discriminator(config)
  return discriminator_lib.OasisDiscriminator(
      discriminator_config(config, formulations))


DISCRIMINATOR_KINDS = ('oasis', 'spade')


def discriminator_kind(config) -> str:
  """config.discriminator.kind, checked against the other settings.

  Raises:
    ValueError: an unknown kind, or an OASIS-D-only loss switched on with the
      SPADE D (one line naming the key).
  """
  kind = config.discriminator.kind
  if kind not in DISCRIMINATOR_KINDS:
    raise ValueError(f'config.discriminator.kind must be one of '
                     f'{DISCRIMINATOR_KINDS}, got {kind!r}.')
  if kind == 'spade':
    for key in ('use_labelmix', 'use_class_balancing'):
      if config.loss[key]:
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
      remat=config.perf.remat, dtype=resolution.compute_dtype(config))


def make_vgg(config, vgg_params) -> vgg_lib.VGG19Features:
  """The frozen VGG-19 stack of the VGG loss; widths read off its params."""
  channels = tuple(int(vgg_params[f'conv_{i}_kernel'].shape[-1])
                   for i in vgg_lib.FEATURE_CONVS)
  return vgg_lib.VGG19Features(channels=channels,
                               dtype=resolution.compute_dtype(config))
