"""ADE20K, OASIS generator + SPADE discriminator (the paper's ablation cell).

The generator, its 3D noise, EMA, optimizers and schedule are the OASIS
recipe's; the discriminator is SPADE's multi-scale PatchGAN (2 scales,
n_layers 4, ndf 64, spectral + instance norm) on [one-hot | image], trained
with hinge losses, and the generator gets -mean(D logits) plus 10 x D feature
matching. The N+1 loss, LabelMix and class balancing belong to the OASIS D
and are off. The OASIS D's proxy mIoU is not available (metrics say so).
"""

from configs import ade20k


def get_config():
  """configs/ade20k.py with SPADE's discriminator and objective."""
  config = ade20k.get_config()
  config.discriminator.kind = 'spade'
  config.discriminator.num_scales = 2  # SPADE's num_D.
  config.discriminator.num_layers = 4  # SPADE's n_layers_D.
  config.discriminator.base_channels = 64  # SPADE's ndf.
  config.loss.lambda_feat = 10.0  # SPADE's lambda_feat.
  config.loss.use_labelmix = False  # OASIS D only.
  config.loss.use_class_balancing = False  # OASIS D only.
  return config
