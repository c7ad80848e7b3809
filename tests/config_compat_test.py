"""Tests of the workdir config check: model keys fixed, safe keys free."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized

from configs import tiny
from oasis_jax import config_compat


def _workdir_with_config(test, config):
  workdir = test.create_tempdir().full_path
  with open(os.path.join(workdir, config_compat.CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return workdir


class KindTest(parameterized.TestCase):

  @parameterized.parameters(
      ('generator.channels', config_compat.MODEL),
      ('discriminator.kind', config_compat.MODEL),  # A future key: its section.
      ('data.num_classes', config_compat.MODEL),
      ('train.batch_size', config_compat.MODEL),
      ('ema.use_ema', config_compat.MODEL),
      ('loss.use_vgg', config_compat.SAFE),  # VGG-19 is not in the state.
      ('loss.brand_new_term', config_compat.MODEL),  # Unknown: conservative.
      ('data.lvis_min_area', config_compat.MODEL),  # Unknown: conservative.
      ('brand_new_section.key', config_compat.MODEL),
      ('train.num_steps', config_compat.SAFE),
      ('train.checkpoint_every_steps', config_compat.SAFE),
      ('optim.lr_g', config_compat.SAFE),
      ('data.num_workers', config_compat.SAFE),
      ('data.root', config_compat.SAFE),
      ('eval.fid_every_steps', config_compat.SAFE),
      ('perf.conv_impl', config_compat.SAFE),
  )
  def test_kind_of(self, key, kind):
    self.assertEqual(config_compat.kind_of(key), kind)

  def test_every_key_of_the_default_config_is_classified_explicitly(self):
    """No default key falls through to the unknown-key default."""
    config = tiny.get_config()
    flat = config_compat._flatten(config_compat._as_json_tree(config))
    unclassified = []
    for key in flat:
      parts = key.split('.')
      if not any('.'.join(parts[:n]) in config_compat.KEY_KINDS
                 for n in range(1, len(parts) + 1)):
        unclassified.append(key)
    self.assertEqual(unclassified, [])


class CheckWorkdirTest(parameterized.TestCase):

  def test_model_change_names_the_keys_and_both_values(self):
    workdir = _workdir_with_config(self, tiny.get_config())
    config = tiny.get_config()
    config.generator.channels = 8
    config.data.num_classes = 5
    config.train.num_steps = 100  # Safe: not named.
    with self.assertRaises(config_compat.ConfigMismatchError) as ctx:
      config_compat.check_workdir(config, workdir)
    message = str(ctx.exception)
    self.assertIn('data.num_classes: 4 -> 5', message)
    self.assertIn('generator.channels: 2 -> 8', message)
    self.assertNotIn('num_steps', message)
    self.assertNotIn('\n', message)

  def test_safe_changes_pass_and_are_logged(self):
    workdir = _workdir_with_config(self, tiny.get_config())
    config = tiny.get_config()
    config.train.num_steps = 100
    config.optim.lr_g = 1e-3
    config.data.num_workers = 2
    with self.assertLogs(level='INFO') as logs:
      config_compat.check_workdir(config, workdir)
    self.assertIn('train.num_steps: 4 -> 100', ''.join(logs.output))

  def test_tuples_compare_equal_to_their_json_lists(self):
    config = tiny.get_config()
    workdir = _workdir_with_config(self, config)
    model, safe = config_compat.compare(
        json.load(open(os.path.join(workdir, 'config.json'))), config)
    self.assertEqual((model, safe), ({}, {}))

  def test_key_missing_from_the_old_config_is_a_change(self):
    config = tiny.get_config()
    workdir = _workdir_with_config(self, config)
    with config.unlocked():
      config.generator.extra_layers = 2  # A model key the old run lacks.
    with self.assertRaisesRegex(config_compat.ConfigMismatchError,
                                r"generator.extra_layers: '<absent>' -> 2"):
      config_compat.check_workdir(config, workdir)

  def test_new_workdir_passes(self):
    config_compat.check_workdir(
        tiny.get_config(), os.path.join(self.create_tempdir().full_path, 'x'))

  def test_unreadable_config_json_is_an_error_naming_it(self):
    workdir = self.create_tempdir()
    workdir.create_file('config.json', content='{not json')
    with self.assertRaisesRegex(config_compat.ConfigMismatchError,
                                r'config.json is not a readable config'):
      config_compat.check_workdir(tiny.get_config(), workdir.full_path)

  def test_write_keeps_the_previous_config(self):
    old = tiny.get_config()
    workdir = _workdir_with_config(self, old)
    new = tiny.get_config()
    new.train.num_steps = 100
    config_compat.write_workdir_config(new, workdir)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 100)
    with open(os.path.join(workdir, 'config.previous.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 4)
    self.assertNotIn('config.json.tmp', os.listdir(workdir))


if __name__ == '__main__':
  absltest.main()
