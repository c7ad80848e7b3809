"""ADE20K at 256x256: the official OASIS recipe (docs/recipes.md)."""

from configs import default as default_lib
from data_pipelines import ade20k


def get_config():
  """ADE20K (151 class ids, 0 = unlabeled), 20,210 training images."""
  config = default_lib.get_config()
  config.data.name = 'ade20k'
  # num_classes 151, dontcare 0, 256x256 crops of 286x286, flips.
  config.data.update(ade20k.RECIPE)
  config.train.batch_size = 32  # Global batch.
  config.optim.lr_g = 1e-4
  config.optim.lr_d = 4e-4
  config.loss.lambda_labelmix = 10.0
  config.ema.decay = 0.9999
  config.train.num_steps = 200 * 20210 // 32  # 200 epochs: 126,312 steps.
  config.eval.fid_every_steps = 5000
  return config
