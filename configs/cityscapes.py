"""Cityscapes at 256x512: the official OASIS recipe (docs/recipes.md)."""

from configs import default as default_lib
from data_pipelines import cityscapes


def get_config():
  """Cityscapes (35 labelIds, 0 = unlabeled), 2,975 training images."""
  config = default_lib.get_config()
  config.data.name = 'cityscapes'
  # num_classes 35, dontcare 0, 256x512 (image_size 512, aspect 2), no crop.
  config.data.update(cityscapes.RECIPE)
  config.train.batch_size = 20  # Global batch.
  config.optim.lr_g = 4e-4
  config.optim.lr_d = 4e-4
  config.loss.lambda_labelmix = 5.0
  config.ema.decay = 0.999
  config.train.num_steps = 200 * 2975 // 20  # 200 epochs: 29,750 steps.
  config.train.checkpoint_every_steps = 2500
  config.eval.fid_every_steps = 2500
  config.eval.batch_size = 20
  return config
