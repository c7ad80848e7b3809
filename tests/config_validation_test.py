"""Tests of the start-up config checks."""

from absl.testing import absltest
from absl.testing import parameterized

from configs import default
from configs import tiny
from oasis_jax.config import validation


class ValidateTest(parameterized.TestCase):

  @parameterized.parameters(default, tiny)
  def test_shipped_configs_are_valid(self, module):
    validation.validate(module.get_config())

  @parameterized.parameters(
      ('train', 'num_steps', -5, 'config.train.num_steps=-5: expected a '
       'positive integer'),
      ('train', 'batch_size', 0, 'config.train.batch_size=0: expected a '
       'positive integer'),
      ('train', 'checkpoint_every_steps', 0,
       'config.train.checkpoint_every_steps=0: expected a positive integer '
       '(steps)'),
      ('train', 'keep_checkpoints', 0, 'config.train.keep_checkpoints=0: '
       'expected a positive integer (or None: keep all)'),
      ('eval', 'batch_size', -1, 'config.eval.batch_size=-1: expected a '
       'positive integer'),
      ('eval', 'best_mode', 'lowest',
       "config.eval.best_mode='lowest': expected 'min' or 'max'"),
      ('data', 'num_workers', -2, 'config.data.num_workers=-2: expected an '
       'integer >= 0, or -1 (one per CPU core but one)'),
      ('data', 'name', 'imagenet', "config.data.name='imagenet': expected one "
       "of ('synthetic', 'ade20k', 'cityscapes', 'coco_stuff', 'folder', "
       "'lvis')"),
      ('data', 'source', 'http', "config.data.source='http': expected one of "
       "('folder', 'tfds')"),
      ('data', 'dontcare_id', -2, 'config.data.dontcare_id=-2: expected a '
       'class id, or -1 (none)'),
      ('eval', 'segmenter', 'pspnet', "config.eval.segmenter='pspnet': "
       "expected '' (none), 'drn_d_105', 'upernet101' or 'deeplabv2_msc'"),
      ('eval', 'segmenter_dtype', 'float16', "config.eval.segmenter_dtype="
       "'float16': expected 'float32' or 'bfloat16'"),
      ('optim', 'lr_g', 0.0, 'config.optim.lr_g=0.0: expected a positive '
       'number'),
  )
  def test_bad_value_is_named_with_what_is_expected(self, section, key,
                                                    value, message):
    config = tiny.get_config()
    with config.unlocked():
      config[section][key] = value
    with self.assertRaises(validation.ConfigError) as ctx:
      validation.validate(config)
    self.assertEqual(str(ctx.exception), message + '.')

  @parameterized.parameters(
      ('data', 'num_workers', -1),  # One worker per CPU core but one.
      ('data', 'num_workers', 0),  # Read in the main process.
      ('data', 'num_workers', 8),
      ('data', 'dontcare_id', -1),  # No don't-care class.
      ('data', 'source', 'tfds'),
      ('data', 'name', 'lvis'),
      ('train', 'keep_checkpoints', None),  # Keep all.
      ('train', 'sample_every_steps', -1),  # At the end only.
      ('eval', 'fid_every_steps', -1),  # No FID.
      ('eval', 'num_fid_images', -1),  # The whole split.
  )
  def test_documented_values_are_valid(self, section, key, value):
    config = tiny.get_config()
    with config.unlocked():
      config[section][key] = value
    self.assertEqual(validation.find_errors(config), [])

  def test_every_error_is_reported_on_one_line(self):
    config = tiny.get_config()
    config.train.num_steps = -5
    config.train.batch_size = 0
    errors = validation.find_errors(config)
    self.assertEqual(errors, [
        'config.train.num_steps=-5: expected a positive integer',
        'config.train.batch_size=0: expected a positive integer'])
    with self.assertRaises(validation.ConfigError) as ctx:
      validation.validate(config)
    self.assertNotIn('\n', str(ctx.exception))

  def test_booleans_are_not_integers(self):
    config = tiny.get_config()
    with config.unlocked():
      config.train.num_steps = True
    self.assertLen(validation.find_errors(config), 1)


if __name__ == '__main__':
  absltest.main()
