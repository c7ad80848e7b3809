"""The built-in default: the synthetic data set, trained in minutes on a CPU."""

from configs import default as default_lib


def get_config():
  """Synthetic scenes (6 classes, 32x32) and narrow networks for a CPU."""
  config = default_lib.get_config()
  config.data.name = 'synthetic'
  config.data.num_classes = 6  # Don't-care 0 and 5 textured classes.
  config.data.image_size = 32
  config.data.load_size = 32
  config.data.synthetic_num_examples = 2000

  config.generator.channels = 16  # Block widths [16, 8, 4, 2, 1] * 16.
  config.generator.z_dim = 16
  config.generator.num_res_blocks = 4  # Latent 4x4 at 32x32.
  config.generator.spade_hidden = 32
  config.discriminator.channels = (32, 64, 64, 128)  # 2x2 at the bottom.
  config.discriminator.last_channels = 32

  config.optim.lr_g = 4e-4  # The Cityscapes recipe's rates: faster here.
  config.optim.lr_d = 4e-4
  config.loss.lambda_labelmix = 10.0
  config.ema.decay = 0.99  # Short run: an EMA over ~100 steps.
  config.ema.bn_refresh_batches = 10

  config.train.batch_size = 8
  config.train.num_steps = 1000
  config.train.log_every_steps = 25
  config.train.sample_every_steps = 200
  config.train.checkpoint_every_steps = 250
  config.eval.fid_every_steps = -1
  config.eval.batch_size = 8
  return config
