"""Tests of the start-up config checks."""

from absl.testing import absltest
from absl.testing import parameterized

from configs import default
from configs import tiny
from oasis_jax import config_validation


class ValidateTest(parameterized.TestCase):

  @parameterized.parameters(default, tiny)
  def test_shipped_configs_are_valid(self, module):
    config_validation.validate(module.get_config())

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
      ('eval', 'segmenter', 'pspnet', "config.eval.segmenter='pspnet': "
       "expected '' (none), 'drn_d_105', 'upernet101' or 'deeplabv2_msc'"),
      ('eval', 'segmenter_dtype', 'float16', "config.eval.segmenter_dtype="
       "'float16': expected 'float32' or 'bfloat16'"),
      ('data', 'num_workers', -1, 'config.data.num_workers=-1: expected an '
       'integer >= 0'),
      ('optim', 'lr_g', 0.0, 'config.optim.lr_g=0.0: expected a positive '
       'number'),
  )
  def test_bad_value_is_named_with_what_is_expected(self, section, key,
                                                    value, message):
    config = tiny.get_config()
    with config.unlocked():
      config[section][key] = value
    with self.assertRaises(config_validation.ConfigError) as ctx:
      config_validation.validate(config)
    self.assertEqual(str(ctx.exception), message + '.')

  def test_every_error_is_reported_on_one_line(self):
    config = tiny.get_config()
    config.train.num_steps = -5
    config.train.batch_size = 0
    errors = config_validation.find_errors(config)
    self.assertEqual(errors, [
        'config.train.num_steps=-5: expected a positive integer',
        'config.train.batch_size=0: expected a positive integer'])
    with self.assertRaises(config_validation.ConfigError) as ctx:
      config_validation.validate(config)
    self.assertNotIn('\n', str(ctx.exception))

  def test_booleans_are_not_integers(self):
    config = tiny.get_config()
    with config.unlocked():
      config.train.num_steps = True
    self.assertLen(config_validation.find_errors(config), 1)


if __name__ == '__main__':
  absltest.main()
