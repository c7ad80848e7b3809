"""COCO-Stuff at 256x256: the official OASIS recipe (docs/recipes.md)."""

from configs import default as default_lib
from data_pipelines import coco_stuff


def get_config():
  """COCO-Stuff (183 class ids: PNG value + 1, 255 -> 0 = unlabeled)."""
  config = default_lib.get_config()
  config.data.name = 'coco_stuff'
  # num_classes 183, dontcare 0, 256x256 crops of 286x286, flips.
  config.data.update(coco_stuff.RECIPE)
  config.train.batch_size = 32  # Global batch.
  config.optim.lr_g = 1e-4
  config.optim.lr_d = 4e-4
  config.loss.lambda_labelmix = 10.0
  config.ema.decay = 0.9999
  # 100 epochs of the 118,287 training images: 369,646 steps.
  config.train.num_steps = 100 * 118287 // 32
  config.eval.fid_every_steps = 5000
  return config
