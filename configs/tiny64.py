"""A tiny 64x64 configuration for the inference, export and notebook tests."""

from configs import default as default_lib


def get_config():
  """6 synthetic classes at 64x64, a generator of width 2 (latent 4x4)."""
  config = default_lib.get_config()
  config.data.name = 'synthetic'
  config.data.num_classes = 6
  config.data.image_size = config.data.load_size = 64
  config.data.synthetic_num_examples = 8
  g = config.generator
  g.channels, g.z_dim, g.num_res_blocks, g.spade_hidden = 2, 4, 5, 8
  config.discriminator.channels = (4, 4, 8, 8, 8)
  config.discriminator.last_channels = 4
  config.ema.bn_refresh_batches = 2
  config.train.batch_size = 2
  return config
