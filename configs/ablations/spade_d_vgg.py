"""ADE20K, OASIS generator + SPADE discriminator + VGG loss (ablation cell).

configs/ablations/spade_d.py plus lambda_vgg = 10 x the VGG-19 perceptual
loss; set config.loss.vgg_weights to vgg19-dcbb9e9d.pth (or its .npz).
"""

from configs.ablations import spade_d


def get_config():
  """The SPADE-D cell with the VGG loss."""
  config = spade_d.get_config()
  config.loss.use_vgg = True
  config.loss.lambda_vgg = 10.0  # Official OASIS --lambda_vgg.
  return config
