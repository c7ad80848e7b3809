"""The frozen configs the OASIS networks are built from, and the injected
formulations (how convolutions are computed; the reference by default)."""

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

from oasis_jax.models import layers


@dataclasses.dataclass(frozen=True)
class Formulations:
  """How the layers compute the same numbers, injected into the networks
  (the reference by default; kernels/select.py picks faster ones).

  Attributes:
    conv: Conv's formulation, see layers.spectral_conv.
    upsample_conv: the formulation of a Conv that reads its input upsampled
      2x (the discriminator's decoder), see layers.upsample_spectral_conv.
    label_conv: LabelConv's formulation, see layers.dense_label_conv.
    conv_layer: the module type of every Conv (layers.Conv, or a subclass
      with the same parameters and state).
    res_block: the generator's residual-block type; None is
      spade.SPADEResBlock (a subclass with the same parameters may compute
      faster).
  """
  conv: Callable[..., Any] = layers.spectral_conv
  upsample_conv: Callable[..., Any] = layers.upsample_spectral_conv
  label_conv: Callable[..., Any] = layers.dense_label_conv
  conv_layer: Callable[..., Any] = layers.Conv
  res_block: Optional[Callable[..., Any]] = None


REFERENCE = Formulations()


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """The generator (config.generator and config.data, named as there).

  Attributes:
    num_classes: semantic_nc, the one-hot channels (don't-care included).
    channels: width ch (official 64).
    z_dim: channels of the 3D noise.
    num_res_blocks: SPADE residual blocks (official 6).
    spade_hidden: channels of SPADE's shared conv (official 128).
    use_3d_noise: condition on [z | one-hot] (True) or the one-hot alone.
    use_spectral_norm: on the residual blocks' convolutions.
    norm: SPADE's parameter-free norm, 'batch' or 'instance'.
    aspect_ratio: image width / height.
    remat: jax.checkpoint each residual block.
    dtype: the compute dtype (parameters stay as stored).
    formulations: how the layers compute.
  """
  num_classes: int
  channels: int = 64
  z_dim: int = 64
  num_res_blocks: int = 6
  spade_hidden: int = 128
  use_3d_noise: bool = True
  use_spectral_norm: bool = True
  norm: str = 'batch'
  aspect_ratio: float = 1.0
  remat: bool = False
  dtype: Any = jnp.float32
  formulations: Formulations = REFERENCE


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """The discriminator (config.discriminator and config.data).

  Attributes:
    num_classes: semantic_nc; the output has num_classes + 1 channels.
    channels: encoder widths (official (128, 128, 256, 256, 512, 512)).
    last_channels: width of the last decoder block (official 64).
    use_spectral_norm: on every convolution but the last.
    remat: jax.checkpoint each block.
    dtype: the compute dtype.
    formulations: how the layers compute.
  """
  num_classes: int
  channels: tuple[int, ...] = (128, 128, 256, 256, 512, 512)
  last_channels: int = 64
  use_spectral_norm: bool = True
  remat: bool = False
  dtype: Any = jnp.float32
  formulations: Formulations = REFERENCE
