"""A tiny configuration for tests: trains in seconds on one CPU core."""

from configs import default as default_lib


def get_config():
  """Batches of 4 images of 32x32, 4 synthetic classes, narrow networks."""
  config = default_lib.get_config()
  config.data.name = 'synthetic'
  config.data.num_classes = 4
  config.data.image_size = 32
  config.data.load_size = 32
  config.data.synthetic_num_examples = 16

  # Few blocks: compilation, not computation, is what tests wait for.
  config.generator.channels = 2  # Block widths [8, 4, 2, 1] * 2.
  config.generator.z_dim = 4
  config.generator.num_res_blocks = 3  # Latent 8x8 at 32x32.
  config.generator.spade_hidden = 8
  config.discriminator.channels = (8, 16, 16)  # 4x4 at the U-Net's bottom.
  config.discriminator.last_channels = 8

  config.ema.decay = 0.9
  config.ema.bn_refresh_batches = 2

  config.train.batch_size = 4  # Divides over 1, 2 or 4 devices.
  config.train.num_steps = 4
  config.train.log_every_steps = 2
  config.train.sample_every_steps = 2
  config.train.checkpoint_every_steps = 2
  config.train.keep_checkpoints = 2
  config.train.num_sample_images = 2
  config.eval.fid_every_steps = -1
  config.eval.batch_size = 4
  return config
