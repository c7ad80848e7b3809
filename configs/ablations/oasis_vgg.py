"""ADE20K, OASIS D + the VGG perceptual loss (the paper's ablation cell).

The paper's table (ADE20K, FID / mIoU): OASIS D 29.3 / 51.6 without VGG
(configs/ade20k.py) and 29.2 / 51.1 with it (this file); SPADE D 60.7 / 21.0
(spade_d.py) and 32.9 / 42.5 (spade_d_vgg.py). Set config.loss.vgg_weights
to torchvision's vgg19-dcbb9e9d.pth (or its .npz, python -m
oasis_jax.pretrained.vgg_weights); the run stops at start-up without it.
"""

from configs import ade20k


def get_config():
  """The default OASIS recipe on ADE20K plus lambda_vgg = 10 * VGG loss."""
  config = ade20k.get_config()
  config.loss.use_vgg = True
  config.loss.lambda_vgg = 10.0  # Official OASIS --lambda_vgg.
  return config
